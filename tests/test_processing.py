"""Processing: the spool drained into cases in batches — failures, quarantine, rules, the log,
a relay that is down at first, and mail polled from a real Dovecot over IMAP."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path

import pytest
from conversation import STAFF, SUPPORT, World, case_id_of, mail
from dovecot import Dovecot
from processing_helpers import support_processor
from smtp_sink import smtp_sink

from mailgated.config import MailboxConfig
from mailgated.db import Database
from mailgated.intake.spool import Envelope, Spool
from mailgated.models import Case, Outbox, StoredMessage
from mailgated.process import Processor
from mailgated.threading import apply


@pytest.fixture
def processor(db: Database, tmp_path: Path) -> Processor:
    staff = [("demo", "Demo User", STAFF["demo"]), ("boss", "Big Boss", STAFF["boss"])]
    return support_processor(db, tmp_path, SUPPORT, staff=staff, max_failures=2)


def spool(processor: Processor, raw: bytes, sender: str = "p@partner.example") -> str:
    return processor.spool.put(raw, Envelope("smtp", sender, [SUPPORT]))


def partner_mail(n: int) -> bytes:
    return mail(f"p{n}@partner{n}.example", SUPPORT, f"Request {n}", f"Text {n}").as_bytes()


def test_a_failing_message_rolls_back_only_itself_then_is_quarantined(
    processor: Processor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A message that fails rolls back alone; the batch commits and it is quarantined at
    max_failures. (On PostgreSQL the rolled-back first attempt at the batch used case
    numbers: sequences are not transactional, so the log names the case as stored.)"""
    original = apply.ROLES["new"]

    def new_case(step: apply.Handling) -> apply.Outcome:
        if step.mail.subject == "Request 2":
            raise RuntimeError("boom")
        return original(step)

    monkeypatch.setitem(apply.ROLES, "new", new_case)
    for n in (1, 2, 3):
        spool(processor, partner_mail(n))
    with caplog.at_level(logging.INFO, logger="mailgated.process"):
        results = processor.run_once()
    assert [r.status for r in results] == ["done", "retry", "done"]
    with processor.db.session() as session:
        assert sorted(c.subject for c in session.query(Case)) == ["Request 1", "Request 3"]
        assert session.query(Outbox).count() == 4  # forward + acknowledgement, twice
        first = session.query(Case).filter_by(subject="Request 1").one().id
    [waiting] = processor.spool.entries()
    assert (waiting.envelope.failures, waiting.envelope.reason) == (1, "RuntimeError: boom")

    assert [r.status for r in processor.run_once()] == ["quarantine"]  # max_failures = 2
    [bad] = processor.spool.entries(quarantined=True)
    assert bad.subject == "Request 2" and bad.envelope.reason == "RuntimeError: boom"
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        ": smtp <" in line and f"from <p1@partner1.example>: case {first}, new case [new:" in line
        for line in lines
    ), lines
    assert any("failed, will retry: RuntimeError: boom" in line for line in lines)


def test_unreadable_mail_is_quarantined_with_the_reason(processor: Processor) -> None:
    """Unreadable mail goes to quarantine with the reason."""
    nested = "Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for depth in range(1, 120):  # one level deeper each time: past the cap of 100
        nested += f"--b{depth - 1}\r\nContent-Type: multipart/mixed; boundary=b{depth}\r\n\r\n"
    spool(processor, b"From: x@partner.example\r\nSubject: deep\r\n" + nested.encode())
    assert [r.status for r in processor.run_once()] == ["quarantine"]
    [bad] = processor.spool.entries(quarantined=True)
    assert bad.envelope.reason == "MIME nesting deeper than 100 levels"


def test_mail_for_no_section_is_quarantined(processor: Processor) -> None:
    """Mail for no section goes to quarantine, saying so."""
    raw = mail("p@partner.example", "sales@elsewhere.example", "Lost").as_bytes()
    processor.spool.put(raw, Envelope("smtp", "p@partner.example", ["sales@elsewhere.example"]))
    assert [r.status for r in processor.run_once()] == ["quarantine"]
    [bad] = processor.spool.entries(quarantined=True)
    assert bad.envelope.reason == "no section address among the recipients and no default section"


def test_duplicate_in_one_batch_and_across_batches_is_recorded_once(processor: Processor) -> None:
    """A duplicate in the same batch or a later one is recorded once."""
    raw = partner_mail(7)
    spool(processor, raw)
    spool(processor, b"Received: from a by b; Mon, 1 Dec 2026 10:00:00 +0000\r\n" + raw)
    assert [r.status for r in processor.run_once()] == ["done", "duplicate"]
    spool(processor, raw)
    assert [r.status for r in processor.run_once()] == ["duplicate"]
    with processor.db.session() as session:
        assert session.query(Case).count() == 1
        assert session.query(StoredMessage).count() == 1


def test_event_rules_run_in_the_same_transaction(processor: Processor, mg_db: None) -> None:
    """A rule that gives new cases to demo: the forward goes to demo, not the manager."""
    with processor.db.session() as session:
        assert session.query(Case).count() == 0
    spool(processor, partner_mail(9))
    processor.run_once()
    with processor.db.session() as session:
        case = session.query(Case).one()
        assert case.user is not None and case.user.login == "demo"
        forward = session.query(Outbox).filter_by(kind="forward").one()
        assert forward.recipients == ["demo@mycompany.example"]


@pytest.fixture
def mg_db(db_url: str, tmp_path: Path, processor: Processor) -> None:
    from conftest import MG

    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "to demo"\n[rule.when]\nstate_to = "draft"\n[rule.then]\nuser = "demo"\n'
    )
    MG(tmp_path, db_url)("rule", "load", str(rules))


def test_large_messages_are_processed_a_few_at_a_time(db: Database, tmp_path: Path) -> None:
    """A batch stops growing once its messages hold `batch_bytes` (memory is bounded by
    bytes, not by count); one message larger than that is a batch of its own; all are
    processed."""
    from mailgated.config import ProcessingConfig

    limits = ProcessingConfig(batch_size=200, batch_bytes=250_000)
    processor = support_processor(db, tmp_path, SUPPORT, processing=limits)
    spool(processor, mail("q@huge.example", SUPPORT, "Huge", "y" * 400_000).as_bytes())
    big = "x" * 100_000  # ~100 kB of text each
    for n in range(5):
        spool(processor, mail(f"p{n}@partner{n}.example", SUPPORT, f"Big {n}", big).as_bytes())
    sizes = []
    while results := processor.run_once():
        assert all(r.status == "done" for r in results)
        sizes.append(len(results))
    assert sizes == [1, 3, 2]  # 400 kB alone; 3 × 100 kB reach 250 kB; the last two
    with processor.db.session() as session:
        assert session.query(Case).count() == 6


def test_a_watcher_a_rule_adds_gets_the_copy_of_the_next_message_in_the_same_batch(
    db_url: str, tmp_path: Path, processor: Processor
) -> None:
    """A rule adds a watcher to each new case; the partner's second message, in the same
    batch, is copied to that watcher."""
    from conftest import MG

    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "audit"\n[rule.when]\nstate_to = "draft"\n'
        '[rule.then]\nadd_watchers = ["audit@partner9.example"]\n'
    )
    MG(tmp_path, db_url)("rule", "load", str(rules))
    first = mail("p9@partner9.example", SUPPORT, "Request 9", "Text 9")
    second = mail(
        "p9@partner9.example",
        SUPPORT,
        "Re: Request 9",
        "More text",
        headers={"In-Reply-To": first["Message-ID"]},
    )
    spool(processor, first.as_bytes())
    spool(processor, second.as_bytes())
    assert [r.status for r in processor.run_once()] == ["done", "done"]
    with processor.db.session() as session:
        [case] = session.query(Case).all()
        assert [w.email for w in case.watchers] == ["audit@partner9.example"]
        copies = session.query(Outbox).filter_by(kind="copy").all()
        assert [c.recipients for c in copies] == [["audit@partner9.example"]]
        assert b"More text" in copies[0].raw


# --- through the daemon ----------------------------------------------------------


def test_relay_down_at_first_delivers_every_message_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    """With the relay down at first, every queued mail is delivered exactly once later."""
    world = World(db_url, tmp_path)
    world.directory()
    with world.running(relay=False):
        for n in range(3):
            world.send(mail(f"q{n}@relay{n}.example", SUPPORT, f"While down {n}"))
        deadline = time.monotonic() + 30
        while not (
            len(rows := world.outbox()) == 6 and all(r["attempts"] >= 1 for r in rows)
        ):  # every message tried once and failed
            assert time.monotonic() < deadline, world.outbox()
            time.sleep(0.05)
        assert {r["state"] for r in world.outbox()} == {"queued"}
        with smtp_sink(world.relay_port) as (sink, _):
            world.sink = sink
            world.settle()
            ids = Counter(r.message["Message-ID"] for r in sink.messages)
    assert len(ids) == 6 and set(ids.values()) == {1}
    assert {r["state"] for r in world.outbox()} == {"sent"}
    world.db.dispose()


def test_mail_polled_from_dovecot_over_imap(db_url: str, tmp_path: Path, dovecot: Dovecot) -> None:
    """Mail polled from Dovecot over IMAP becomes a case and is answered."""
    box = MailboxConfig(
        section="Support",
        url=f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX",
        password_file=str(dovecot.password_file(tmp_path)),
        interval=1,
    )
    world = World(db_url, tmp_path, mailbox=(box,))
    world.directory()
    partner = "rita@imap.example"
    dovecot.append(mail(f"Rita <{partner}>", SUPPORT, "Sent by IMAP", "Via Dovecot.").as_bytes())
    with world.running():
        ack = world.wait_for(partner)[0]
        case = world.case(case_id_of(ack))
        assert case["history"][-1]["body"] == "Via Dovecot."
        assert case["email_from"] == partner
        world.settle()
    assert all("\\Seen" in flags for _, flags in dovecot.inbox())
    world.db.dispose()


def test_processing_can_be_switched_off(db_url: str, tmp_path: Path) -> None:
    """With workers = 0 the daemon only spools, and processing later catches up."""
    world = World(db_url, tmp_path)
    world.config = dataclasses.replace(
        world.config, processing=dataclasses.replace(world.config.processing, workers=0)
    )
    world.directory()
    with world.running():
        world.send(mail("s@off.example", SUPPORT, "Stays spooled"))
        assert len(Spool(tmp_path / "spool").entries()) == 1
    world.db.dispose()


def test_a_mail_we_cannot_write_out_fails_alone_not_its_batch(processor: Processor) -> None:
    """A forwarded message/rfc822 part whose 8-bit multipart has no boundary cannot be
    serialised into the forward; that message fails by itself, the others are done."""
    broken = (
        b"From: p9@partner9.example\r\nTo: " + SUPPORT.encode() + b"\r\n"
        b"Subject: Fwd: broken\r\nMessage-ID: <broken-9@partner9.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
        b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee below\r\n"
        b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=gone\r\n"
        b"\r\n\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xff\xfe\r\n--outer--\r\n"
    )
    spool(processor, partner_mail(8))
    spool(processor, broken)
    spool(processor, partner_mail(10))
    statuses = [r.status for r in processor.run_once()]
    assert statuses[0] == statuses[2] == "done", statuses
    with processor.db.session() as session:
        subjects = {c.subject for c in session.query(Case)}
    assert {"Request 8", "Request 10"} <= subjects


def test_a_cc_that_is_no_address_is_not_a_watcher(processor: Processor) -> None:
    """A Cc that is no address ('Sales Team') is skipped, not an error."""
    raw = mail("p11@partner11.example", SUPPORT, "Cc words", cc="Sales Team").as_bytes()
    spool(processor, raw)
    assert [r.status for r in processor.run_once()] == ["done"]
    with processor.db.session() as session:
        [case] = session.query(Case).all()
        assert [w.email for w in case.watchers] == []
