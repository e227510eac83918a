"""The sender's side of the outbox: claim due mail in batches, record what the relay said.

`claim` takes due messages and leases them (`LEASE`) in one query and one
UPDATE, FOR UPDATE SKIP LOCKED on PostgreSQL so several daemons share one
queue; a sender that dies leaves them to come back when the lease runs out.
`record` writes a batch of outcomes in the caller's transaction: one UPDATE
marks every message delivered in full, the rest keep per-recipient `results`
(the relay's 250, a 5xx, or why we would not send), are retried with
exponential backoff for the recipients still waiting, and fail after
`max_age`. `release` gives claimed, unsent messages back at once (a stop).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import BindParameter, bindparam, func, select, update
from sqlalchemy.orm import Session

from mailgated.config import OutboundConfig
from mailgated.models import Outbox

LEASE = dt.timedelta(minutes=5)
MAX_RETRY = 3600.0

# The sender's statements of every pass, built once and run as Core statements (the
# ORM's bulk UPDATE looks for objects to synchronise, and there are none).
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_DUE = (
    select(
        Outbox.id,
        Outbox.case_id,
        Outbox.from_addr,
        Outbox.recipients,
        Outbox.results,
        Outbox.raw,
        Outbox.message_id,
    )
    .where(Outbox.state == "queued", Outbox.next_attempt_at <= bindparam("now"))
    .order_by(Outbox.next_attempt_at, Outbox.id)
    .limit(bindparam("limit"))
)
_DUE_LOCKED = _DUE.with_for_update(skip_locked=True)  # PostgreSQL: senders side by side
_LEASE = (
    update(Outbox)
    .where(Outbox.id.in_(_IDS))
    .values(next_attempt_at=bindparam("until"), claimed_by=bindparam("owner"))
)
_SENT = (
    update(Outbox)
    .where(Outbox.id.in_(_IDS))
    .values(state="sent", sent_at=bindparam("now"), attempts=Outbox.attempts + 1, last_error=None)
)


@dataclass(frozen=True)
class Delivery:
    """One claimed message, detached from the session that claimed it."""

    id: int
    from_addr: str
    recipients: list[str]  # those still waiting for it
    raw: bytes
    message_id: str
    case_id: int | None = None


def claim(
    session: Session,
    now: dt.datetime,
    limit: int = 100,
    lease: dt.timedelta = LEASE,
    owner: str | None = None,
) -> list[Delivery]:
    """Take due messages for sending and lease them, so no other sender takes them meanwhile
    (`[outbound] claim_lease`: if this sender dies, the others send them once it ran out).

    One query and one UPDATE for the whole batch; each Delivery carries only the
    recipients still waiting (those with no final answer in `results`).
    """
    connection = session.connection()  # Core: these rows are never ORM objects here
    query = _DUE_LOCKED if connection.dialect.name == "postgresql" else _DUE
    rows = connection.execute(query, {"now": now, "limit": limit}).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    connection.execute(_LEASE, {"ids": ids, "until": now + lease, "owner": owner})
    return [
        Delivery(
            row.id,
            row.from_addr,
            [r for r in row.recipients if r not in (row.results or {})],
            row.raw,
            row.message_id,
            row.case_id,
        )
        for row in rows
    ]


def next_due(session: Session) -> dt.datetime | None:
    """When the earliest queued message is due (claimed ones when their lease runs out);
    None when nothing is queued. One index lookup (state, next_attempt_at)."""
    due = session.scalar(select(func.min(Outbox.next_attempt_at)).where(Outbox.state == "queued"))
    if due is not None and due.tzinfo is None:
        due = due.replace(tzinfo=dt.UTC)
    return due


def release(session: Session, ids: list[int], now: dt.datetime) -> None:
    """Give claimed but unsent messages back at once (a sender that stops)."""
    if ids:
        session.execute(
            update(Outbox)
            .where(Outbox.id.in_(ids), Outbox.state == "queued")
            .values(next_attempt_at=now, claimed_by=None)
        )


def release_stale(session: Session, owner: str, now: dt.datetime) -> int:
    """At start: the claims this daemon (`owner`) held when it died are due again at once,
    instead of waiting out their lease; returns how many. A mail the relay took just
    before the crash may so be sent once more, with the same Message-ID."""
    result = session.execute(
        update(Outbox)
        .where(Outbox.state == "queued", Outbox.claimed_by == owner)
        .values(next_attempt_at=now, claimed_by=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass
class Outcome:
    """What became of one attempt: final answers per recipient, and why the others wait."""

    delivered: dict[str, str] = field(default_factory=dict)  # recipient -> the relay's 250
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> 5xx or our reason
    deferred: dict[str, str] = field(default_factory=dict)  # recipient -> 4xx or why it waits

    def defer_all(self, recipients: list[str], reason: str) -> Outcome:
        for recipient in recipients:
            if recipient not in self.delivered and recipient not in self.refused:
                self.deferred[recipient] = reason
        return self

    @property
    def complete(self) -> bool:
        """Delivered to every recipient tried, nothing refused or waiting."""
        return bool(self.delivered) and not self.refused and not self.deferred


@dataclass(frozen=True)
class Recorded:
    """A message's state after `record`, for the sender's log line."""

    delivery: Delivery
    state: str
    error: str | None
    refused: dict[str, str] = field(default_factory=dict)  # refused in this attempt


def record(
    session: Session,
    attempts: list[tuple[Delivery, Outcome]],
    now: dt.datetime,
    config: OutboundConfig,
) -> list[Recorded]:
    """Record a batch of attempts in the caller's transaction; returns each message's state.

    A message delivered to every recipient is marked sent by one UPDATE for the
    whole batch. Otherwise the final answers go into `results`; the message is
    sent when no recipient waits and one got it, failed when nobody did (or it
    is older than `max_age`), and else retried later with exponential backoff,
    to the recipients still waiting only.
    """
    done = [d for d, outcome in attempts if outcome.complete]
    if done:
        session.connection().execute(_SENT, {"ids": [d.id for d in done], "now": now})
    recorded = [Recorded(d, "sent", None) for d in done]
    for delivery, outcome in attempts:
        if not outcome.complete:
            recorded.append(_record_one(session, delivery, outcome, now, config))
    return recorded


def _record_one(
    session: Session, delivery: Delivery, outcome: Outcome, now: dt.datetime, config: OutboundConfig
) -> Recorded:
    row = session.get(Outbox, delivery.id)
    if row is None:
        return Recorded(delivery, "gone", None, outcome.refused)
    row.attempts += 1
    results = {**(row.results or {}), **outcome.delivered, **outcome.refused}
    row.results = results
    waiting = [r for r in row.recipients if r not in results]
    refused = [
        f"{r}: {results[r]}" for r in row.recipients if not results.get(r, "2").startswith("2")
    ]
    deferred = [f"{r}: {outcome.deferred.get(r, 'not tried')}" for r in waiting]
    row.last_error = "; ".join(deferred + refused)[:2000] or None
    if not waiting:
        if any(v.startswith("2") for v in results.values()):
            row.state, row.sent_at = "sent", now
        else:
            row.state = "failed"
    elif (now - row.queued_at).total_seconds() >= config.max_age:
        row.state = "failed"
    else:
        delay = min(config.first_retry * 2 ** (row.attempts - 1), MAX_RETRY)
        row.next_attempt_at = now + dt.timedelta(seconds=delay)
    row.claimed_by = None  # recorded: a retry later is a schedule, not a claim
    return Recorded(delivery, row.state, row.last_error, outcome.refused)
