"""Every table, as SQLAlchemy 2.0 typed models.

Times are stored in UTC. Priorities are stored 1..5 (1 = highest) so that
"priority at least high" is a plain comparison in SQL. Alembic migrations in
`mailgated/migrations/versions` must describe exactly these tables; a test
checks it.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on both SQLite (which has no zones) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware times")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime()}


class State(enum.StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PENDING = "pending"
    CLOSED = "closed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (State.DRAFT, State.OPEN, State.PENDING)

PRIORITIES = {"highest": 1, "high": 2, "normal": 3, "low": 4, "lowest": 5}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # `user rotate-token`: reply tokens carry this generation, older ones stop verifying;
    # mail we sent the user before `tokens_rotated_at` no longer verifies a reply either
    token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tokens_rotated_at: Mapped[dt.datetime | None] = mapped_column()


class PartnerCategory(Base):
    """A node of the partner category tree; `path` is the full "A / B" name."""

    __tablename__ = "partner_categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1000), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("partner_categories.id"))
    parent: Mapped[PartnerCategory | None] = relationship(remote_side=[id])


class PartnerCategoryLink(Base):
    __tablename__ = "partner_category_links"
    partner_id: Mapped[int] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    category_id: Mapped[int] = mapped_column(
        ForeignKey("partner_categories.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Partner(Base):
    __tablename__ = "partners"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    contacts: Mapped[list[Contact]] = relationship(back_populates="partner", order_by="Contact.id")
    categories: Mapped[list[PartnerCategory]] = relationship(
        secondary="partner_category_links", order_by="PartnerCategory.path"
    )


# The sender of every new case is looked up by `lower(partners.email)` (directory.py,
# SENDER_BY_EMAIL): without an index on that very expression each lookup read the whole
# table, and with 20,000 partners processing took twice as long. Made by migration 0009.
PARTNER_EMAIL_INDEX = Index("ix_partners_email_lower", func.lower(Partner.email))


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("partner_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    partner: Mapped[Partner] = relationship(back_populates="contacts")


class Section(Base):
    """A queue of cases; its policies steer the mail gateway for its cases."""

    __tablename__ = "sections"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    code: Mapped[str | None] = mapped_column(String(64), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("sections.id"), index=True)
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # mail gateway policies (see the conversation issue)
    close_on_staff_reply: Mapped[bool] = mapped_column(Boolean, default=True)
    reopen_on_partner_reply: Mapped[bool] = mapped_column(Boolean, default=True)
    send_acknowledgement: Mapped[bool] = mapped_column(Boolean, default=True)
    cc_become_watchers: Mapped[bool] = mapped_column(Boolean, default=True)
    accept_automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    parent: Mapped[Section | None] = relationship(remote_side=[id])
    manager: Mapped[User | None] = relationship()


class Category(Base):
    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("section_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    section_id: Mapped[int] = mapped_column(ForeignKey("sections.id"))
    name: Mapped[str] = mapped_column(String(200))
    probability: Mapped[float | None] = mapped_column(Float)
    section: Mapped[Section] = relationship()


# `report users` groups by month of creation; on SQLite this covering index on that
# very expression (report_sql.month_of) lets it read the groups in order, without
# touching the table or sorting: ~1 s instead of several for a million cases.
# PostgreSQL reads the table in parallel and hashes the groups, so it gets none.
# Made by migration 0002.
REPORT_MONTH_INDEX = Index(
    "ix_cases_report_month",
    text("substr(created_at, 1, 7)"),
    "user_id",
    "section_id",
    "category_id",
    "state",
    "closed_at",
    "planned_revenue",
    "planned_cost",
    "probability",
    "created_at",  # for --from/--to, and so SQLite (3.40) sees the index as covering
).ddl_if(dialect="sqlite")


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_state_section", "state", "section_id"),
        Index("ix_cases_state_user", "state", "user_id"),
        Index("ix_cases_state_created", "state", "created_at"),
        Index("ix_cases_state_last_action", "state", "last_action_at"),
        Index("ix_cases_state_deadline", "state", "deadline"),
        Index("ix_cases_state_date", "state", "date"),
        Index("ix_cases_created_user_section", "created_at", "user_id", "section_id"),
        REPORT_MONTH_INDEX,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(1000))
    description: Mapped[str] = mapped_column(Text, default="")
    section_id: Mapped[int] = mapped_column(ForeignKey("sections.id"))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    priority: Mapped[int] = mapped_column(Integer, default=3)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    email_from: Mapped[str | None] = mapped_column(String(320), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16), default=State.DRAFT.value)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column()
    deadline: Mapped[dt.datetime | None] = mapped_column()
    date: Mapped[dt.datetime | None] = mapped_column()
    duration: Mapped[float | None] = mapped_column(Float)  # hours, as in the seed
    planned_revenue: Mapped[float | None] = mapped_column(Float)
    planned_cost: Mapped[float | None] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)
    last_action_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_action_at: Mapped[dt.datetime | None] = mapped_column()
    message_count: Mapped[int] = mapped_column(Integer, default=0)

    section: Mapped[Section] = relationship()
    category: Mapped[Category | None] = relationship()
    partner: Mapped[Partner | None] = relationship()
    contact: Mapped[Contact | None] = relationship()
    user: Mapped[User | None] = relationship()
    watchers: Mapped[list[Watcher]] = relationship(
        order_by="Watcher.id", cascade="all, delete-orphan"
    )
    history: Mapped[list[History]] = relationship(order_by="History.id", viewonly=True)


class Watcher(Base):
    __tablename__ = "watchers"
    __table_args__ = (UniqueConstraint("case_id", "email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320), index=True)


class History(Base):
    """One entry of a case's record: a message in or out, a note, a change."""

    __tablename__ = "history"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    author: Mapped[str] = mapped_column(String(320), default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text, default="")
    email_from: Mapped[str | None] = mapped_column(String(1000))
    email_to: Mapped[str | None] = mapped_column(Text)
    email_cc: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(1000))
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"))
    attachments: Mapped[list[Attachment]] = relationship(order_by="Attachment.id", viewonly=True)


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    history_id: Mapped[int | None] = mapped_column(
        ForeignKey("history.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255), default="application/octet-stream")
    size: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class StoredMessage(Base):
    """A raw inbound message, kept once processed (audit, re-processing, dedupe)."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("message_id", "content_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(200), default="")
    envelope_from: Mapped[str | None] = mapped_column(String(998))
    envelope_to: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(String(998))
    subject: Mapped[str | None] = mapped_column(String(1000))
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(200), default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class Outbox(Base):
    """A message to send: queued in the same transaction as the case change."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
        Index("ix_outbox_auto_to", "automatic", "to_addr", "queued_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    kind: Mapped[str] = mapped_column(String(32), default="")
    from_addr: Mapped[str] = mapped_column(String(320))
    to_addr: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    # recipient -> final answer (the relay's 250, a 5xx, why we would not send), once known
    results: Mapped[dict[str, str] | None] = mapped_column(JSON)
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    subject: Mapped[str] = mapped_column(String(1000), default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # the daemon whose sender holds the claim (leases.instance_name): released at its next start
    claimed_by: Mapped[str | None] = mapped_column(String(400))
    sent_at: Mapped[dt.datetime | None] = mapped_column()


class SendMark(Base):
    """One recipient of one mail we queued: the loop breaker's sliding windows count these.

    `cause` is the address whose incoming mail made us send it ("" for mail
    no message caused: rules, the command line). Rows older than the longest
    window are pruned as new ones are written.
    """

    __tablename__ = "send_marks"
    __table_args__ = (
        Index("ix_send_marks_address_at", "address", "at"),
        Index("ix_send_marks_cause_at", "cause", "at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    address: Mapped[str] = mapped_column(String(320))
    case_id: Mapped[int | None] = mapped_column(Integer)
    cause: Mapped[str] = mapped_column(String(320), default="")


class AddressMark(Base):
    """An address that bounced: automatic mail to it stops."""

    __tablename__ = "address_marks"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    bounced_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    bounces: Mapped[int] = mapped_column(Integer, default=1)
    reason: Mapped[str] = mapped_column(Text, default="")


class Rule(Base):
    """An automation rule; `when`/`then` hold the validated TOML tables."""

    __tablename__ = "rules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    sequence: Mapped[int] = mapped_column(Integer, default=10)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    stop: Mapped[bool] = mapped_column(Boolean, default=False)
    trigger: Mapped[str | None] = mapped_column(String(32))
    delay: Mapped[str | None] = mapped_column(String(32))
    when: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    then: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # the last timer sweep's time: the next sweep looks only at what fell due since
    swept_at: Mapped[dt.datetime | None] = mapped_column()


class RuleFiring(Base):
    """The firing log: its unique key makes each (rule, case, due time) fire once."""

    __tablename__ = "rule_firings"
    __table_args__ = (UniqueConstraint("rule_id", "case_id", "due_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    due_at: Mapped[dt.datetime] = mapped_column()
    fired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """Who does a job that only one instance may do at a time (polling one mailbox):
    held until `expires_at`, renewed by its holder, taken over once it has expired."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(400), primary_key=True)
    holder: Mapped[str] = mapped_column(String(400))
    acquired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    # the holder's progress (IMAP's last UID, POP3's UIDLs), handed to the one taking over
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Instance(Base):
    """A daemon as its heartbeat last wrote it (`mailgated status`; mailgated/monitor.py)."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:start time
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column()
    # listeners and mailboxes' last poll / last error (Monitor.snapshot)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
