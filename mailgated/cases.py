"""The case lifecycle: the only code that changes a case.

Every change goes through CaseService, writes a history entry with author and
time, bumps the case's update and last-action times, and is announced as a
CaseEvent to the service's event sink (the transaction's rules cascade, given
by whoever opened the transaction) inside the same transaction; a service
without a sink announces to no one.
The allowed state moves are data (TRANSITIONS), so an illegal one is refused
with a line that says what the case's state is.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Insert, func, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from mailgated.db import STREAM_BLOB, chunks, write_blob
from mailgated.errors import IllegalTransition, Invalid, NotFound
from mailgated.models import (
    PRIORITIES,
    PRIORITY_NAMES,
    Attachment,
    Case,
    Category,
    Contact,
    History,
    Partner,
    Rule,
    Section,
    State,
    User,
    Watcher,
    utcnow,
)

if TYPE_CHECKING:
    from mailgated.message.parse import Part


@dataclass(frozen=True)
class Actor:
    """Who makes a change; becomes the history entry's author."""

    label: str
    user_id: int | None = None
    kind: str = "system"  # user | system | rule | mail
    rule_id: int | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(label="system")

    @classmethod
    def for_user(cls, user: User) -> Actor:
        return cls(label=user.login, user_id=user.id, kind="user")

    @classmethod
    def rule(cls, rule: Rule) -> Actor:
        return cls(label=f"rule:{rule.name}", kind="rule", rule_id=rule.id)

    @classmethod
    def mail(cls, address: str, user: User | None = None) -> Actor:
        return cls(label=address, user_id=user.id if user else None, kind="mail")


@dataclass(frozen=True)
class CaseEvent:
    """What happened to a case; the rules engine reacts to these."""

    case_id: int
    kind: str  # create | state | escalate | message | change
    state_from: str | None
    state_to: str | None
    actor: Actor
    depth: int


class EventSink(Protocol):
    """Receives the case events of one transaction (the rules cascade)."""

    def announce(self, event: CaseEvent, service: CaseService) -> None: ...


# button -> (states it may be pressed in, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[State, ...], State]] = {
    "open": ((State.DRAFT, State.PENDING, State.CLOSED), State.OPEN),
    "pending": ((State.DRAFT, State.OPEN), State.PENDING),
    "close": ((State.DRAFT, State.OPEN, State.PENDING), State.CLOSED),
    "cancel": ((State.DRAFT, State.OPEN, State.PENDING), State.CANCELLED),
    "reset": ((State.OPEN, State.PENDING, State.CLOSED, State.CANCELLED), State.DRAFT),
}

CASE_INSERT = insert(Case).returning(Case.id)
HISTORY_INSERT = insert(History).returning(History.id)
# many entries in one statement on PostgreSQL (insertmanyvalues), their ids in the rows' order
HISTORY_INSERT_MANY = insert(History).returning(History.id, sort_by_parameter_order=True)
HISTORY_INSERT_PLAIN = insert(History)
HISTORY_TOP_ID = select(func.max(History.id))
HISTORY_FIELDS = ("email_from", "email_to", "email_cc", "subject", "message_id")
PENDING_KEY = "mailgated.pending_history"  # Session.info: the transaction's PendingHistory
MONEY_FIELDS = {"revenue": "planned_revenue", "cost": "planned_cost"}
# The case's plan: when, how long, what it is worth (set with `case set`, shown by `case show`).
PLAN_FIELDS = ("deadline", "date", "duration", "planned_revenue", "planned_cost", "probability")


def parse_priority(value: str | int) -> int:
    if isinstance(value, int) and value in PRIORITY_NAMES:
        return value
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return PRIORITIES[value.strip().lower()]
    names = ", ".join(PRIORITIES)
    raise Invalid(f"unknown priority {value!r}: use one of {names}")


class PendingHistory:
    """History entries made but not yet written, in one transaction that defers them (mail
    processing): written together, in the order they were made, with one executemany —
    one statement on PostgreSQL instead of an INSERT … RETURNING per entry. Rows of other
    tables may wait with them (`add_row`: processing's raw messages), written after them.

    Whoever defers must write them before anything in the transaction reads history
    (`write_pending` for a reader; `PendingHistory.names`/`about` say whether the
    entries can matter to it), before a savepoint it opened is released, and before
    the commit; what a rolled-back savepoint made is `discard`ed. A CaseService writes
    them itself before its own bulk inserts (order stays History.id order) and when an
    entry's id is needed (`entry_id`).
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.entries: list[History] = []
        # rows of other tables that wait with them (the batch's raw messages), no id needed
        self.others: list[tuple[Insert, dict[str, Any]]] = []

    @classmethod
    def start(cls, session: Session) -> PendingHistory:
        """Defer the history entries made on `session` from now on."""
        pending = cls()
        session.info[PENDING_KEY] = pending
        return pending

    @staticmethod
    def of(session: Session) -> PendingHistory | None:
        found = session.info.get(PENDING_KEY)
        return found if isinstance(found, PendingHistory) else None

    def add(self, values: dict[str, Any]) -> History:
        row = dict.fromkeys(HISTORY_FIELDS) | values
        entry = History(**row)  # its id comes with `write`
        self.rows.append(row)
        self.entries.append(entry)
        return entry

    def add_row(self, statement: Insert, row: dict[str, Any]) -> None:
        """A row of another table to write with the entries (after them)."""
        self.others.append((statement, row))

    def names(self, message_ids: Iterable[str]) -> bool:
        """Whether a pending entry (or other row) records one of these Message-IDs."""
        wanted = set(message_ids)
        return any(row["message_id"] in wanted for row in self.rows) or any(
            row.get("message_id") in wanted for _, row in self.others
        )

    def about(self, case_id: int) -> bool:
        """Whether a pending entry belongs to this case."""
        return any(row["case_id"] == case_id for row in self.rows)

    def write(self, session: Session) -> None:
        """Insert the pending entries, in order, and give each its id; then the other rows."""
        if not (self.rows or self.others):
            return
        rows, entries, others = self.rows, self.entries, self.others
        self.discard()
        connection = session.connection()
        done = 0
        sqlite = connection.dialect.name == "sqlite"
        for _, group in itertools.groupby(rows, key=_columns):
            batch = list(group)
            if sqlite:
                ids = _sqlite_insert(connection, batch)
            else:
                ids = list(connection.execute(HISTORY_INSERT_MANY, batch).scalars())
            for entry, entry_id in zip(entries[done : done + len(batch)], ids, strict=True):
                entry.id = entry_id
            done += len(batch)
        for (statement, _), same in itertools.groupby(others, key=_statement_and_columns):
            connection.execute(statement, [row for _, row in same])

    def discard(self) -> None:
        """Forget what is pending (its savepoint or transaction rolled back)."""
        self.rows, self.entries, self.others = [], [], []


def _sqlite_insert(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert history rows with one executemany on SQLite; their ids, in the rows' order.

    SQLAlchemy cannot return ids in the rows' order from one SQLite statement (no
    sentinel there), so INSERT … RETURNING went one statement per entry. Instead: a row
    inserted without an id gets one more than the largest id in the table (SQLite's
    documented rule for a rowid table without AUTOINCREMENT, which `history` is), and
    our transactions hold the write lock from BEGIN IMMEDIATE, so the rows of one
    executemany get the ids after the largest, in order. Checked: the largest id
    afterwards must be that many more.
    """
    top = connection.execute(HISTORY_TOP_ID).scalar() or 0
    connection.execute(HISTORY_INSERT_PLAIN, rows)
    last = connection.execute(HISTORY_TOP_ID).scalar() or 0
    if last != top + len(rows):
        raise RuntimeError(f"history ids {top + 1}..{last} for {len(rows)} new entries")
    return list(range(top + 1, last + 1))


def _columns(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(row)  # rows with other columns than the previous ones: another statement


def _statement_and_columns(
    item: tuple[Insert, dict[str, Any]],
) -> tuple[Insert, tuple[str, ...]]:
    return item[0], tuple(item[1])


def write_pending(session: Session) -> None:
    """Write the session's deferred history entries, if any (before reading history)."""
    pending = PendingHistory.of(session)
    if pending is not None:
        pending.write(session)


def entry_id(session: Session, entry: History) -> int:
    """The entry's id, writing the deferred entries first if it has none yet."""
    if entry.id is None:
        write_pending(session)
    assert entry.id is not None
    return entry.id


class CaseService:
    def __init__(
        self,
        session: Session,
        actor: Actor,
        now: Callable[[], dt.datetime] = utcnow,
        depth: int = 0,
        events: EventSink | None = None,
    ) -> None:
        self.session = session
        self.actor = actor
        self.now = now
        self.depth = depth
        self.events = events  # the transaction's rules cascade; None: no one listens
        self._bumped: set[int] = set()  # cases whose times bulk_history set to _bumped_at
        self._bumped_at: dt.datetime | None = None

    # reading ---------------------------------------------------------------
    def get(self, case_id: int) -> Case:
        case = self.session.get(Case, case_id)
        if case is None:
            raise NotFound(f"no case with ID {case_id}")
        return case

    # creating ----------------------------------------------------------------
    def create(
        self,
        section: Section,
        subject: str,
        description: str = "",
        *,
        category: Category | None = None,
        priority: str | int = "normal",
        partner: Partner | None = None,
        contact: Contact | None = None,
        email: str | None = None,
        user: User | None = None,
        deadline: dt.datetime | None = None,
        date: dt.datetime | None = None,
        duration: float | None = None,
        revenue: float | None = None,
        cost: float | None = None,
        probability: float | None = None,
        watchers: Iterable[str] = (),
    ) -> Case:
        """A new case in `draft`; the category's probability and the contact's e-mail fill gaps."""
        subject = " ".join(subject.split())
        if not subject:
            raise Invalid("a case needs a subject")
        self._check_category(section, category)
        contact, partner = self._check_contact(contact, partner)
        if any(o is not None and o.id is None for o in (section, category, partner, contact, user)):
            self.session.flush()  # a related row made in this transaction gets its key
        now = self.now()
        values: dict[str, Any] = {
            "subject": subject[:1000],
            "description": description,
            "section_id": section.id,
            "category_id": category.id if category else None,
            "priority": parse_priority(priority),
            "partner_id": partner.id if partner else None,
            "contact_id": contact.id if contact else None,
            "email_from": (email or (contact.email if contact else None) or None),
            "user_id": user.id if user else None,
            "state": State.DRAFT.value,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "last_action_at": now,
            "next_action_at": None,
            "deadline": deadline,
            "date": date,
            "duration": _non_negative("duration", duration),
            "planned_revenue": revenue,
            "planned_cost": cost,
            "probability": _probability(
                probability
                if probability is not None
                else (category.probability if category else None)
            ),
            "message_count": 0,
        }
        # a Core INSERT … RETURNING, then the row joins the session as loaded (every column
        # given, the many-to-ones set): mail processing creates a case per new request, and
        # the unit of work's flush costs several times the statement itself
        case_id = self.session.connection().execute(CASE_INSERT, values).scalar_one()
        case = Case(
            id=case_id,
            section=section,
            category=category,
            partner=partner,
            contact=contact,
            user=user,
            **values,
        )
        set_committed_value(case, "watchers", [])  # a new row has none: no query to learn so
        make_transient_to_detached(case)
        self.session.add(case)
        for address in watchers:
            self._add_watcher(case, address)
        self._history(case, "state", f"created in section {section.name} (draft)")
        self._emit(case, "create", None, State.DRAFT.value)
        return case

    # state -----------------------------------------------------------------
    def open(self, case: Case) -> Case:
        """Open the case; the acting user takes it when nobody has it (as in the seed)."""
        if case.user_id is None and self.actor.user_id is not None:
            self.assign(case, self.session.get(User, self.actor.user_id))
        return self._move(case, "open")

    def pending(self, case: Case) -> Case:
        return self._move(case, "pending")

    def close(self, case: Case) -> Case:
        return self._move(case, "close")

    def cancel(self, case: Case) -> Case:
        return self._move(case, "cancel")

    def close_after_staff_reply(self, case: Case) -> bool:
        """A staff answer sent to the partner closes the case when its section says so
        (`close_on_staff_reply`), by mail or `case reply` alike; True if it closed."""
        closable = case.state in (State.DRAFT, State.OPEN, State.PENDING)
        if not (case.section.close_on_staff_reply and closable):
            return False
        self.close(case)
        return True

    def reset(self, case: Case) -> Case:
        return self._move(case, "reset")

    def _move(self, case: Case, button: str) -> Case:
        allowed, target = TRANSITIONS[button]
        before = case.state
        if before not in allowed:
            raise IllegalTransition(
                f"cannot {button} case {case.id}: it is {before}"
                + (f" (allowed from {', '.join(allowed)})" if before != target else "")
            )
        now = self.now()
        case.state = target.value
        # the one place that sets (and clears) the close time
        case.closed_at = now if target is State.CLOSED else None
        self._history(case, "state", f"{before} → {target.value}")
        self._emit(case, "state", before, target.value)
        return case

    def escalate(self, case: Case) -> Case:
        """Move to the parent section, handing the case to its manager (or to nobody)."""
        if case.state not in (State.DRAFT, State.OPEN, State.PENDING):
            raise IllegalTransition(f"cannot escalate case {case.id}: it is {case.state}")
        parent = case.section.parent
        if parent is None:
            raise IllegalTransition(
                f"cannot escalate case {case.id}: section '{case.section.name}' has no parent"
            )
        before_section = case.section.name
        case.section = parent
        case.user = parent.manager
        if case.category is not None and case.category.section_id != parent.id:
            case.category = None
        who = parent.manager.login if parent.manager else "nobody"
        self._history(
            case, "section", f"escalated from {before_section} to {parent.name}; responsible: {who}"
        )
        self._emit(case, "escalate", case.state, "escalate")
        return case

    # fields ----------------------------------------------------------------
    def assign(self, case: Case, user: User | None) -> Case:
        if user is not None and not user.active:
            raise Invalid(
                f"user '{user.login}' is disabled: assign the case to someone else"
                f" (or `mailgated user enable {user.login}`)"
            )
        before = case.user.login if case.user else "nobody"
        case.user = user
        self._history(case, "user", f"responsible: {before} → {user.login if user else 'nobody'}")
        self._emit(case, "change", case.state, case.state)
        return case

    def move(self, case: Case, section: Section) -> Case:
        if section.id == case.section_id:
            return case
        before = case.section.name
        case.section = section
        if case.category is not None and case.category.section_id != section.id:
            case.category = None
        self._history(case, "section", f"section: {before} → {section.name}")
        self._emit(case, "change", case.state, case.state)
        return case

    def set_priority(self, case: Case, priority: str | int) -> Case:
        value = parse_priority(priority)
        if value == case.priority:
            return case
        before = PRIORITY_NAMES[case.priority]
        case.priority = value
        self._history(case, "priority", f"priority: {before} → {PRIORITY_NAMES[value]}")
        self._emit(case, "change", case.state, case.state)
        return case

    def set_fields(self, case: Case, **changes: Any) -> Case:
        """Change plain fields (category, partner, contact, email, dates, money, probability)."""
        lines: list[str] = []
        if "priority" in changes:
            self.set_priority(case, changes.pop("priority"))
        if "partner" in changes or "contact" in changes:
            contact, partner = self._check_contact(
                changes.pop("contact", case.contact), changes.pop("partner", case.partner)
            )
            if partner is not case.partner:
                lines.append(f"partner: {_show(case.partner)} → {_show(partner)}")
                case.partner = partner
            if contact is not case.contact:
                lines.append(f"contact: {_show(case.contact)} → {_show(contact)}")
                case.contact = contact
                if contact is not None and contact.email and "email" not in changes:
                    changes["email"] = contact.email
        if "category" in changes:
            category = changes.pop("category")
            self._check_category(case.section, category)
            if category is not case.category:
                lines.append(f"category: {_show(case.category)} → {_show(category)}")
                case.category = category
        for key, value in changes.items():
            attr = {"email": "email_from", **MONEY_FIELDS}.get(key, key)
            if attr not in {"email_from", *PLAN_FIELDS, "description", "subject"}:
                raise Invalid(f"case field '{key}' cannot be set")
            if attr == "probability":
                value = _probability(value)
            if attr == "duration":
                value = _non_negative("duration", value)
            if getattr(case, attr) != value:
                lines.append(f"{key}: {_show(getattr(case, attr))} → {_show(value)}")
                setattr(case, attr, value)
        if lines:
            self._history(case, "change", "; ".join(lines))
            self._emit(case, "change", case.state, case.state)
        return case

    def watch(self, case: Case, address: str) -> Case:
        if self._add_watcher(case, address):
            self._history(case, "change", f"watcher added: {address.strip().lower()}")
            self._emit(case, "change", case.state, case.state)
        return case

    def unwatch(self, case: Case, address: str) -> Case:
        address = address.strip().lower()
        for watcher in list(case.watchers):
            if watcher.email == address:
                case.watchers.remove(watcher)
                self._history(case, "change", f"watcher removed: {address}")
                self._emit(case, "change", case.state, case.state)
                return case
        raise NotFound(f"{address} is not a watcher of case {case.id}")

    def _add_watcher(self, case: Case, address: str) -> bool:
        address = address.strip().lower()
        if "@" not in address:
            raise Invalid(f"'{address}' is not an e-mail address")
        if any(w.email == address for w in case.watchers):
            return False
        case.watchers.append(Watcher(email=address))  # written with the next flush
        return True

    # history -----------------------------------------------------------------
    def note(self, case: Case, body: str) -> History:
        """The seed's "Historize": an internal note."""
        if not body.strip():
            raise Invalid("a note needs some text")
        entry = self._history(case, "note", body)
        return entry

    def historize(self, case: Case, kind: str, body: str, **fields: Any) -> History:
        """A free history line (a rule firing, an automatic mail, an unverified sender…)."""
        return self._history(case, kind, body, **fields)

    def record_message(
        self,
        case: Case,
        *,
        direction: str,
        body: str,
        email_from: str | None = None,
        email_to: str | None = None,
        email_cc: str | None = None,
        subject: str | None = None,
        message_id: str | None = None,
        kind: str | None = None,
    ) -> History:
        """A mail in or out of the case: historized, counted, and announced to the rules."""
        entry = self._history(
            case,
            kind or ("email_in" if direction == "in" else "email_out"),
            body,
            email_from=email_from,
            email_to=email_to,
            email_cc=email_cc,
            subject=subject,
            message_id=message_id,
        )
        case.message_count = (case.message_count or 0) + 1
        self._emit(case, "message", case.state, case.state)
        return entry

    # batches -------------------------------------------------------------------
    # The same changes for many cases at once (the rules sweep fires ~1000 at a
    # time): one statement per step instead of an ORM flush per case, with the
    # same history entries and events as the one-case methods above.
    def bulk_history(self, entries: list[tuple[int, str, str]]) -> None:
        """History rows (case id, kind, body) in one executemany; the cases' times bumped."""
        if not entries:
            return
        write_pending(self.session)  # entries made before these come first (History.id order)
        now = self.now()
        actor = self.actor
        rows = [
            {
                "case_id": case_id,
                "at": now,
                "kind": kind,
                "author": actor.label,
                "user_id": actor.user_id,
                "rule_id": actor.rule_id,
                "body": body,
            }
            for case_id, kind, body in entries
        ]
        self.session.execute(HISTORY_INSERT_PLAIN, rows)
        if now != self._bumped_at:
            self._bumped, self._bumped_at = set(), now
        # a batch's later steps (a rule's fired line, then its actions) bump each case once
        ids = sorted({e[0] for e in entries} - self._bumped)
        self._bumped.update(ids)
        for chunk in chunks(ids):
            self.session.execute(
                update(Case).where(Case.id.in_(chunk)).values(updated_at=now, last_action_at=now),
                execution_options={"synchronize_session": False},
            )
        self._expire({e[0] for e in entries})

    def bulk_transition(self, case_ids: list[int], button: str) -> list[int]:
        """Press `button` on every case where the lifecycle allows it; returns those moved."""
        allowed, target = TRANSITIONS[button]
        before = self._column_values(case_ids, Case.state)
        moved = [cid for cid in case_ids if before.get(cid) in allowed]
        closed_at = self.now() if target is State.CLOSED else None
        for chunk in chunks(moved):
            self.session.execute(
                update(Case)
                .where(Case.id.in_(chunk))
                .values(state=target.value, closed_at=closed_at),
                execution_options={"synchronize_session": False},
            )
        self.bulk_history([(cid, "state", f"{before[cid]} → {target.value}") for cid in moved])
        for cid in moved:
            self._announce(cid, "state", before[cid], target.value)
        return moved

    def bulk_set_priority(self, case_ids: list[int], priority: str | int) -> list[int]:
        value = parse_priority(priority)
        before = self._column_values(case_ids, Case.priority)
        changed = [cid for cid in case_ids if cid in before and before[cid] != value]
        self._bulk_update(changed, priority=value)
        name = PRIORITY_NAMES[value]
        self.bulk_history(
            [(c, "priority", f"priority: {PRIORITY_NAMES[before[c]]} → {name}") for c in changed]
        )
        self._announce_changes(changed)
        return changed

    def bulk_assign(self, case_ids: list[int], user: User) -> list[int]:
        rows = self.session.execute(
            select(Case.id, Case.user_id, User.login)
            .outerjoin(User, User.id == Case.user_id)
            .where(Case.id.in_(case_ids))
        ).all()
        changed = [(cid, login) for cid, uid, login in rows if uid != user.id]
        self._bulk_update([c for c, _ in changed], user_id=user.id)
        self.bulk_history(
            [(c, "user", f"responsible: {was or 'nobody'} → {user.login}") for c, was in changed]
        )
        self._announce_changes([c for c, _ in changed])
        return [c for c, _ in changed]

    def bulk_move(self, case_ids: list[int], section: Section) -> list[int]:
        rows = self.session.execute(
            select(Case.id, Case.section_id, Section.name, Category.section_id)
            .join(Section, Section.id == Case.section_id)
            .outerjoin(Category, Category.id == Case.category_id)
            .where(Case.id.in_(case_ids))
        ).all()
        changed = [row for row in rows if row[1] != section.id]
        self._bulk_update([r[0] for r in changed], section_id=section.id)
        stray = [r[0] for r in changed if r[3] is not None and r[3] != section.id]
        self._bulk_update(stray, category_id=None)  # a category belongs to one section
        self.bulk_history([(r[0], "section", f"section: {r[2]} → {section.name}") for r in changed])
        self._announce_changes([r[0] for r in changed])
        return [r[0] for r in changed]

    def bulk_watch(self, case_ids: list[int], addresses: list[str]) -> list[int]:
        """Add watchers to many cases; returns the cases that got at least one new one."""
        wanted = list(dict.fromkeys(a.strip().lower() for a in addresses))
        have: set[tuple[int, str]] = set()
        for chunk in chunks(case_ids):
            have.update(
                self.session.execute(
                    select(Watcher.case_id, Watcher.email).where(
                        Watcher.case_id.in_(chunk), Watcher.email.in_(wanted)
                    )
                ).tuples()
            )
        new = [(cid, a) for cid in case_ids for a in wanted if (cid, a) not in have]
        if new:
            self.session.execute(insert(Watcher), [{"case_id": c, "email": a} for c, a in new])
        added: dict[int, list[str]] = {}
        for cid, address in new:
            added.setdefault(cid, []).append(address)
        self.bulk_history(
            [(c, "change", f"watcher added: {', '.join(a)}") for c, a in added.items()]
        )
        self._announce_changes(list(added))
        return list(added)

    def _column_values(self, case_ids: list[int], column: Any) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for chunk in chunks(case_ids):
            rows = self.session.execute(select(Case.id, column).where(Case.id.in_(chunk)))
            found.update((cid, value) for cid, value in rows)
        return found

    def _bulk_update(self, case_ids: list[int], **values: Any) -> None:
        for chunk in chunks(case_ids):
            self.session.execute(
                update(Case).where(Case.id.in_(chunk)).values(**values),
                execution_options={"synchronize_session": False},
            )

    def _announce_changes(self, case_ids: list[int]) -> None:
        states = self._column_values(case_ids, Case.state)
        for cid in case_ids:
            self._announce(cid, "change", states.get(cid), states.get(cid))

    def _expire(self, case_ids: set[int]) -> None:
        """Loaded Case objects went stale under a bulk UPDATE: reload them on next use."""
        for obj in list(self.session.identity_map.values()):
            if isinstance(obj, Case) and obj.id in case_ids:
                self.session.expire(obj)

    # internals ---------------------------------------------------------------
    def _history(self, case: Case, kind: str, body: str, **fields: Any) -> History:
        now = self.now()
        case.updated_at = now
        case.last_action_at = now
        values = {
            "case_id": case.id,
            "at": now,
            "kind": kind,
            "author": self.actor.label,
            "user_id": self.actor.user_id,
            "rule_id": self.actor.rule_id,
            "body": body,
            **fields,
        }
        pending = PendingHistory.of(self.session)
        if pending is not None:  # mail processing: written with the others (PendingHistory)
            return pending.add(values)
        # a Core INSERT … RETURNING on the session's connection, not an ORM flush: mail
        # processing writes two or three entries per message, and the unit of work (and
        # the ORM's bulk-insert path) cost several times the statement itself
        entry_id = self.session.connection().execute(HISTORY_INSERT, values).scalar_one()
        return History(id=entry_id, **values)  # a detached record of what was written

    def _emit(self, case: Case, kind: str, before: str | None, after: str | None) -> None:
        self._announce(case.id, kind, before, after)

    def _announce(self, case_id: int, kind: str, before: str | None, after: str | None) -> None:
        if self.events is not None:
            self.events.announce(
                CaseEvent(case_id, kind, before, after, self.actor, self.depth), self
            )

    def _check_category(self, section: Section, category: Category | None) -> None:
        if category is not None and category.section_id != section.id:
            raise Invalid(
                f"category '{category.name}' belongs to section '{category.section.name}',"
                f" not '{section.name}'"
            )

    def _check_contact(
        self, contact: Contact | None, partner: Partner | None
    ) -> tuple[Contact | None, Partner | None]:
        if contact is not None:
            if partner is not None and contact.partner_id != partner.id:
                raise Invalid(f"contact '{contact.name}' is not a contact of '{partner.name}'")
            partner = contact.partner
        return contact, partner


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if hasattr(value, "name"):
        return str(value.name)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _probability(value: float | None) -> float | None:
    if value is not None and not 0 <= value <= 100:
        raise Invalid(f"probability must be between 0 and 100, not {value}")
    return value


def _non_negative(name: str, value: float | None) -> float | None:
    if value is not None and value < 0:
        raise Invalid(f"{name} cannot be negative ({value})")
    return value


def store_attachments(session: Session, case_id: int, entry: History, parts: list[Part]) -> None:
    """The files of a mail, kept with its history entry (one INSERT for all of them; on
    SQLite a large file is written in place, which spares two copies of it)."""
    if not parts:
        return
    history_id = entry_id(session, entry)  # a deferred entry is written first
    connection = session.connection()
    in_place = connection.dialect.name == "sqlite"
    rows = []
    for part in parts:
        row = {
            "case_id": case_id,
            "history_id": history_id,
            "filename": part.filename,
            "content_type": part.content_type[:255],
            "size": part.size,
            "data": part.data,
            "truncated": part.truncated,
        }
        if in_place and part.data is not None and len(part.data) >= STREAM_BLOB:
            del row["data"]
            added = connection.execute(
                insert(Attachment).values(data=func.zeroblob(len(part.data))), row
            )
            key = added.inserted_primary_key
            assert key is not None
            write_blob(connection, "attachments", "data", key[0], part.data)
        else:
            rows.append(row)
    if rows:
        connection.execute(insert(Attachment), rows)
