"""Processing in worker processes: the spool drained by children of the daemon, a worker
killed mid-batch put back and its messages processed exactly once, a clean stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conversation import SUPPORT, mail
from sqlalchemy import func, select

from mailgated.config import Config, DatabaseConfig, ProcessingConfig, SecurityConfig, SpoolConfig
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.intake.spool import Envelope, Spool
from mailgated.models import Case, StoredMessage
from mailgated.workers import WorkerPool


def pool_on(
    db: Database,
    tmp: Path,
    workers: int,
    batch_size: int,
    on_queued: Callable[[], None] = lambda: None,
) -> tuple[Spool, WorkerPool]:
    """A section Support on `db`, a spool under `tmp`, and a pool of `workers` (not started)."""
    with db.session() as session:
        d = Directory(session)
        d.add_user("boss", "Big Boss", "boss@mycompany.example")
        d.add_section("Support", email=SUPPORT, manager="boss")
    config = Config(
        database=DatabaseConfig(url=db.engine.url.render_as_string(hide_password=False)),
        spool=SpoolConfig(path=str(tmp / "spool")),
        security=SecurityConfig(secret_file=str(tmp / "secret.key")),
        processing=ProcessingConfig(poll_interval=0.05, batch_size=batch_size),
    )
    return Spool(config.spool.path), WorkerPool(config, workers, on_queued)


def spool_requests(spool: Spool, n: int) -> None:
    for i in range(n):
        raw = mail(f"p{i}@partner{i}.example", SUPPORT, f"Request {i}", f"Text {i}").as_bytes()
        spool.put(raw, Envelope("smtp", f"p{i}@partner{i}.example", [SUPPORT]))


def counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        stored = session.scalar(select(func.count()).select_from(StoredMessage)) or 0
        cases = session.scalar(select(func.count()).select_from(Case)) or 0
    return stored, cases


async def until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_workers_drain_the_spool_into_cases_and_wake_the_sender(
    db: Database, tmp_path: Path
) -> None:
    """Two worker processes turn 40 spooled requests into 40 cases and say mail was queued."""
    woken: list[int] = []
    spool, pool = pool_on(db, tmp_path, 2, batch_size=5, on_queued=lambda: woken.append(1))
    await pool.start()
    try:
        spool_requests(spool, 40)
        pool.wake()
        await until(lambda: counts(db) == (40, 40))
        await until(lambda: bool(woken))
        processes = [w.process for w in pool.workers.values()]
        pids = {p.pid for p in processes}
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        await pool.stop()
    assert not spool.entries()
    assert all(p.poll() is not None for p in processes)


async def test_a_worker_killed_mid_batch_is_restarted_and_its_messages_processed_once(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL while a worker holds claimed files: they go back, are processed once."""
    spool, pool = pool_on(db, tmp_path, 1, batch_size=200)
    spool_requests(spool, 150)
    await pool.start()
    try:
        claims = spool.path / "cur" / "0"
        await until(lambda: claims.is_dir() and any(claims.iterdir()), timeout=30)
        victim = pool.workers[0].process
        os.kill(victim.pid or 0, signal.SIGKILL)
        await until(lambda: pool.workers[0].process is not victim, timeout=30)
        await until(lambda: counts(db)[0] == 150, timeout=120)
        await asyncio.sleep(0.5)  # anything processed twice would show now
        assert counts(db) == (150, 150)
    finally:
        await pool.stop()
    assert "processing worker 0" in caplog.text and "died" in caplog.text
    assert not spool.entries()


async def test_stop_lets_each_worker_finish_and_leaves_nothing_claimed(
    db: Database, tmp_path: Path
) -> None:
    """A stop during processing: every message is either recorded or back in new/."""
    spool, pool = pool_on(db, tmp_path, 2, batch_size=10)
    spool_requests(spool, 60)
    await pool.start()
    await until(lambda: counts(db)[0] > 0, timeout=30)
    await pool.stop()
    stored, _ = counts(db)
    left = spool.entries()
    assert all(e.state == "new" for e in left)
    assert stored + len(left) == 60


def test_a_workers_long_log_line_and_queued_mail_reach_the_daemon_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 300 kB log record (a long traceback) crosses the worker's pipe whole, in order with
    the "mail queued" signal, though the pipe holds 64 kB and is read in pieces."""
    import logging
    import logging.handlers
    import threading

    from mailgated.workers import Up, Worker

    woken: list[int] = []
    config = Config(spool=SpoolConfig(path=str(tmp_path / "spool")))
    pool = WorkerPool(config, 1, lambda: woken.append(1))
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    worker = Worker(0, None, -1, read_end)  # type: ignore[arg-type]  # no process needed
    up = Up(write_end)
    long_line = "x" * 300_000
    handler = logging.handlers.QueueHandler(up)  # type: ignore[arg-type]
    record = logging.LogRecord("mailgated.process", logging.WARNING, "", 0, long_line, (), None)

    def worker_side() -> None:
        handler.emit(record)
        up.send(b"")
        os.close(write_end)

    writer = threading.Thread(target=worker_side)
    writer.start()
    with caplog.at_level(logging.INFO, logger="mailgated.process"):
        while pool._read(worker) is not False:
            time.sleep(0.001)
    writer.join()
    os.close(read_end)
    lines = [r.getMessage() for r in caplog.records if r.name == "mailgated.process"]
    assert lines == [long_line]
    assert woken == [1] and not worker.frames


def test_the_default_number_of_workers_is_one_on_sqlite_and_one_per_core_on_postgresql(
    db: Database, tmp_path: Path
) -> None:
    """Unset, `[processing] workers` is 1 on SQLite (a second writer only waits for the
    lock) and the number of cores on PostgreSQL; a configured number is kept, 0 included."""
    from mailgated.app import App

    spool = SpoolConfig(path=str(tmp_path / "spool"))
    default = App(Config(spool=spool), db=db, secret=b"s" * 32)
    expected = 1 if db.engine.dialect.name == "sqlite" else (os.cpu_count() or 1)
    assert default.workers() == expected
    for configured in (0, 3):
        config = Config(spool=spool, processing=ProcessingConfig(workers=configured))
        assert App(config, db=db, secret=b"s" * 32).workers() == configured


async def test_start_returns_once_every_worker_is_ready_or_has_died(
    db: Database, tmp_path: Path
) -> None:
    """start() waits for each worker's READY (so systemd hears READY=1 when processing
    runs), each runs nicer than the daemon, and a worker that cannot start does not hold
    it up: it is restarted meanwhile."""
    _, pool = pool_on(db, tmp_path, 2, batch_size=5)
    await pool.start()
    try:
        assert all(w.ready for w in pool.workers.values())
        # and nicer than the daemon ([processing] nice, 10): intake and sending run first
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        for worker in pool.workers.values():
            assert os.getpriority(os.PRIO_PROCESS, worker.process.pid) == min(ours + 10, 19)
    finally:
        await pool.stop()
    broken = dataclasses.replace(
        pool.config, database=DatabaseConfig(url="nosuchdriver://nowhere/db")
    )
    failing = WorkerPool(broken, 1, lambda: None)
    try:
        await asyncio.wait_for(failing.start(), timeout=30)
        assert not failing.workers[0].ready
    finally:
        await failing.stop()


def test_a_workers_processor_clears_each_batchs_files_away_as_it_commits(
    db: Database, tmp_path: Path
) -> None:
    """In a worker (an App with a slot) each committed batch's spool files leave its
    `cur/` folder for reuse in `free/` before the next batch is claimed; every message is
    recorded once."""
    from mailgated.app import App

    spool, pool = pool_on(db, tmp_path, 1, batch_size=7)
    spool_requests(spool, 30)
    processor = App(pool.config, db=db, secret=b"s" * 32, slot=0).processor
    cur, free, seen = spool.path / "cur" / "0", spool.path / "free", 0
    for size in (7, 7, 7, 7, 2):
        assert len(processor.run_once()) == size
        seen += size
        assert not any(cur.iterdir())
        assert len(list(free.iterdir())) == seen
    assert counts(db) == (30, 30)
    assert not spool.entries()


def test_settle_heap_hides_what_a_process_has_built_from_the_collector() -> None:
    """After start-up a process's own objects leave the collector's walks (`gc.freeze`)."""
    script = (
        "import gc, mailgated.app; from mailgated.workers import settle_heap;"
        "before = gc.get_freeze_count(); settle_heap(); print(before, gc.get_freeze_count())"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 10_000
