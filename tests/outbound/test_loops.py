"""The loop breaker: robots that add no automatic-mail headers cannot make us send without
bound, a flood from one sender cannot flood the staff, and reminders are not auto-replies.

Time is simulated: the processor and the sender take the clock from the test, the
relay is a real aiosmtpd sink, and the robots answer every mail the relay gets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import mailbox
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import MG
from conversation import SUPPORT, mail, reply
from smtp_sink import SinkHandler, free_port, smtp_sink

from mailgated.app import App
from mailgated.config import Config, OutboundConfig, SecurityConfig, SpoolConfig
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.intake.spool import Envelope
from mailgated.models import Case, History, Outbox
from mailgated.outbound import outbox
from mailgated.outbound.sender import Sender
from mailgated.process import Processor

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
BOSS = "boss@mycompany.example"
ROBOT = "robot@partner.example"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def relay() -> Iterator[tuple[SinkHandler, int]]:
    port = free_port()
    with smtp_sink(port) as (sink, _):
        yield sink, port


def setup(db: Database, tmp_path: Path, port: int, clock: Clock, **outbound: object) -> Processor:
    with db.session() as session:
        d = Directory(session)
        d.add_user("boss", "Big Boss", BOSS)
        d.add_section("Support", email=SUPPORT, manager="boss")
    config = Config(
        outbound=dataclasses.replace(
            OutboundConfig(relay=f"127.0.0.1:{port}", timeout=5, site_id="test-site"), **outbound
        ),
        spool=SpoolConfig(path=str(tmp_path / "spool")),
        security=SecurityConfig(secret_file=str(tmp_path / "secret.key")),
    )
    return App(config, db=db, secret=SECRET, now=clock).processor


def put(processor: Processor, message: EmailMessage) -> None:
    sender = message["From"].addresses[0].addr_spec
    processor.spool.put(message.as_bytes(), Envelope("smtp", sender, [SUPPORT]))


def robot_answer(received: EmailMessage, frm: str, text: str) -> EmailMessage:
    """An auto-responder that adds no Auto-Submitted or Precedence header."""
    answer = reply(received, frm, text, quote=False)
    assert answer["Auto-Submitted"] is None and answer["Precedence"] is None
    return answer


async def test_two_robots_for_ten_minutes_stay_under_the_cap(
    db: Database, tmp_path: Path, relay: tuple[SinkHandler, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A partner auto-responder and a staff out-of-office rule answering each other through
    one case for 10 simulated minutes: at most 2 × loop_case_limit mails, the rest held,
    the case says so and the log warns."""
    sink, port = relay
    clock = Clock()
    processor = setup(db, tmp_path, port, clock)
    limit = processor.config.outbound.loop_case_limit
    put(processor, mail(ROBOT, SUPPORT, "Order 4711", "Where is my order?"))
    seen = 0
    async with Sender(db, processor.config.outbound) as sender:
        with caplog.at_level(logging.WARNING, logger="mailgated.outbound"):
            while clock.now < T0 + dt.timedelta(minutes=10):
                processor.drain()
                await sender.run_once(clock.now)
                for received in sink.messages[seen:]:
                    to = received.rcpt_tos[0]
                    if to == ROBOT:
                        put(processor, robot_answer(received.message, ROBOT, "I am away."))
                    elif to == BOSS:
                        put(processor, robot_answer(received.message, BOSS, "Out of office."))
                seen = len(sink.messages)
                clock.now += dt.timedelta(seconds=5)
    assert 2 * limit - 2 <= len(sink.messages) <= 2 * limit  # without the breaker: 120
    with db.session() as session:
        held = session.query(Outbox).filter(Outbox.state == "held").all()
        assert held and all("loop_case_limit" in (r.last_error or "") for r in held)
        [case] = session.query(Case).all()
        notes = [h.body for h in session.query(History).filter(History.kind == "held")]
    assert len(notes) == len(held)
    assert f"about case {case.id}" in notes[0] and f"outbox {held[0].id}" in notes[0]
    assert any("held" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


async def test_a_held_mail_goes_out_when_released(
    db: Database, tmp_path: Path, relay: tuple[SinkHandler, int]
) -> None:
    """`outbox retry` on a held mail sends it: held is a state, not a loss."""
    sink, port = relay
    clock = Clock()
    processor = setup(db, tmp_path, port, clock, loop_case_limit=1)
    first = mail(ROBOT, SUPPORT, "Order 1", "One.")
    put(processor, first)
    processor.drain()
    put(processor, reply(first, ROBOT, "Two.", quote=False))
    processor.drain()  # the second forward to the manager is held
    with db.session() as session:
        [held] = session.query(Outbox).filter(Outbox.state == "held").all()
        assert held.recipients == [BOSS]
    with db.session() as session:
        outbox.retry(session, held.id, clock.now)
    async with Sender(db, processor.config.outbound) as sender:
        await sender.run_once(clock.now)
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == [BOSS, BOSS, ROBOT]


async def test_a_flood_from_one_sender_does_not_flood_the_manager(
    db: Database, tmp_path: Path, relay: tuple[SinkHandler, int]
) -> None:
    """Many mails from one address with different subjects (each a new case) give the
    manager at most loop_sender_limit forwards per hour (issue 12 item 8)."""
    sink, port = relay
    clock = Clock()
    processor = setup(db, tmp_path, port, clock, loop_sender_limit=15)
    for n in range(40):
        put(processor, mail("noreply@flood.example", SUPPORT, f"Alert {n}", "Disk full."))
    processor.drain()
    with db.session() as session:
        assert session.query(Case).count() == 40  # every message is still a case
        to_boss = session.query(Outbox).filter(Outbox.to_addr == BOSS)
        states = sorted(r.state for r in to_boss)
    assert states.count("queued") == 15 and states.count("held") == 25


@pytest.mark.parametrize("notify", [False, True])
def test_import_sends_no_mail_unless_notify(
    db: Database, db_url: str, tmp_path: Path, relay: tuple[SinkHandler, int], notify: bool
) -> None:
    """Importing archived mail makes cases that say they were imported and mails nobody;
    --notify sends what new mail would (issue 12 item 10)."""
    _, port = relay
    processor = setup(db, tmp_path, port, Clock())
    box = mailbox.mbox(tmp_path / "old.mbox")
    first = mail("old@customer.example", SUPPORT, "Archived 1", "Old question.")
    box.add(first)
    box.add(reply(first, "old@customer.example", "Old follow-up.", quote=False))
    box.add(mail("other@customer2.example", SUPPORT, "Archived 2", "Another."))
    box.close()
    config = tmp_path / "mailgated.toml"
    config.write_text(f'[spool]\npath = "{tmp_path / "spool"}"\n')
    mg = MG(tmp_path, db_url, config=config)
    mg("import", "mbox", str(tmp_path / "old.mbox"), "--section", "Support", "--quiet",
       *(["--notify"] if notify else []))  # fmt: skip
    processor.drain()
    with db.session() as session:
        assert session.query(Case).count() == 2
        notes = [h.body for h in session.query(History).filter(History.kind == "import")]
        queued = session.query(Outbox).count()
    assert len(notes) == 3 and all(f"imported from {tmp_path / 'old.mbox'}" in n for n in notes)
    if notify:
        assert queued == 5  # 2 acknowledgements, 3 forwards to the manager
        assert all("mail sent as for new mail (--notify)" in n for n in notes)
    else:
        assert queued == 0
        assert all(n.endswith("; no mail sent") for n in notes)
