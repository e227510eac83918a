"""The loop breaker: sliding windows over *all* mail we send, which hold what goes over.

Two robots that add no `Auto-Submitted`/`Precedence` header — a partner's
auto-responder and a staff member's out-of-office rule — answer each other
through us for ever: every partner mail is forwarded to the staff member, every
staff "reply" is relayed to the partner (issue 12 item 7). Header reading cannot
stop that, so the outbox counts what it queues, per recipient, and holds a
mail when one of these windows is full (Zammad's loop protection, in spirit):

| window | key | default |
| --- | --- | --- |
| `loop_case_limit` per `loop_case_window` s | one address, one case | 10 per 600 s |
| `loop_case_hourly_limit` per `loop_window` s | one address, one case | 20 per 3600 s |
| `loop_address_limit` per `loop_window` s | one address, all cases (global cap) | 1000 per 3600 s |
| `loop_sender_limit` per `loop_window` s | mail caused by one sender's mail | 100 per 3600 s |

Every kind counts: acknowledgements, notices, relays to the partner, forwards
and copies to staff and watchers, rule mail. A held mail is not dropped: it
stays in the outbox in state `held` (`mailgated outbox list --state held`,
released by `mailgated outbox retry ID`), its case gets a `held` history entry
and the log a WARNING. Held mail is not counted, so the flow resumes by itself
once the window has slid past the burst.

This module only counts; `outbox.py` decides what to queue and what to hold.

Two transactions that queue mail at the same time (two processing workers, a
worker and the rules sweep, two daemons on one PostgreSQL) would each count only
the marks committed before they began, and together pass a window by a batch.
On PostgreSQL, `serialise` takes a transaction-scoped advisory lock for each
address and sender the mail concerns (in one order, so two batches never wait
on each other crosswise) before anything is counted: the second waits for the
first's commit and then counts its mail. SQLite has one writer at a time
already (BEGIN IMMEDIATE). A transaction writes its changes before it waits for
these locks, and after it has them it changes no case but the one of a mail it
holds (its `held` history entry): that rare path can still meet a transaction
waiting for its locks while holding that case, a deadlock PostgreSQL breaks by
failing one of them, which processing runs again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import (
    BindParameter,
    Select,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Session

from mailgated.config import OutboundConfig
from mailgated.db import chunks
from mailgated.models import SendMark

PRUNE = 1000  # old marks forgotten per batch
# the advisory locks of `serialise`, one statement for all (keys sorted by the caller)
_LOCK = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k")

# The statements of every batch, built once (a statement built per call costs its
# construction and cache key each time): IN lists as expanding parameters.
_VALUES: BindParameter[list[str]] = bindparam("values", expanding=True)
_ADDRESSES: BindParameter[list[str]] = bindparam("addresses", expanding=True)
_CASES: BindParameter[list[int]] = bindparam("cases", expanding=True)
_SINCE: BindParameter[dt.datetime] = bindparam("since")
_PER_ADDRESS = (
    select(SendMark.address, func.count())
    .where(SendMark.address.in_(_VALUES), SendMark.at >= _SINCE)
    .group_by(SendMark.address)
)
_PER_CAUSE = (
    select(SendMark.cause, func.count())
    .where(SendMark.cause.in_(_VALUES), SendMark.at >= _SINCE)
    .group_by(SendMark.cause)
)
_PER_CASE = (
    select(
        SendMark.address,
        SendMark.case_id,
        func.count(),
        func.sum(case((SendMark.at >= bindparam("short_since"), 1), else_=0)),
    )
    .where(SendMark.address.in_(_ADDRESSES), SendMark.case_id.in_(_CASES), SendMark.at >= _SINCE)
    .group_by(SendMark.address, SendMark.case_id)
)
# a bounded batch, skipping rows another daemon is deleting (no lock waits between
# concurrent batches on PostgreSQL; SQLite has one writer and ignores the clause)
_PRUNE = delete(SendMark).where(
    SendMark.id.in_(
        select(SendMark.id)
        .where(SendMark.at < bindparam("oldest"))
        .limit(PRUNE)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
)


def serialise(session: Session, addresses: list[str], causes: list[str]) -> None:
    """On PostgreSQL, wait until no other transaction is queueing mail to these addresses
    or caused by these senders, and keep them to ourselves until we commit (see the
    module). A no-op on other databases."""
    if session.get_bind().dialect.name != "postgresql":
        return
    names = {f"to {a}" for a in addresses} | {f"by {c}" for c in causes if c}
    if names:
        # What the transaction changed so far is written first, so it holds its row locks
        # (the cases it updated) before it waits here: else two workers with mail about one
        # case each held what the other waited for (a row lock, these), a deadlock
        # PostgreSQL broke by failing one batch after a second (seen in bench_e2e.py).
        session.flush()
        session.execute(_LOCK, {"keys": sorted(_lock_key(n) for n in names)})


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (a clash only makes two
    unrelated addresses wait for each other)."""
    digest = hashlib.blake2b(f"mailgated loop breaker: {name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


@dataclass
class Windows:
    """The counts of the windows for one batch of mail, kept current as it is queued."""

    config: OutboundConfig
    now: dt.datetime
    short: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    hourly: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    per_address: Counter[str] = field(default_factory=Counter)
    per_cause: Counter[str] = field(default_factory=Counter)
    marks: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        session: Session,
        config: OutboundConfig,
        now: dt.datetime,
        addresses: list[str],
        causes: list[str],
        case_ids: list[int | None],
    ) -> Windows:
        """The windows' counts for these addresses, cases and causes (a few grouped
        queries; the per-case counts only for the cases of this batch, so a staff address
        that got mail about thousands of cases costs one row, not thousands)."""
        windows = cls(config, now)
        short_since = now - dt.timedelta(seconds=config.loop_case_window)
        since = now - dt.timedelta(seconds=config.loop_window)
        wanted = sorted(set(addresses))
        cases = sorted({c for c in case_ids if c is not None})
        windows.per_address.update(_marks_since(session, _PER_ADDRESS, wanted, since))
        for chunk in chunks(wanted):
            for some in chunks(cases):
                rows = session.execute(
                    _PER_CASE,
                    {"addresses": chunk, "cases": some, "since": since, "short_since": short_since},
                )
                for address, case_id, n, short in rows:
                    windows.hourly[(address, case_id)] += n
                    windows.short[(address, case_id)] += int(short or 0)
        named = sorted({c for c in causes if c})
        windows.per_cause.update(_marks_since(session, _PER_CAUSE, named, since))
        return windows

    def full(self, address: str, case_id: int | None, cause: str) -> str | None:
        """Why one more mail to `address` must be held now, or None."""
        c = self.config
        if case_id is not None and self.short[(address, case_id)] >= c.loop_case_limit:
            return (
                f"{self.short[(address, case_id)]} mails to {address} about case {case_id} "
                f"in {c.loop_case_window} s (loop_case_limit)"
            )
        if case_id is not None and self.hourly[(address, case_id)] >= c.loop_case_hourly_limit:
            return (
                f"{self.hourly[(address, case_id)]} mails to {address} about case {case_id} "
                f"in {c.loop_window} s (loop_case_hourly_limit)"
            )
        if self.per_address[address] >= c.loop_address_limit:
            return (
                f"{self.per_address[address]} mails to {address} in {c.loop_window} s "
                "(loop_address_limit)"
            )
        if cause and self.per_cause[cause] >= c.loop_sender_limit:
            return (
                f"{self.per_cause[cause]} mails caused by mail from {cause} in {c.loop_window} s "
                "(loop_sender_limit)"
            )
        return None

    def count(self, address: str, case_id: int | None, cause: str) -> None:
        """One more mail to `address` is queued."""
        self.short[(address, case_id)] += 1
        self.hourly[(address, case_id)] += 1
        self.per_address[address] += 1
        if cause:
            self.per_cause[cause] += 1
        self.marks.append(
            {"at": self.now, "address": address[:320], "case_id": case_id, "cause": cause[:320]}
        )

    def save(self, session: Session) -> None:
        """Write the marks of what was queued; forget marks no window can see any more."""
        if not self.marks:
            return
        session.execute(insert(SendMark), self.marks)
        self.marks = []
        oldest = self.now - dt.timedelta(seconds=max(self.config.loop_window, 3600) * 2)
        session.execute(_PRUNE, {"oldest": oldest})


def _marks_since(
    session: Session, statement: Select[tuple[str, int]], values: list[str], since: dt.datetime
) -> dict[str, int]:
    """How many mails went out since `since` per value (address or cause) of `statement`."""
    counts: dict[str, int] = {}
    for chunk in chunks(values):
        rows = session.execute(statement, {"values": chunk, "since": since})
        counts.update({value: n for value, n in rows})
    return counts
