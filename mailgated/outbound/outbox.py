"""The outbox: mail we send, queued in the caller's transaction, delivered later with retries.

Queueing in the same transaction as the case change means a committed change
always has its mail, and a rolled-back one never does. The sender
(`outbound/sender.py`) claims due messages (FOR UPDATE SKIP LOCKED on
PostgreSQL, so several daemons share one queue), leases them for a while so a
crashed sender's messages come back, and records the outcome.

Automatic mail (acknowledgements, notices, rule mail) is never sent to an
address that bounced, and at most `auto_reply_limit` automatic answers go to
one address per `auto_reply_window` seconds; automatic mail to staff
(reminders, notices) is no answer and neither counts nor is limited there.
Over those, *every* mail passes the loop breaker (`breaker.py`): sliding
windows per address and case, per address, and per causing sender; a mail over
a window is held (state `held`, a `held` history entry, a WARNING), never
silently dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from mailgated.cases import Actor, CaseService
from mailgated.config import OutboundConfig
from mailgated.errors import Invalid, NotFound
from mailgated.models import AddressMark, Case, Outbox, utcnow
from mailgated.outbound.breaker import Windows

log = logging.getLogger("mailgated.outbound")

SILENT = "mailgated.outbox.silent"  # session.info key: while set (to the reason), nothing is queued
LEASE = dt.timedelta(minutes=5)
MAX_RETRY = 3600.0


@dataclass(frozen=True)
class Delivery:
    """One claimed message, detached from the session that claimed it."""

    id: int
    from_addr: str
    recipients: list[str]
    raw: bytes
    message_id: str


def bare(address: str) -> str:
    return address.strip().strip("<>").lower()


def suppressed(
    session: Session,
    address: str,
    config: OutboundConfig,
    now: dt.datetime,
    to_staff: bool = False,
) -> str | None:
    """Why automatic mail to `address` must not go now, or None."""
    if session.scalar(select(AddressMark.id).where(AddressMark.email == address)):
        return "address bounced"
    if to_staff:
        return None
    since = now - dt.timedelta(seconds=config.auto_reply_window)
    recent = session.scalar(
        select(func.count())
        .select_from(Outbox)
        .where(
            Outbox.automatic.is_(True),
            Outbox.recipient_user_id.is_(None),
            Outbox.to_addr == address,
            Outbox.queued_at >= since,
        )
    )
    if (recent or 0) >= config.auto_reply_limit:
        return f"{recent} automatic mails in the last {config.auto_reply_window} s"
    return None


def enqueue(
    session: Session,
    message: EmailMessage,
    config: OutboundConfig,
    *,
    case: Case | None = None,
    kind: str = "",
    automatic: bool = False,
    recipient_user_id: int | None = None,
    recipients: list[str] | None = None,
    now: dt.datetime | None = None,
    cause: str = "",
) -> Outbox | None:
    """Queue `message` for delivery; None when every recipient is suppressed (logged).

    Recipients over a loop-breaker window are held (`hold`); the row returned is the
    queued one, or the held one when every recipient was held."""
    now = now or utcnow()
    if session.info.get(SILENT):
        log.info("not sending %s mail: %s", kind or "the", session.info[SILENT])
        return None
    if recipients is None:
        fields = message.get_all("To", []) + message.get_all("Cc", [])
        recipients = [addr for _, addr in getaddresses([str(v) for v in fields]) if addr]
    wanted = list(dict.fromkeys(bare(r) for r in recipients if "@" in r))
    if automatic:
        kept = []
        for address in wanted:
            reason = suppressed(session, address, config, now, recipient_user_id is not None)
            if reason:
                log.info("not sending %s mail to %s: %s", kind or "automatic", address, reason)
            else:
                kept.append(address)
        wanted = kept
    if not wanted:
        return None
    if not message["Message-ID"]:
        message["Message-ID"] = make_msgid(domain=_domain(message))
    case_id = case.id if case is not None else None
    windows = Windows.load(session, config, now, wanted, [cause])
    wanted, held = _admit(windows, wanted, case_id, cause)
    windows.save(session)
    item = Outgoing(message, wanted, case_id, kind, recipient_user_id, cause=cause)
    if not wanted:
        return hold(session, item, held, now, automatic=automatic, split=False)
    from_addr = _envelope_from(message)
    row = Outbox(
        case_id=case.id if case is not None else None,
        message_id=str(message["Message-ID"]).strip(),
        kind=kind,
        from_addr=from_addr,
        to_addr=wanted[0],
        recipients=wanted,
        recipient_user_id=recipient_user_id,
        subject=str(message.get("Subject", ""))[:1000],
        raw=message.as_bytes(),
        automatic=automatic,
        state="queued",
        attempts=0,
        queued_at=now,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    hold(session, item, held, now, automatic=automatic, split=True)
    return row


@dataclass(frozen=True)
class Outgoing:
    """One message for `enqueue_many`."""

    message: EmailMessage
    recipients: list[str]
    case_id: int | None = None
    kind: str = ""
    recipient_user_id: int | None = None
    raw: bytes | None = None  # the serialised message, when the caller already made it
    cause: str = ""  # the sender whose incoming mail made us send this ("" = none)


def enqueue_many(
    session: Session,
    items: list[Outgoing],
    config: OutboundConfig,
    *,
    automatic: bool,
    now: dt.datetime | None = None,
) -> list[Outgoing]:
    """Queue many messages at once (the rules sweep); the same suppression as `enqueue`.

    Two queries decide suppression for the whole batch (bounced addresses,
    recent automatic mail per address) and one executemany inserts the rows,
    instead of three statements per message. Returns the items queued.
    """
    now = now or utcnow()
    if session.info.get(SILENT):
        log.info("not sending %d mail(s): %s", len(items), session.info[SILENT])
        return []
    wanted = [list(dict.fromkeys(bare(r) for r in it.recipients if "@" in r)) for it in items]
    blocked: set[str] = set()
    recent: dict[str, int] = {}
    everyone = sorted({a for addresses in wanted for a in addresses})
    if automatic:
        blocked, recent = _suppression(session, everyone, config, now)
    windows = Windows.load(session, config, now, everyone, [it.cause for it in items])
    rows, queued = [], []
    for item, addresses in zip(items, wanted, strict=True):
        to_staff = item.recipient_user_id is not None  # reminders, notices: no auto-replies
        kept = []
        for address in addresses:
            if automatic and (
                address in blocked
                or (not to_staff and recent.get(address, 0) >= config.auto_reply_limit)
            ):
                log.info("not sending %s mail to %s: bounced or rate-limited", item.kind, address)
                continue
            if not to_staff:
                recent[address] = recent.get(address, 0) + 1
            kept.append(address)
        message = item.message
        if kept and not message["Message-ID"]:
            message["Message-ID"] = make_msgid(domain=_domain(message))
        kept, held = _admit(windows, kept, item.case_id, item.cause)
        if not kept:
            hold(session, item, held, now, automatic=automatic, split=False)
            continue
        rows.append(
            {
                "case_id": item.case_id,
                "message_id": str(message["Message-ID"]).strip(),
                "kind": item.kind,
                "from_addr": _envelope_from(message),
                "to_addr": kept[0],
                "recipients": kept,
                "recipient_user_id": item.recipient_user_id,
                "subject": str(message.get("Subject", ""))[:1000],
                "raw": item.raw if item.raw is not None else message.as_bytes(),
                "automatic": automatic,
                "state": "queued",
                "attempts": 0,
                "queued_at": now,
                "next_attempt_at": now,
            }
        )
        queued.append(item)
        hold(session, item, held, now, automatic=automatic, split=True)
    if rows:
        session.execute(insert(Outbox), rows)
    windows.save(session)
    return queued


def _admit(
    windows: Windows, addresses: list[str], case_id: int | None, cause: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """The addresses the loop breaker lets through now, and those held with the reason."""
    kept: list[str] = []
    held: list[tuple[str, str]] = []
    for address in addresses:
        reason = windows.full(address, case_id, cause)
        if reason:
            held.append((address, reason))
        else:
            windows.count(address, case_id, cause)
            kept.append(address)
    return kept, held


def hold(
    session: Session,
    item: Outgoing,
    held: list[tuple[str, str]],
    now: dt.datetime,
    *,
    automatic: bool,
    split: bool,
) -> Outbox | None:
    """Keep a mail for the `held` addresses in the outbox, unsent, and say so on the case.

    When other recipients of the same mail were queued (`split`), the held copy gets
    its own Message-ID (the outbox keeps one row per Message-ID)."""
    if not held:
        return None
    message = item.message
    raw = item.raw
    if split or not message["Message-ID"]:
        del message["Message-ID"]
        message["Message-ID"] = make_msgid(domain=_domain(message))
        raw = None
    addresses = [a for a, _ in held]
    reason = held[0][1]
    row = Outbox(
        case_id=item.case_id,
        message_id=str(message["Message-ID"]).strip(),
        kind=item.kind,
        from_addr=_envelope_from(message),
        to_addr=addresses[0],
        recipients=addresses,
        recipient_user_id=item.recipient_user_id,
        subject=str(message.get("Subject", ""))[:1000],
        raw=raw if raw is not None else message.as_bytes(),
        automatic=automatic,
        state="held",
        attempts=0,
        last_error=f"held by the loop breaker: {reason}",
        queued_at=now,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    what = f"{item.kind or 'mail'} to {', '.join(addresses)} held (outbox {row.id}): {reason}"
    log.warning(
        "case %s: %s; `mailgated outbox retry %d` sends it",
        item.case_id if item.case_id is not None else "-",
        what,
        row.id,
    )
    if item.case_id is not None:
        service = CaseService(session, Actor(label="loop breaker"), now=lambda: now)
        service.bulk_history([(item.case_id, "held", what)])
    return row


def _suppression(
    session: Session, addresses: list[str], config: OutboundConfig, now: dt.datetime
) -> tuple[set[str], dict[str, int]]:
    """Bounced addresses and recent automatic-mail counts for a batch (chunked IN lists)."""
    blocked: set[str] = set()
    recent: dict[str, int] = {}
    since = now - dt.timedelta(seconds=config.auto_reply_window)
    for start in range(0, len(addresses), 900):
        chunk = addresses[start : start + 900]
        blocked.update(
            session.scalars(select(AddressMark.email).where(AddressMark.email.in_(chunk)))
        )
        counts = session.execute(
            select(Outbox.to_addr, func.count())
            .where(
                Outbox.automatic.is_(True),
                Outbox.recipient_user_id.is_(None),
                Outbox.to_addr.in_(chunk),
                Outbox.queued_at >= since,
            )
            .group_by(Outbox.to_addr)
        )
        recent.update({addr: n for addr, n in counts})
    return blocked, recent


def _envelope_from(message: EmailMessage) -> str:
    pairs = getaddresses([str(message.get("Sender") or message.get("From") or "")])
    return pairs[0][1] if pairs and pairs[0][1] else ""


def _domain(message: EmailMessage) -> str:
    address = _envelope_from(message)
    return address.rpartition("@")[2] or "mailgated.invalid"


def claim(session: Session, now: dt.datetime, limit: int = 20) -> list[Delivery]:
    """Take due messages for sending and lease them, so no other sender takes them meanwhile."""
    query = (
        select(Outbox)
        .where(Outbox.state == "queued", Outbox.next_attempt_at <= now)
        .order_by(Outbox.next_attempt_at, Outbox.id)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    taken = []
    for row in session.scalars(query):
        row.next_attempt_at = now + LEASE
        taken.append(Delivery(row.id, row.from_addr, list(row.recipients), row.raw, row.message_id))
    return taken


def mark_sent(session: Session, delivery_id: int, now: dt.datetime) -> None:
    row = session.get(Outbox, delivery_id)
    if row is None:
        return
    row.state = "sent"
    row.sent_at = now
    row.attempts += 1
    row.last_error = None


def mark_failed(
    session: Session,
    delivery_id: int,
    error: str,
    now: dt.datetime,
    config: OutboundConfig,
    permanent: bool = False,
) -> str:
    """Record a failed attempt; retry later with exponential backoff, or give up. Returns state."""
    row = session.get(Outbox, delivery_id)
    if row is None:
        return "gone"
    row.attempts += 1
    row.last_error = error[:2000]
    age = (now - row.queued_at).total_seconds()
    if permanent or age >= config.max_age:
        row.state = "failed"
    else:
        delay = min(config.first_retry * 2 ** (row.attempts - 1), MAX_RETRY)
        row.next_attempt_at = now + dt.timedelta(seconds=delay)
    return row.state


def retry(session: Session, outbox_id: int, now: dt.datetime | None = None) -> Outbox:
    """Put a failed (or waiting) message back at the head of the queue."""
    row = session.get(Outbox, outbox_id)
    if row is None:
        raise NotFound(f"no outbox message with ID {outbox_id}")
    if row.state == "sent":
        raise Invalid(f"outbox message {outbox_id} was already sent at {row.sent_at}")
    row.state = "queued"
    row.next_attempt_at = now or utcnow()
    row.queued_at = now or utcnow()  # a fresh max_age window
    return row


def listing(session: Session, failed_only: bool = False, limit: int = 500) -> list[Outbox]:
    query = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
    if failed_only:
        query = query.where(Outbox.state == "failed")
    return list(reversed(list(session.scalars(query))))
