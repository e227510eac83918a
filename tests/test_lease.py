"""Mailbox leases: one instance polls a mailbox at a time; a dead holder's lease is taken over."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.exc import OperationalError

from mailgated.db import Database
from mailgated.leases import Lease, while_held

T0 = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_one_holder_until_it_expires_or_gives_back(db: Database) -> None:
    """B waits while A holds and renews; B takes over once A stopped renewing; A sees it lost."""
    now = {"a": at(0), "b": at(0)}
    a = Lease(db, "mailbox support@mail/INBOX", "host-a:/spool", 60, clock=lambda: now["a"])
    b = Lease(db, "mailbox support@mail/INBOX", "host-b:/spool", 60, clock=lambda: now["b"])
    assert a.acquire()
    assert not b.acquire()
    now["a"] = now["b"] = at(50)
    assert a.renew()
    now["b"] = at(100)  # A renewed at 50: still held until 110
    assert not b.acquire()
    now["b"] = at(111)  # A died after its renewal at 50
    assert b.acquire()
    assert not a.renew()
    assert not a.acquire()
    b.release()
    assert a.acquire()  # given back: taken at once, no waiting
    again = Lease(db, "mailbox support@mail/INBOX", "host-a:/spool", 60, clock=lambda: at(112))
    assert again.acquire()  # the same instance restarted takes its own lease back at once


def test_only_the_holder_polls_and_a_survivor_takes_over(db: Database) -> None:
    """Two instances run the same poller; one polls, and when it stops the other polls."""
    polling: list[str] = []

    async def main() -> None:
        stop_a, stop_b = asyncio.Event(), asyncio.Event()

        def work(who: str) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
            async def poll(lost: asyncio.Event) -> None:
                polling.append(who)
                await lost.wait()
                polling.remove(who)

            return poll

        a = Lease(db, "mailbox x", "a", 0.3)
        b = Lease(db, "mailbox x", "b", 0.3)
        task_a = asyncio.create_task(while_held(a, work("a"), stop_a))
        await asyncio.sleep(0.3)
        task_b = asyncio.create_task(while_held(b, work("b"), stop_b))
        for _ in range(10):
            await asyncio.sleep(0.1)
            assert polling == ["a"]
        stop_a.set()
        await task_a
        for _ in range(50):
            if polling == ["b"]:
                break
            await asyncio.sleep(0.05)
        assert polling == ["b"]
        stop_b.set()
        await task_b
        assert polling == []

    asyncio.run(main())


class Memo:
    """A poller's state file, in memory."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})

    def load(self) -> dict[str, Any]:
        return dict(self.data)

    def save(self, data: dict[str, Any]) -> None:
        self.data = dict(data)


def test_progress_goes_to_the_instance_taking_over(db: Database) -> None:
    """The holder's last renewed progress (last UID) is handed to the survivor that takes its
    mailbox over, so it does not fetch the folder again; a holder renewing keeps its own."""
    now = {"t": at(0)}
    a_state, b_state = Memo(), Memo({"uidvalidity": 7, "last_uid": 2})
    a = Lease(db, "mailbox m", "a", 60, clock=lambda: now["t"], carried=a_state)
    b = Lease(db, "mailbox m", "b", 60, clock=lambda: now["t"], carried=b_state)
    assert a.acquire()
    a_state.save({"uidvalidity": 7, "last_uid": 40})
    now["t"] = at(20)
    assert a.renew()
    a_state.save({"uidvalidity": 7, "last_uid": 45})  # fetched after its last renewal
    now["t"] = at(81)  # A died
    assert b.acquire()
    assert b_state.data == {"uidvalidity": 7, "last_uid": 40}
    b_state.save({"uidvalidity": 7, "last_uid": 60})
    assert b.renew() and b.acquire()
    assert b_state.data == {"uidvalidity": 7, "last_uid": 60}  # its own: nothing handed


class Unreachable(Lease):
    """A lease whose database does not answer."""

    def acquire(self) -> bool:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    def renew(self) -> bool:
        raise OperationalError("UPDATE", {}, Exception("connection refused"))


def test_no_database_no_waiting(db: Database) -> None:
    """With the database down, the poller still polls (intake never waits on the database)."""
    started = asyncio.Event()

    async def main() -> None:
        stop = asyncio.Event()

        async def poll(lost: asyncio.Event) -> None:
            started.set()
            await lost.wait()

        task = asyncio.create_task(while_held(Unreachable(db, "mailbox y", "a", 0.3), poll, stop))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(0.5)  # renewals fail: it keeps polling
        assert not task.done()
        stop.set()
        await task

    asyncio.run(main())
    assert started.is_set()
