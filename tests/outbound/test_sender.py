"""The sender against a relay that greylists, refuses, drops connections and speaks (or not)
SMTPUTF8: what waits is retried, what is refused is recorded, one bad address never stalls
the others, sessions are reused, and a sender killed after the relay's 250 sends at most one
duplicate (issue 12 items 3-5, issue 15 item 2)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest
from conftest import MG
from smtp_sink import Received, smtp_sink

from mailgated.cases import Actor, CaseService
from mailgated.config import OutboundConfig
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.models import Case, Outbox, utcnow
from mailgated.outbound import delivery, outbox
from mailgated.outbound.sender import Sender

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=10)


def message(to: str, subject: str = "[1] Hello", frm: str = "support@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Support <{frm}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Hello from mailgated.\n")
    return msg


def config(port: int, **kw: Any) -> OutboundConfig:
    return dataclasses.replace(OutboundConfig(relay=f"127.0.0.1:{port}", timeout=5), **kw)


def queue(
    db: Database,
    cfg: OutboundConfig,
    *recipients: str,
    case: int | None = None,
    now: dt.datetime = T0,
) -> None:
    """One message per address (or per comma-separated group of addresses)."""
    with db.session() as s:
        row = s.get(Case, case) if case else None
        for group in recipients:
            to = group.split(",")
            item = outbox.Outgoing(message(", ".join(to)), to, row.id if row else None)
            outbox.enqueue(s, [item], cfg, automatic=False, now=now)


def rows(db: Database) -> list[Outbox]:
    with db.session() as s:
        found = list(s.query(Outbox).order_by(Outbox.id))
        s.expunge_all()
        return found


@pytest.mark.parametrize("stage", ["greeting", "MAIL", "RCPT", "DATA"], ids=lambda s: f"451-at-{s}")
async def test_a_4xx_at_any_stage_is_retried_then_delivered(db: Database, stage: str) -> None:
    """A relay that greylists (451) at the greeting, MAIL, RCPT or DATA: the mail waits and
    goes out once the relay takes it, never marked failed."""
    with smtp_sink() as (sink, port):
        cfg = config(port)
        queue(db, cfg, "p@partner.example")
        answer = "451 4.3.0 greylisted, try again later"
        if stage == "greeting":
            sink.greeting = "421 4.3.2 busy, try again later"
        elif stage == "MAIL":
            sink.mail = answer
        elif stage == "RCPT":
            sink.rcpt["p@partner.example"] = answer
        else:
            sink.data = answer
        sender = Sender(db, cfg)
        assert await sender.run_once(T0) == 1
        (row,) = rows(db)
        assert (row.state, row.attempts) == ("queued", 1)
        assert "4" in (row.last_error or "")[:60]
        sink.greeting = sink.mail = sink.data = None
        sink.rcpt.clear()
        assert await sender.run_once(LATER) == 1
        await sender.close_sessions()
    assert [m.rcpt_tos for m in sink.messages] == [["p@partner.example"]]
    assert rows(db)[0].state == "sent"


async def test_several_recipients_retry_only_the_deferred_and_record_the_refused(
    db: Database, mg: MG, caplog: pytest.LogCaptureFixture
) -> None:
    """To a (250), b (451) and c (550): a gets it at once, c is recorded as refused, only b
    gets it on the retry; the mail is sent, the refusal visible in `outbox list`."""
    with smtp_sink() as (sink, port):
        cfg = config(port)
        queue(db, cfg, "a@partner.example,b@partner.example,c@partner.example")
        sink.rcpt["b@partner.example"] = "451 4.7.1 rate limited"
        sink.rcpt["c@partner.example"] = "550 5.1.1 no such user"
        sender = Sender(db, cfg)
        with caplog.at_level(logging.WARNING, "mailgated.outbound"):
            await sender.run_once(T0)
        (row,) = rows(db)
        assert (row.state, row.attempts) == ("queued", 1)
        sink.rcpt.pop("b@partner.example")
        await sender.run_once(LATER)
        await sender.close_sessions()
    assert [m.rcpt_tos for m in sink.messages] == [["a@partner.example"], ["b@partner.example"]]
    (listed,) = mg("outbox", "list", "--json").json()
    assert listed["state"] == "sent"
    assert listed["results"]["c@partner.example"].startswith("550 5.1.1")
    assert listed["results"]["a@partner.example"].startswith("250")
    assert "c@partner.example: 550" in caplog.text


async def test_one_unsendable_address_never_stalls_the_others(db: Database) -> None:
    """jürgen@bücher.example through a relay without SMTPUTF8 fails alone, with the reason;
    the IDN domain goes as IDNA and every other mail of the pass is delivered."""
    with smtp_sink(smtputf8=False) as (sink, port):
        cfg = config(port)
        queue(db, cfg, "jürgen@bücher.example", "info@bücher.example", "p@partner.example")
        async with Sender(db, cfg) as sender:
            await sender.run_once(T0)
    by_rcpt = {m.rcpt_tos[0]: m for m in sink.messages}
    assert sorted(by_rcpt) == ["info@xn--bcher-kva.example", "p@partner.example"]
    states = {r.recipients[0]: (r.state, r.last_error or "") for r in rows(db)}
    assert states["info@bücher.example"] == ("sent", "")
    assert states["p@partner.example"] == ("sent", "")
    state, reason = states["jürgen@bücher.example"]
    assert state == "failed" and "SMTPUTF8" in reason


async def test_non_ascii_local_part_goes_with_smtputf8_when_offered(db: Database) -> None:
    """A relay that offers SMTPUTF8 gets jürgen's mail with MAIL FROM … SMTPUTF8."""
    with smtp_sink(smtputf8=True) as (sink, port):
        cfg = config(port)
        queue(db, cfg, "jürgen@bücher.example")
        async with Sender(db, cfg) as sender:
            await sender.run_once(T0)
    (received,) = sink.messages
    assert received.rcpt_tos == ["jürgen@xn--bcher-kva.example"]
    assert "SMTPUTF8" in received.mail_options
    assert rows(db)[0].state == "sent"


async def test_permanent_failure_is_a_warning_naming_the_case(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A 550 gives up at once, and the WARNING names the outbox message and its case."""
    with db.session() as s:
        section, _ = Directory(s).add_section("Support", email="support@example.com")
        case_id = CaseService(s, Actor.system()).create(section, "Broken").id
    with smtp_sink() as (sink, port):
        cfg = config(port)
        sink.refuse.add("gone@partner.example")
        queue(db, cfg, "gone@partner.example", case=case_id)
        with caplog.at_level(logging.WARNING, "mailgated.outbound"):
            async with Sender(db, cfg) as sender:
                await sender.run_once(T0)
    (row,) = rows(db)
    assert row.state == "failed"
    assert f"outbox {row.id} (case {case_id})" in caplog.text and "550" in caplog.text


async def test_outbox_list_limit_state_totals_and_retry_all_failed(db: Database, mg: MG) -> None:
    """`outbox list --limit/--state` and its totals; `outbox retry --failed` and `retry ID…`
    put every failed message back, and they go out."""
    with smtp_sink() as (sink, port):
        cfg = config(port)
        sink.refuse.update({"x1@partner.example", "x2@partner.example", "x3@partner.example"})
        queue(db, cfg, "x1@partner.example", "x2@partner.example", "x3@partner.example")
        queue(db, cfg, "ok@partner.example")
        async with Sender(db, cfg) as sender:
            await sender.run_once(T0)
        assert [r["state"] for r in mg("outbox", "list", "--json").json()] == [
            "failed",
            "failed",
            "failed",
            "sent",
        ]
        failed = mg("outbox", "list", "--state", "failed", "--limit", "2", "--json").json()
        assert [r["state"] for r in failed] == ["failed", "failed"]
        assert failed[-1]["to"] == ["x3@partner.example"]  # the newest two
        table = mg("outbox", "list", "--limit", "1").out
        assert "1 shown; queued 0, sent 1, failed 3, held 0" in table
        with db.session() as s:
            counts = outbox.counts(s, T0)
        assert (counts.queued, counts.sent, counts.failed) == (0, 1, 3)
        sink.refuse.clear()
        first = str(failed[0]["id"])
        assert "queued again" in mg("outbox", "retry", first).out
        assert mg("outbox", "retry", "--failed").out.count("queued again") == 2
        with db.session() as s:
            counts = outbox.counts(s, T0 + dt.timedelta(minutes=5))
        assert counts.queued == 3 and counts.oldest_queued_age is not None
        async with Sender(db, cfg) as sender:
            await sender.run_once()
    assert mg("outbox", "list", "--state", "failed", "--json").json() == []
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == [
        "ok@partner.example",
        "x1@partner.example",
        "x2@partner.example",
        "x3@partner.example",
    ]


async def test_sessions_are_reused_and_a_dropped_one_is_replaced(db: Database) -> None:
    """Twenty mails over one connection that the relay drops after every third mail: all
    twenty arrive once, over new sessions; none is marked failed or retried later."""
    with smtp_sink() as (sink, port):
        cfg = config(port, connections=1)
        queue(db, cfg, *(f"p{n}@partner.example" for n in range(20)))
        sink.drop_after = 3
        sender = Sender(db, cfg)
        assert await sender.run_once(T0) == 20
        await sender.close_sessions()
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
        f"p{n}@partner.example" for n in range(20)
    )
    assert sink.sessions == 7  # ceil(20 / 3): a new session only when the relay hung up
    assert {(r.state, r.attempts) for r in rows(db)} == {("sent", 1)}


async def test_parallel_sessions_each_send_many(db: Database) -> None:
    """Forty mails with `connections = 4`: at most four sessions, every mail once."""
    with smtp_sink() as (sink, port):
        cfg = config(port, connections=4)
        queue(db, cfg, *(f"q{n}@partner.example" for n in range(40)))
        sender = Sender(db, cfg)
        assert await sender.run_once(T0) == 40
        await sender.close_sessions()
    assert len(sink.messages) == 40 and sink.sessions <= 4
    assert {r.state for r in rows(db)} == {"sent"}


SENDER = """
import asyncio, sys
from mailgated.cases import Actor, CaseService
from mailgated.config import OutboundConfig
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.outbound.sender import Sender

async def main():
    cfg = OutboundConfig(relay="127.0.0.1:" + sys.argv[2], timeout=5, connections=1)
    sender = Sender(Database(sys.argv[1]), cfg)
    await sender.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


class TableLock:
    """Holds the outbox table against writers (the sender's "sent" marks) from outside."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    def take(self) -> None:
        if self.url.startswith("sqlite"):
            self.conn = sqlite3.connect(
                self.url.split("///", 1)[1], isolation_level=None, check_same_thread=False
            )
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn = psycopg.connect(self.url.replace("+psycopg", ""))
            self.conn.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()


def test_sender_killed_after_the_relays_250_sends_at_most_one_duplicate(
    db: Database, db_url: str
) -> None:
    """SIGKILL between the relay's 250 and the "sent" mark: after the lease every mail is
    delivered, none lost, the one in question at most twice and with the same Message-ID."""
    lock = TableLock(db_url)
    answered = threading.Event()
    with smtp_sink() as (sink, port):
        cfg = config(port)

        def on_data(received: Received) -> None:
            if len(sink.messages) == 1:
                lock.take()  # from now on no mark can be written

        def on_command(name: str, session: Any) -> None:
            if sink.messages and getattr(session, "mails", 0):
                answered.set()  # the sender read the 250: it went on to the next command

        sink.on_data, sink.on_command = on_data, on_command
        with db.session() as s:
            for n in range(10):
                to = f"k{n}@partner.example"
                outbox.enqueue(s, [outbox.Outgoing(message(to), [to])], cfg, automatic=False)
        proc = subprocess.Popen([sys.executable, "-c", SENDER, db_url, str(port)])
        try:
            assert answered.wait(60), "the sender never got past the first 250"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            lock.release()
        accepted_before = len(sink.messages)
        assert accepted_before >= 1
        assert {r.state for r in rows(db)} == {"queued"}  # the 250s were never recorded

        async def restart() -> None:
            sender = Sender(db, cfg)
            while await sender.run_once(utcnow() + delivery.LEASE + dt.timedelta(seconds=1)):
                pass
            await sender.close_sessions()

        asyncio.run(restart())
    ids = Counter(m.message_id for m in sink.messages)
    with db.session() as s:
        queued_ids = {r.message_id for r in s.query(Outbox)}
    assert set(ids) == queued_ids  # nothing lost
    assert max(ids.values()) <= 2  # at most once more
    assert sum(n - 1 for n in ids.values()) <= accepted_before
    assert {r.state for r in rows(db)} == {"sent"}


async def test_a_stop_records_what_went_and_gives_the_rest_back_at_once(db: Database) -> None:
    """Stopping mid-batch: every mail the relay took is marked sent, every other one is
    due again at once (not leased for minutes), and none is lost."""
    started = threading.Event()
    with smtp_sink() as (sink, port):
        cfg = config(port, connections=1)
        queue(db, cfg, *(f"s{n}@partner.example" for n in range(30)), now=utcnow())

        def slow(received: Received) -> None:
            started.set()
            threading.Event().wait(0.05)  # a slow relay: the batch is still in hand

        sink.on_data = slow
        sender = Sender(db, cfg)
        await sender.start()
        await asyncio.to_thread(started.wait, 30)
        await sender.stop()
        got = {m.rcpt_tos[0] for m in sink.messages}
    assert 1 <= len(got) < 30
    now = utcnow()
    for row in rows(db):
        if row.recipients[0] in got:
            assert row.state == "sent", row.recipients
        else:
            assert row.state == "queued" and row.next_attempt_at <= now, row.recipients


async def test_a_restarted_daemon_releases_its_own_stale_claims_at_once(db: Database) -> None:
    """Claims a crashed daemon held are due again when it starts, not after the lease;
    another daemon's claims are left alone."""
    with smtp_sink() as (sink, port):
        cfg = config(port, claim_lease=3600)
        queue(db, cfg, "mine@partner.example", "theirs@partner.example", now=utcnow())
        with db.session() as s:  # as if each daemon had claimed one and then died
            mine = delivery.claim(s, utcnow(), limit=1, lease=dt.timedelta(hours=1), owner="a")
            theirs = delivery.claim(s, utcnow(), limit=1, lease=dt.timedelta(hours=1), owner="b")
        assert len(mine) == len(theirs) == 1
        restarted = Sender(db, cfg, interval=0.05, owner="a")
        await restarted.start()
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while not sink.messages:
                assert asyncio.get_running_loop().time() < deadline, rows(db)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the other daemon's claim would show now
        finally:
            await restarted.stop()
    assert [m.rcpt_tos for m in sink.messages] == [["mine@partner.example"]]
    states = {r.recipients[0]: (r.state, r.claimed_by) for r in rows(db)}
    assert states["mine@partner.example"][0] == "sent"
    assert states["theirs@partner.example"] == ("queued", "b")


def test_plain_addresses_go_on_the_wire_as_aiosmtplib_writes_them() -> None:
    """An address the sender writes into MAIL or RCPT itself (skipping aiosmtplib's parsing)
    is one aiosmtplib would have written unchanged; any other is left to aiosmtplib."""
    from aiosmtplib.email import quote_address

    from mailgated.outbound.relay import PLAIN_ADDRESS

    plain = [
        "support@example.com",
        "Partner.Name+case-12@mx-1.Partner.example",
        "a!#$%&'*+/=?^_`{|}~-b@example.org",
    ]
    for address in plain:
        assert PLAIN_ADDRESS.fullmatch(address), address
        assert quote_address(address) == f"<{address}>"
    others = [
        "",
        '"john doe"@example.org',
        "a..b@example.org",
        ".a@example.org",
        "a@example.org.",
        "a@[192.0.2.1]",
        "Pat <pat@example.org>",
        "pat@example.org (Pat)",
        "üser@example.org",
        "a@b\r\nRCPT TO:<x@y>",
    ]
    for address in others:
        assert not PLAIN_ADDRESS.fullmatch(address), address


async def test_an_idle_sender_looks_at_the_outbox_when_something_can_be_due(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 10 ms interval and nothing due, the sender does not run a transaction every
    interval; yet a greylisted mail is tried again when its retry is due, and a mail
    queued by another process (no wake-up) goes within IDLE_LOOK seconds."""
    from mailgated.outbound import sender as sender_module

    looks: list[float] = []
    claim = delivery.claim

    def counted(*args: Any, **kwargs: Any) -> list[delivery.Delivery]:
        looks.append(0.0)
        return claim(*args, **kwargs)

    monkeypatch.setattr(delivery, "claim", counted)
    with smtp_sink() as (sink, port):
        cfg = config(port, first_retry=0.4)
        sink.rcpt["grey@partner.example"] = "451 4.7.1 greylisted, try again later"
        queue(db, cfg, "grey@partner.example", now=utcnow())
        sender = Sender(db, cfg, interval=0.01)
        await sender.start()
        try:
            await asyncio.sleep(0.2)  # tried once, deferred by 0.4 s
            sink.rcpt.clear()
            tried = len(looks)
            await wait_for(lambda: len(sink.messages) == 1, 5)
            assert len(looks) - tried <= 6  # not 40 looks in 0.4 s at a 10 ms interval
            queue(db, cfg, "other@partner.example", now=utcnow())  # another process's mail
            before = len(looks)
            await asyncio.sleep(0.5)
            assert len(looks) - before <= 3  # idle: at most the look at IDLE_LOOK
            await wait_for(lambda: len(sink.messages) == 2, sender_module.IDLE_LOOK + 3)
        finally:
            await sender.stop()
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == [
        "grey@partner.example",
        "other@partner.example",
    ]


async def wait_for(condition: Any, seconds: float) -> None:
    """Poll `condition` until true, failing after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
