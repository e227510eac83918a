"""The outbox: exactly-once delivery through a relay that is down at first, backoff,
failures an operator can see and retry, and no auto-reply storms."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import ssl
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import MG
from dovecot import self_signed_cert
from smtp_sink import free_port, smtp_sink
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailgated.cases import Actor, CaseService
from mailgated.config import OutboundConfig
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.models import AddressMark, Case, Outbox
from mailgated.outbound import outbox
from mailgated.outbound.outbox import Outgoing
from mailgated.outbound.sender import Sender

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def message(to: str, subject: str = "[1] Hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Support <support@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Hello from mailgated.\n")
    return msg


def queue(session: Session, to: str, cfg: OutboundConfig, **kw: Any) -> bool:
    """Queue one message to `to` through the outbox's one enqueue path; was it queued?"""
    return bool(outbox.enqueue(session, [Outgoing(message(to), [to])], cfg, **kw))


def config(port: int, **kw: object) -> OutboundConfig:
    return dataclasses.replace(OutboundConfig(relay=f"127.0.0.1:{port}", timeout=5), **kw)


async def test_relay_down_then_back_delivers_each_once(db: Database) -> None:
    """Mail queued while the relay is down is delivered once each when it is back."""
    port = free_port()
    cfg = config(port)
    with db.session() as s:
        for n in range(3):
            queue(s, f"p{n}@partner.example", cfg, automatic=False, now=T0)
    async with Sender(db, cfg) as sender:
        assert await sender.run_once(T0) == 3  # relay down: all three fail, stay queued
        with db.session() as s:
            rows = s.query(Outbox).all()
            assert {r.state for r in rows} == {"queued"}
            assert all(r.attempts == 1 and "relay" in (r.last_error or "") for r in rows)
            assert all(r.next_attempt_at >= T0 + dt.timedelta(seconds=60) for r in rows)
        assert await sender.run_once(T0 + dt.timedelta(seconds=10)) == 0  # backing off
        with smtp_sink(port) as (sink, _):
            assert await sender.run_once(T0 + dt.timedelta(minutes=2)) == 3
            assert await sender.run_once(T0 + dt.timedelta(hours=3)) == 0
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == [
        "p0@partner.example",
        "p1@partner.example",
        "p2@partner.example",
    ]
    assert all(m.mail_from == "support@example.com" for m in sink.messages)
    with db.session() as s:
        assert {r.state for r in s.query(Outbox)} == {"sent"}


async def test_refused_recipient_fails_and_can_be_retried(db: Database, mg: MG) -> None:
    """A refused recipient fails visibly in outbox list and outbox retry sends it again."""
    with smtp_sink() as (sink, port):
        cfg = config(port)
        sink.refuse.add("gone@partner.example")
        with db.session() as s:
            gone = "gone@partner.example"
            outbox.enqueue(s, [Outgoing(message(gone, "[7] Status"), [gone])], cfg, automatic=False)
        async with Sender(db, cfg) as sender:
            await sender.run_once()
        failed = mg("outbox", "list", "--failed", "--json").json()
        assert len(failed) == 1
        assert failed[0]["state"] == "failed"
        assert failed[0]["to"] == ["gone@partner.example"]
        assert "550" in failed[0]["last_error"]
        sink.refuse.clear()
        mg("outbox", "retry", str(failed[0]["id"]))
        async with Sender(db, cfg) as sender:
            await sender.run_once()
    assert len(sink.messages) == 1
    assert mg("outbox", "list", "--json").json()[0]["state"] == "sent"
    assert mg("outbox", "list", "--failed", "--json").json() == []


async def test_tls_relay_verified_against_ca_file(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS relay is verified: an unknown certificate keeps the mail, ca_file lets it go."""
    pair = self_signed_cert(tmp_path)
    if pair is None:
        pytest.skip("openssl is not installed: no certificate for the relay")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(*pair)
    with smtp_sink(ssl_context=server) as (sink, port):
        untrusted = config(port, tls=True)
        with db.session() as s:
            queue(s, "p@partner.example", untrusted, automatic=False, now=T0)
        with caplog.at_level(logging.WARNING, "mailgated.outbound"):
            async with Sender(db, untrusted) as sender:
                await sender.run_once(T0)
        assert sink.messages == []
        assert "certificate verify failed" in caplog.text and "will retry" in caplog.text
        with db.session() as s:
            assert s.query(Outbox).one().state == "queued"  # kept for a retry

        trusted = config(port, tls=True, ca_file=str(pair[0]))
        async with Sender(db, trusted) as sender:
            assert await sender.run_once(T0 + dt.timedelta(hours=1)) == 1
    assert [m.rcpt_tos for m in sink.messages] == [["p@partner.example"]]


async def test_old_message_gives_up(db: Database) -> None:
    """A mail older than max_age is given up on as failed."""
    cfg = config(free_port(), max_age=3600)
    with db.session() as s:
        queue(s, "p@partner.example", cfg, automatic=False, now=T0)
    async with Sender(db, cfg) as sender:
        await sender.run_once(T0 + dt.timedelta(hours=2))
    with db.session() as s:
        assert s.query(Outbox).one().state == "failed"


def test_automatic_mail_is_rate_limited_and_spares_bounced(db: Database) -> None:
    """Automatic mail stops at the rate limit and never goes to a bounced address."""
    cfg = config(25, auto_reply_limit=10, auto_reply_window=3600)
    with db.session() as s:
        s.add(AddressMark(email="bounced@partner.example", reason="550 no such user"))
        s.flush()
        queued = [
            queue(s, "robot@partner.example", cfg, automatic=True, now=T0 + dt.timedelta(minutes=n))
            for n in range(12)
        ]
        assert sum(queued) == 10
        assert not queue(s, "bounced@partner.example", cfg, automatic=True)
        # a human's mail is never held back
        assert queue(s, "robot@partner.example", cfg, automatic=False, now=T0)
        # the window slides: an hour later automatic mail flows again
        later = T0 + dt.timedelta(minutes=75)
        assert queue(s, "robot@partner.example", cfg, automatic=True, now=later)


def test_suppression_in_one_batch_counts_the_batch_and_keeps_other_recipients(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch (processing, the rules sweep) counts its own mail against the limit, and a
    mail to a bounced and a good address still goes to the good one."""
    cfg = config(25, auto_reply_limit=2, auto_reply_window=3600)
    both = ["bounced@partner.example", "good@partner.example"]
    items = [Outgoing(message("robot@partner.example"), ["robot@partner.example"]) for _ in "123"]
    items.append(Outgoing(message(", ".join(both)), both, kind="reminder"))
    with db.session() as s:
        s.add(AddressMark(email="bounced@partner.example", reason="550 no such user"))
        s.flush()
        with caplog.at_level(logging.INFO, "mailgated.outbound"):
            queued = outbox.enqueue(s, items, cfg, automatic=True, now=T0)
        assert len(queued) == 3
        rows = s.query(Outbox).order_by(Outbox.id).all()
        assert [r.recipients for r in rows] == [
            ["robot@partner.example"],
            ["robot@partner.example"],
            ["good@partner.example"],
        ]
        assert all(r.automatic and r.state == "queued" for r in rows)
    assert "not sending reminder mail to bounced@partner.example" in caplog.text


def test_a_batch_of_both_kinds_spares_only_the_people_writing_from_suppression(
    db: Database,
) -> None:
    """In one call with mail of both kinds (processing's batch), a bounced address and the
    rate limit hold back only the automatic mail; mail a person wrote still goes, and does
    not count against the automatic limit."""
    cfg = config(25, auto_reply_limit=1, auto_reply_window=3600)
    bounced, robot = "bounced@partner.example", "robot@partner.example"
    items = [
        Outgoing(message(bounced), [bounced], kind="relay"),
        Outgoing(message(robot), [robot], kind="relay"),
        Outgoing(message(bounced), [bounced], kind="acknowledgement"),
        Outgoing(message(robot), [robot], kind="acknowledgement"),
        Outgoing(message(robot), [robot], kind="acknowledgement"),
    ]
    with db.session() as s:
        s.add(AddressMark(email=bounced, reason="550 no such user"))
        s.flush()
        flags = [False, False, True, True, True]
        queued = outbox.enqueue(s, items, cfg, automatic=flags, now=T0)
        assert [item.kind for item in queued] == ["relay", "relay", "acknowledgement"]
        rows = s.query(Outbox).order_by(Outbox.id).all()
        assert [(r.kind, r.recipients, r.automatic) for r in rows] == [
            ("relay", [bounced], False),
            ("relay", [robot], False),
            ("acknowledgement", [robot], True),
        ]


def test_two_transactions_at_once_never_pass_a_loop_window_together(db: Database) -> None:
    """Two transactions queueing mail to one address at the same time (two workers, or two
    daemons on one PostgreSQL) count each other's mail: together they queue no more than
    the loop breaker's window lets through, and hold the rest."""
    cfg = config(25, loop_address_limit=3)
    robot = "robot@partner.example"
    queued: dict[str, int] = {}

    def three(session: Session, who: str) -> None:
        items = [Outgoing(message(robot), [robot]) for _ in range(3)]
        queued[who] = len(outbox.enqueue(session, items, cfg, automatic=False, now=T0))

    def second() -> None:
        with db.session() as session:
            three(session, "second")

    with db.session() as session:
        three(session, "first")
        other = threading.Thread(target=second)
        other.start()
        other.join(2.0)  # it waits for our commit, or (the defect) queues past the window
    other.join(30)
    assert queued == {"first": 3, "second": 0}
    with db.session() as session:
        states = sorted(session.scalars(select(Outbox.state)))
    assert states == ["held"] * 3 + ["queued"] * 3


def test_two_transactions_about_one_case_queue_their_mail_without_a_deadlock(
    db: Database,
) -> None:
    """Two transactions that changed one case and queue mail to one address (two workers
    with replies about the same case) wait for each other in turn: both commit, neither
    fails as a deadlock."""
    with db.session() as session:
        section, _ = Directory(session).add_section("Support", email="support@example.com")
        case_id = CaseService(session, Actor.system()).create(section, "Printer").id
    robot = "robot@partner.example"
    cfg = config(25)
    failed: list[BaseException] = []

    def change_and_queue(session: Session) -> None:
        case = session.get(Case, case_id)
        assert case is not None
        case.message_count += 1  # written when the transaction next flushes
        item = Outgoing(message(robot), [robot], case_id=case_id)
        outbox.enqueue(session, [item], cfg, automatic=False, now=T0)

    def first() -> None:
        try:
            with db.session() as session:
                change_and_queue(session)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            failed.append(exc)

    with db.session() as second:
        case = second.get(Case, case_id)
        assert case is not None
        case.message_count += 1
        second.flush()  # this transaction now holds the case's row
        other = threading.Thread(target=first)
        other.start()
        other.join(1.0)  # it waits for that row (or, the defect, for it after taking the locks)
        item = Outgoing(message(robot), [robot], case_id=case_id)
        outbox.enqueue(second, [item], cfg, automatic=False, now=T0)
    other.join(30)
    assert failed == []
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 2
