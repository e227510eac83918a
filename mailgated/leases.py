"""Leases: each `[[mailbox]]` is polled by exactly one daemon at a time.

Several daemons on several hosts may share one database (PostgreSQL); each
listens and drains its own spool, but a mailbox polled by two of them at once
would have every message fetched twice. So a poller first takes the mailbox's
lease, a row of `leases` (works on SQLite and PostgreSQL alike): the holder
renews it every third of its `lease` seconds (`[[mailbox]] lease`, 60 by
default); another instance takes it over only once it has expired, that is
when its holder died (SIGKILL, a lost host) or lost the database for that long.
A daemon that stops cleanly gives its leases back at once.

The poller's progress travels with the lease: the holder writes its state file
(IMAP's UIDVALIDITY and last UID, POP3's UIDLs) into the row at each renewal,
and an instance taking the mailbox over from another starts from that instead of
its own older file (or none), so it does not fetch the whole folder again — at
most what the dead holder took after its last renewal, which processing then
drops as already seen.

An instance is known by its host name and its spool directory, so a daemon
restarted in place takes its own lease back at once instead of waiting.
Expiry is judged by the clocks of the hosts (keep them in NTP sync; the lease
is tens of seconds, skew is milliseconds).

When the holder cannot reach the database to renew, it keeps polling: intake
never waits on the database. For the same reason a daemon that cannot reach the
database to take the lease (an outage, a database down at start) polls without
it until the database answers, then holds the lease or leaves the mailbox to
the instance that does. If only that host lost the database, another
instance takes the lease over after it expired and both poll until the first
one reaches the database again and sees it lost the lease; a message fetched
twice then is recorded once (processing drops a Message-ID + content seen
before).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mailgated.db import Database
from mailgated.models import Lease as LeaseRow

log = logging.getLogger("mailgated.intake")

Clock = Callable[[], dt.datetime]


def instance_name(spool_path: str | os.PathLike[str]) -> str:
    """This daemon, as other instances see it in `leases`: host and spool directory."""
    return f"{socket.gethostname()}:{os.path.abspath(spool_path)}"[:400]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Carried(Protocol):
    """The holder's progress that goes with the lease (a poller's `StateFile`)."""

    def load(self) -> dict[str, Any]: ...

    def save(self, data: dict[str, Any]) -> None: ...


class Lease:
    """One named lease in the database, taken and renewed by `holder`."""

    def __init__(
        self,
        db: Database,
        name: str,
        holder: str,
        seconds: float,
        clock: Clock = _now,
        carried: Carried | None = None,
    ) -> None:
        self.db = db
        self.name = name[:400]
        self.holder = holder
        self.seconds = seconds
        self.clock = clock
        self.carried = carried

    def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; renew it if ours.
        Taken over from another holder, its last recorded progress becomes ours."""
        now = self.clock()
        expires = now + dt.timedelta(seconds=self.seconds)
        handed: dict[str, Any] | None = None
        with self.db.session() as session:
            row = session.get(LeaseRow, self.name, with_for_update=True)
            if row is not None:
                if row.holder != self.holder and row.expires_at >= now:
                    return False
                if row.holder != self.holder:
                    handed = row.state
                row.holder, row.expires_at = self.holder, expires
        if row is not None:
            if handed and self.carried is not None:
                self.carried.save(handed)
            return True
        try:
            with self.db.session() as session:
                session.add(
                    LeaseRow(
                        name=self.name, holder=self.holder, acquired_at=now, expires_at=expires
                    )
                )
        except IntegrityError:  # another instance made the row first
            return False
        return True

    def renew(self) -> bool:
        """Push the expiry on (and record the progress); False when another instance has
        taken the lease."""
        expires = self.clock() + dt.timedelta(seconds=self.seconds)
        values: dict[str, Any] = {"expires_at": expires}
        if self.carried is not None:
            values["state"] = self.carried.load() or None
        with self.db.session() as session:
            result = session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == self.name, LeaseRow.holder == self.holder)
                .values(**values)
            )
            return cast(CursorResult[object], result).rowcount == 1

    def release(self) -> None:
        """Give the lease back (a clean stop): another instance may take it at once."""
        with self.db.session() as session:
            session.execute(
                delete(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == self.holder)
            )


async def while_held(
    lease: Lease,
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    stopping: asyncio.Event,
) -> None:
    """Run `work(lost)` only while this instance holds `lease`, until `stopping`.

    Waits for the lease (checking every third of its time), renews it while `work`
    runs, and sets `lost` — `work` must then return — when another instance took it
    or the daemon stops; gives it back on the way out.
    """
    tick = max(lease.seconds / 3, 0.05)
    while not stopping.is_set():
        taken = await _try(lease.acquire, lease, "take")
        if taken is False:
            await _sleep(stopping, tick)
            continue
        if taken is None:  # no database: intake does not wait for it
            log.warning("%s: polled without the lease until the database answers", lease.name)
        else:
            log.info("%s: polled by this instance (%s)", lease.name, lease.holder)
        lost = asyncio.Event()
        task: asyncio.Task[None] = asyncio.create_task(work(lost), name=f"{lease.name} holder")
        try:
            while not stopping.is_set() and not task.done():
                await _sleep(stopping, tick, task)
                if stopping.is_set() or task.done():
                    break
                if await _try(lease.renew, lease, "renew") is False:
                    log.warning("%s: polled by another instance; stopping here", lease.name)
                    break
        finally:
            lost.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=10)
            except TimeoutError:
                task.cancel()
            if stopping.is_set():
                await _try(lease.release, lease, "give back")


async def _try(call: Callable[[], bool | None], lease: Lease, what: str) -> bool | None:
    """`call` in a thread; on a database error, None (logged): the caller carries on."""
    try:
        return await asyncio.to_thread(call)
    except SQLAlchemyError as exc:
        log.warning("%s: cannot %s the lease: %s", lease.name, what, type(exc).__name__)
        return None


async def _sleep(
    stopping: asyncio.Event, seconds: float, task: asyncio.Task[None] | None = None
) -> None:
    waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(stopping.wait())}
    if task is not None:
        waiters.add(cast("asyncio.Future[object]", task))
    done, pending = await asyncio.wait(
        waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for waiter in pending:
        if waiter is not task:
            waiter.cancel()


def mailbox_lease(
    db: Database,
    spool_path: str | os.PathLike[str],
    mailbox: str,
    seconds: float,
    carried: Carried | None = None,
) -> Lease:
    """The lease that lets one instance at a time poll the `[[mailbox]]` named `mailbox`; the
    poller's state (`carried`) goes with it to the instance that takes it over."""
    return Lease(db, f"mailbox {mailbox}", instance_name(spool_path), seconds, carried=carried)
