"""Messages that look alike are told apart by their own bytes; a copy dropped as a duplicate is
listed and counted; stale half-written spool files go at start (issue 12 item 1)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import pytest
from conftest import MG
from intake_helpers import deliver, spool_config
from processing_helpers import support_processor

from mailgated.config import DatabaseConfig
from mailgated.db import Database
from mailgated.models import Case, StoredMessage
from mailgated.process import Processor
from mailgated.workers import WorkerPool

SUPPORT = "support@example.com"


def bare_cr(n: int, body: str = "", sender: str = "alice@partner.example") -> bytes:
    """The issue's shape: a Received: first line, then bare CRs as the only line ends."""
    lines = [
        "Received: from mx.partner.example by mx.example.com; Sun, 6 Dec 2026 01:00:00 +0000",
        f"From: {sender}",
        f"Subject: order {n}",
        f"Message-ID: <order{n}@partner.example>",
        "",
        body or f"Please ship order {n}",
    ]
    return ("\r".join(lines) + "\r").encode()


@pytest.fixture
def processor(db: Database, tmp_path: Path) -> Processor:
    return support_processor(db, tmp_path, SUPPORT)


def delivered(tmp_path: Path, *messages: bytes) -> None:
    config = spool_config(tmp_path)
    for raw in messages:
        assert deliver(config, raw, "--recipient", SUPPORT).returncode == 0


def cases(processor: Processor) -> list[tuple[str, str]]:
    with processor.db.session() as session:
        return sorted((c.subject, c.description or "") for c in session.query(Case))


def test_bare_cr_messages_keep_their_own_message_ids_and_each_becomes_a_case(
    processor: Processor, tmp_path: Path
) -> None:
    """Two different bare-CR messages through `deliver`: two cases with their text, no drop."""
    delivered(tmp_path, bare_cr(77), bare_cr(78, sender="bob@partner.example"))
    assert sorted(e.envelope.message_id for e in processor.spool.entries()) == [
        "<order77@partner.example>",
        "<order78@partner.example>",
    ]
    assert [r.status for r in processor.run_once()] == ["done", "done"]
    assert cases(processor) == [
        ("order 77", "Please ship order 77"),
        ("order 78", "Please ship order 78"),
    ]
    assert processor.spool.counts()["duplicate"] == 0


def test_made_up_message_ids_come_from_the_message_bytes(
    processor: Processor, tmp_path: Path
) -> None:
    """Without a Message-ID, two bare-CR messages get different made-up IDs, a retry the same."""
    first = b"Received: from a by b\rFrom: x@partner.example\rSubject: one\r\rfirst text\r"
    second = first.replace(b"first", b"second")
    delivered(tmp_path, first, second, first)
    ids = [e.envelope.message_id for e in processor.spool.entries()]
    assert ids[0] == ids[2] and ids[0] != ids[1], ids
    assert [r.status for r in processor.run_once()] == ["done", "done", "duplicate"]


def test_same_message_id_with_other_content_is_not_a_duplicate(
    processor: Processor, tmp_path: Path
) -> None:
    """Same Message-ID, different body: both are recorded, nothing is dropped."""
    delivered(tmp_path, bare_cr(77), bare_cr(77, body="Please cancel order 77"))
    assert [r.status for r in processor.run_once()] == ["done", "done"]
    with processor.db.session() as session:
        assert session.query(StoredMessage).count() == 2


def test_a_dropped_duplicate_is_listed_counted_and_logged(
    processor: Processor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same message delivered twice: one case; the copy shows in `spool list --duplicates`."""
    delivered(tmp_path, bare_cr(77))
    processor.run_once()
    delivered(tmp_path, b"Received: from again by mx\r" + bare_cr(77))
    with caplog.at_level(logging.INFO, logger="mailgated.process"):
        assert [r.status for r in processor.run_once()] == ["duplicate"]
    assert len(cases(processor)) == 1
    assert processor.spool.counts() == {
        "new": 0,
        "processing": 0,
        "quarantined": 0,
        "duplicate": 1,
    }
    cli = MG(tmp_path, "sqlite:///unused.db", config=spool_config(tmp_path))
    [row] = cli("spool", "list", "--duplicates", "--json").json()
    assert row["state"] == "duplicate" and row["subject"] == "order 77"
    assert row["reason"] == "already recorded (same Message-ID and content, case 1)"
    assert cli("spool", "list", "--json").json() == []
    assert any("duplicate: already recorded" in r.getMessage() for r in caplog.records)


async def test_start_removes_stale_tmp_files_and_expired_duplicates(
    processor: Processor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write killed mid-way leaves tmp/ files; at start the old ones go (logged), fresh stay."""

    spool_dir = tmp_path / "spool"
    old, fresh = spool_dir / "tmp" / "1.0.dead", spool_dir / "tmp" / "2.0.live"
    expired = spool_dir / "duplicate" / "3.0.gone"
    for path in (old, fresh, expired):
        path.write_bytes(b"{}\nhalf a messa")
    long_ago = time.time() - 20 * 86400
    os.utime(old, (long_ago, long_ago))
    os.utime(expired, (long_ago, long_ago))
    config = dataclasses.replace(processor.config, database=DatabaseConfig(url=processor.db.url))
    service = WorkerPool(config, 1, lambda: None)
    with caplog.at_level(logging.INFO, logger="mailgated.workers"):
        await service.start()
        await service.stop()
    assert sorted(p.name for p in (spool_dir / "tmp").iterdir()) == ["2.0.live"]
    assert not expired.exists()
    logged = [r.getMessage() for r in caplog.records]
    assert any("removed stale spool file tmp/1.0.dead" in line for line in logged), logged


def test_a_processed_file_that_a_power_loss_brings_back_is_set_aside(
    processor: Processor, tmp_path: Path
) -> None:
    """A done file leaves cur/ unsynced: if it comes back after a power loss, it is a duplicate."""
    delivered(tmp_path, bare_cr(78))
    [spooled] = os.listdir(tmp_path / "spool" / "new")
    kept = (tmp_path / "spool" / "new" / spooled).read_bytes()
    assert [r.status for r in processor.run_once()] == ["done"]
    claims = processor.spool.dirs["cur"]
    assert os.listdir(claims) == []
    (claims / spooled).write_bytes(kept)  # the removal never reached the disk

    assert processor.spool.recover() == 1
    assert [r.status for r in processor.run_once()] == ["duplicate"]
    assert len(cases(processor)) == 1
    assert processor.spool.counts()["duplicate"] == 1
