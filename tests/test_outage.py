"""While the database is down: intake keeps accepting, the loops back off quietly, nothing moves.

Issue 12 ("While the database is down"): one WARNING when the outage starts,
one INFO when it ends, no traceback per retry, doubling capped backoff, and
the spool files processing had claimed stay where they are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from conftest import engine_url
from conversation import SUPPORT, WAIT, World, mail
from outage import FlakyDatabase
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from mailgated.app import App
from mailgated.config import Config, SecurityConfig, SpoolConfig
from mailgated.db import unavailable
from mailgated.directory import Directory
from mailgated.intake.spool import Envelope
from mailgated.models import Outbox
from mailgated.periodic import Backoff, Outage, Periodic
from mailgated.process import DatabaseUnavailable


def loop_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("mailgated")]


def wait_until(what: str, check: object) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {WAIT}s for {what}"
        time.sleep(0.05)


def idle(world: World) -> bool:
    """The spool is empty and nothing is queued."""
    spool = world.tmp / "spool"
    if any(p.is_file() for d in ("new", "cur") for p in (spool / d).rglob("*")):
        return False
    with world.db.session() as session:
        return not session.scalar(select(func.count()).where(Outbox.state == "queued"))


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    """Retries wait 1, 2, 4 … seconds, never more than the cap, and 1 s again after a success."""
    backoff = Backoff(first=1.0, most=30.0)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next() == 1


async def test_a_loop_logs_an_outage_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five failed attempts give one WARNING (no traceback), the recovery one INFO."""
    caplog.set_level(logging.DEBUG, logger="mailgated")
    attempts = []
    recovered = asyncio.Event()

    async def step() -> bool:
        attempts.append(1)
        if len(attempts) <= 5:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        recovered.set()
        return False

    loop = Periodic(
        "sender", step, interval=10, backoff=Backoff(0.01, 0.02), outage=Outage("database"),
        is_outage=unavailable,
    )  # fmt: skip
    await loop.start()
    await asyncio.wait_for(recovered.wait(), 10)
    await loop.stop()
    warnings = [r for r in loop_records(caplog) if r.levelno == logging.WARNING]
    infos = [r for r in loop_records(caplog) if r.levelno == logging.INFO]
    assert [r.getMessage() for r in warnings] == [
        "database unavailable (sender): connection refused; retrying with backoff"
    ]
    assert len(infos) == 1 and "database available again" in infos[0].getMessage()
    assert "(5 failed attempt(s))" in infos[0].getMessage()
    assert not any(r.exc_info for r in loop_records(caplog))


async def test_an_unexpected_failure_is_logged_with_its_traceback_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug is an ERROR with the traceback the first time, not at every retry."""
    caplog.set_level(logging.INFO, logger="mailgated")
    attempts = []
    done = asyncio.Event()

    async def step() -> bool:
        attempts.append(1)
        if len(attempts) <= 3:
            raise KeyError("boom")
        done.set()
        return False

    loop = Periodic("rules timer", step, interval=10, backoff=Backoff(0.01, 0.02))
    await loop.start()
    await asyncio.wait_for(done.wait(), 10)
    await loop.stop()
    errors = [r for r in loop_records(caplog) if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert any("works again after 3 failure(s)" in r.getMessage() for r in caplog.records)


def test_a_batch_claimed_when_the_database_went_away_stays_claimed(
    db_url: str, tmp_path: Path
) -> None:
    """The claimed files stay in cur/ (no churn back to new/) until the database answers."""
    flaky = FlakyDatabase(db_url, tmp_path)
    with flaky.db.session() as session:
        Directory(session).add_section("Support", email=SUPPORT)
    config = Config(
        spool=SpoolConfig(path=str(tmp_path / "spool")),
        security=SecurityConfig(secret_file=str(tmp_path / "secret.key")),
    )
    processor = App(config, db=flaky.db).processor
    for n in range(3):
        raw = mail(f"p{n}@partner.example", SUPPORT, f"Order {n}", "Please ship.").as_bytes()
        processor.spool.put(raw, Envelope("smtp", f"p{n}@partner.example", [SUPPORT]))
    flaky.cut()
    with pytest.raises(DatabaseUnavailable) as down:
        processor.run_once()
    claimed = sorted(p.name for p in (tmp_path / "spool" / "cur").rglob("*") if p.is_file())
    assert len(claimed) == 3 and not any((tmp_path / "spool" / "new").iterdir())
    with pytest.raises(DatabaseUnavailable) as again:
        processor.process(down.value.claimed)  # the same batch again, still in cur/
    assert claimed == sorted(p.name for p in (tmp_path / "spool" / "cur").rglob("*") if p.is_file())
    flaky.restore()
    assert {r.status for r in processor.process(again.value.claimed)} == {"done"}
    assert processor.spool.entries() == []
    flaky.db.dispose()


@pytest.fixture(params=["postgresql"])
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL only: every process of the daemon (workers too) loses it at once through
    the proxy, where a moved SQLite file would still be open in the workers."""
    return engine_url(request, tmp_path)


def test_the_daemon_rides_out_a_database_outage(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mail sent while the database is down is accepted, waits in the spool and becomes
    cases afterwards; the outage costs one WARNING and one INFO per process, no traceback."""
    caplog.set_level(logging.INFO)  # the root's level: the workers log at the level it has
    flaky = FlakyDatabase(pg_url, tmp_path)
    world = World(flaky.url, tmp_path)
    world.db.dispose()
    world.db = flaky.db  # the daemon's own engine is the one that loses its database
    world.directory()
    with world.running():
        world.send(mail("first@partner.example", SUPPORT, "Before", "Before the outage."))
        world.wait_for("first@partner.example")
        wait_until("an idle daemon", lambda: idle(world))  # not world.settle(): the CLI
        caplog.clear()  # run in-process would set up logging again, without caplog's handler
        flaky.cut()
        for n in range(3):
            world.send(mail(f"p{n}@partner.example", SUPPORT, f"During {n}", "Still there?"))
        spool = tmp_path / "spool"

        def where() -> list[str]:
            return sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file())

        wait_until("the outage warning", lambda: "database unavailable" in caplog.text)
        wait_until("a claim", lambda: any(p.startswith("cur/") for p in where()))
        time.sleep(1)
        before = where()
        time.sleep(3)  # several retries' worth of time: the files stay where they are
        assert where() == before
        flaky.restore()
        for n in range(3):
            world.wait_for(f"p{n}@partner.example")
        wait_until("the recovery line", lambda: "database available again" in caplog.text)
        wait_until("an idle daemon", lambda: idle(world))
    records = loop_records(caplog)
    processes = {r.process for r in records}
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert all("database unavailable" in r.getMessage() for r in warnings), warnings
    assert sorted(r.process for r in warnings) == sorted({r.process for r in warnings})
    back = [r for r in records if "database available again" in r.getMessage()]
    assert sorted(r.process for r in back) == sorted(r.process for r in warnings)
    assert len(processes) > 1  # the daemon and its processing worker(s)
    assert not any(r.exc_info for r in records)
    assert sorted(c["subject"] for c in world.cases())[-3:] == [f"During {n}" for n in range(3)]
    flaky.db.dispose()
