"""The outbox: mail we send, queued in the caller's transaction, delivered later with retries.

Queueing in the same transaction as the case change means a committed change
always has its mail, and a rolled-back one never does. The sender
(`outbound/sender.py`) claims due messages and records what the relay said
through `outbound/delivery.py`; here are the operator's views (`listing`,
`counts`) and `retry`.

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
import functools
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from mailgated.cases import Actor, CaseService
from mailgated.config import OutboundConfig
from mailgated.db import chunks
from mailgated.errors import Invalid, NotFound
from mailgated.models import AddressMark, Outbox, utcnow
from mailgated.outbound.breaker import Windows, serialise
from mailgated.outbound.compose import flatten

log = logging.getLogger("mailgated.outbound")

SILENT = "mailgated.outbox.silent"  # session.info key: while set (to the reason), nothing is queued


def bare(address: str) -> str:
    return address.strip().strip("<>").lower()


@dataclass(frozen=True)
class Outgoing:
    """One message for `enqueue`, with the addresses it goes to (the SMTP envelope)."""

    message: EmailMessage
    recipients: list[str]
    case_id: int | None = None
    kind: str = ""
    recipient_user_id: int | None = None
    raw: bytes | None = None  # the serialised message, when the caller already made it
    cause: str = ""  # the sender whose incoming mail made us send this ("" = none)


def enqueue(
    session: Session,
    items: list[Outgoing],
    config: OutboundConfig,
    *,
    automatic: bool | list[bool],
    now: dt.datetime | None = None,
) -> list[Outgoing]:
    """Queue messages in the caller's transaction; returns the items queued.

    The one way into the outbox (processing, rules, `case reply`). Automatic
    mail skips suppressed recipients (`suppression`), every mail passes the loop
    breaker (held, not dropped), and a message left with no recipient is not
    queued (logged). `automatic` says it of all the items, or of each (processing
    queues a batch's mail of both kinds at once). Two queries decide suppression
    for the whole batch, a few the loop breaker's windows, and one executemany
    inserts the rows.
    """
    now = now or utcnow()
    if session.info.get(SILENT):
        log.info("not sending %d mail(s): %s", len(items), session.info[SILENT])
        return []
    flags = [automatic] * len(items) if isinstance(automatic, bool) else automatic
    wanted = [list(dict.fromkeys(bare(r) for r in it.recipients if "@" in r)) for it in items]
    blocked: set[str] = set()
    recent: dict[str, int] = {}
    everyone = sorted({a for addresses in wanted for a in addresses})
    serialise(session, everyone, [it.cause for it in items])  # before anything is counted
    answered = zip(wanted, flags, strict=True)
    answering = sorted({a for addresses, auto in answered if auto for a in addresses})
    if answering:
        blocked, recent = suppression(session, answering, config, now)
    windows = Windows.load(
        session, config, now, everyone, [it.cause for it in items], [it.case_id for it in items]
    )
    rows, queued = [], []
    for item, addresses, auto in zip(items, wanted, flags, strict=True):
        to_staff = item.recipient_user_id is not None  # reminders, notices: no auto-replies
        kept = []
        for address in addresses:
            if auto and (
                address in blocked
                or (not to_staff and recent.get(address, 0) >= config.auto_reply_limit)
            ):
                log.info("not sending %s mail to %s: bounced or rate-limited", item.kind, address)
                continue
            if auto and not to_staff:
                recent[address] = recent.get(address, 0) + 1
            kept.append(address)
        message = item.message
        if kept and not message["Message-ID"]:
            message["Message-ID"] = make_msgid(domain=_domain(message))
        kept, held = _admit(windows, kept, item.case_id, item.cause)
        if not kept:
            hold(session, item, held, now, automatic=auto, split=False)
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
                "raw": item.raw if item.raw is not None else flatten(message),
                "automatic": auto,
                "state": "queued",
                "attempts": 0,
                "queued_at": now,
                "next_attempt_at": now,
            }
        )
        queued.append(item)
        hold(session, item, held, now, automatic=auto, split=True)
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
        raw=raw if raw is not None else flatten(message),
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


# suppression's two statements, built once (IN lists as expanding parameters)
_MARKED = select(AddressMark.email).where(
    AddressMark.email.in_(bindparam("addresses", expanding=True))
)
_ANSWERED = (
    select(Outbox.to_addr, func.count())
    .where(
        Outbox.automatic.is_(True),
        Outbox.recipient_user_id.is_(None),
        Outbox.to_addr.in_(bindparam("addresses", expanding=True)),
        Outbox.queued_at >= bindparam("since"),
    )
    .group_by(Outbox.to_addr)
)


def suppression(
    session: Session, addresses: list[str], config: OutboundConfig, now: dt.datetime
) -> tuple[set[str], dict[str, int]]:
    """Why automatic mail to `addresses` must not go now: the bounced ones, and how many
    automatic answers each was sent in the last `auto_reply_window` (chunked IN lists)."""
    blocked: set[str] = set()
    recent: dict[str, int] = {}
    since = now - dt.timedelta(seconds=config.auto_reply_window)
    for chunk in chunks(addresses):
        blocked.update(session.scalars(_MARKED, {"addresses": chunk}))
        counts = session.execute(_ANSWERED, {"addresses": chunk, "since": since})
        recent.update({addr: n for addr, n in counts})
    return blocked, recent


def _envelope_from(message: EmailMessage) -> str:
    return _address_in(str(message.get("Sender") or message.get("From") or ""))


@functools.lru_cache(maxsize=256)
def _address_in(value: str) -> str:
    """The first address in a From or Sender we wrote: a section's, in a few forms (one per
    person whose mail we pass on "via" it), so read once each (1 % of processing)."""
    pairs = getaddresses([value])
    return pairs[0][1] if pairs and pairs[0][1] else ""


def _domain(message: EmailMessage) -> str:
    address = _envelope_from(message)
    return address.rpartition("@")[2] or "mailgated.invalid"


def retry(session: Session, outbox_id: int, now: dt.datetime | None = None) -> Outbox:
    """Put one failed, held (or waiting) message back at the head of the queue."""
    return retry_many(session, [outbox_id], now)[0]


def retry_many(
    session: Session, outbox_ids: list[int], now: dt.datetime | None = None
) -> list[Outbox]:
    """Put failed, held (or waiting) messages back at the head of the queue, for every
    recipient that did not get them (a refusal is tried again: the operator asked).
    All or none: an unknown or already sent ID changes nothing."""
    rows = []
    for outbox_id in outbox_ids:
        row = session.get(Outbox, outbox_id)
        if row is None:
            raise NotFound(f"no outbox message with ID {outbox_id}")
        if row.state == "sent" and not _refused(row):
            raise Invalid(f"outbox message {outbox_id} was already sent at {row.sent_at}")
        rows.append(row)
    for row in rows:
        row.results = {r: v for r, v in (row.results or {}).items() if v.startswith("2")} or None
        row.state = "queued"
        row.next_attempt_at = now or utcnow()
        row.queued_at = now or utcnow()  # a fresh max_age window
    return rows


def _refused(row: Outbox) -> bool:
    return any(not v.startswith("2") for v in (row.results or {}).values())


def failed_ids(session: Session) -> list[int]:
    return list(
        session.scalars(select(Outbox.id).where(Outbox.state == "failed").order_by(Outbox.id))
    )


STATES = ("queued", "held", "sent", "failed")


def listing(
    session: Session, states: tuple[str, ...] = (), limit: int | None = 500
) -> list[Outbox]:
    """The newest `limit` messages (all with None) in `states` (all with none), oldest first."""
    query = select(Outbox).order_by(Outbox.id.desc())
    if states:
        query = query.where(Outbox.state.in_(states))
    if limit is not None:
        query = query.limit(limit)
    return list(reversed(list(session.scalars(query))))


@dataclass(frozen=True)
class Counts:
    """The outbox at a glance (`outbox list`, the status command)."""

    queued: int
    sent: int
    failed: int
    held: int  # by the loop breaker, until `outbox retry`
    oldest_queued_age: float | None  # seconds since the oldest waiting message was queued


def counts(session: Session, now: dt.datetime | None = None) -> Counts:
    """How many messages wait, went and failed, and how long the oldest has waited."""
    by_state = dict(
        session.execute(select(Outbox.state, func.count()).group_by(Outbox.state)).tuples().all()
    )
    oldest = session.scalar(select(func.min(Outbox.queued_at)).where(Outbox.state == "queued"))
    age = None
    if oldest is not None:
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)
        age = max(0.0, ((now or utcnow()) - oldest).total_seconds())
    return Counts(
        by_state.get("queued", 0),
        by_state.get("sent", 0),
        by_state.get("failed", 0),
        by_state.get("held", 0),
        age,
    )
