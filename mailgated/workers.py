"""Processing in worker processes: the daemon's "processing" service supervises them.

`mailgated run` keeps the listeners, pollers, sender and timers on its event loop
and leaves the CPU-heavy part — parse, thread, apply, store — to `[processing]
workers` child processes (default: one per core), so that processing never holds
the listener's GIL and the daemon uses every core.

Each worker is started with the multiprocessing "forkserver" method (forked from a
small server process that imported the processing code once and never ran an event
loop, threads or database connections: a worker starts in milliseconds and inherits
nothing of the daemon's state), builds its own
processing pieces from the configuration (`build_processor`), and claims spool
files into its own `cur/<slot>/` folder, so the claims of a worker that dies are
put back in `new/` at once, without touching the others'.

Talking to a worker takes two pipes: the daemon writes a byte to `wake` when a
message was spooled ("w") or to ask it to stop after the batch in hand ("x"); the
worker writes a byte to `queued` after a batch that queued mail, and the daemon
wakes the sender. Log records come back over a multiprocessing queue and go
through the daemon's own handlers (one log, one format, journald-friendly).

A worker that dies is logged at WARNING and started again (after 1 s, doubling
up to 60 s while it keeps dying within a minute of its start). SIGTERM to a worker
(systemd signals the whole control group on stop) finishes its batch and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import multiprocessing.queues
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailgated.config import Config
from mailgated.periodic import Backoff, Outage

log = logging.getLogger("mailgated.workers")

WAKE, STOP, QUEUED = b"w", b"x", b"q"
STOP_GRACE = 20.0  # seconds a worker has to finish its batch on stop, then it is killed


def build_processor(config: Config, slot: int) -> Any:
    """The pieces one worker needs, built once in the worker by the composition root."""
    from mailgated.app import App

    return App(config, slot=slot).processor


def worker_main(
    config: Config,
    slot: int,
    wake: multiprocessing.connection.Connection,
    queued: multiprocessing.connection.Connection,
    records: multiprocessing.queues.Queue[logging.LogRecord],
    level: int,
) -> None:
    """A worker process: process batches until told to stop (pipe or SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the daemon, which stops us
    stopping = [False]

    def on_term(signum: int, frame: object) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signals_r, signals_w = os.pipe()  # a signal wakes the select() below at once
    os.set_blocking(signals_w, False)
    signal.set_wakeup_fd(signals_w)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon reloads and restarts us
    root = logging.getLogger()
    from mailgated.logs import MessageOnly

    handler = logging.handlers.QueueHandler(records)
    handler.setFormatter(MessageOnly())  # escaped here; time, level, prefix in the daemon
    root.handlers[:] = [handler]
    root.setLevel(level)
    from mailgated.process import DatabaseUnavailable

    processor = build_processor(config, slot)
    interval = config.processing.poll_interval
    held: list[Any] = []  # a batch claimed while the database was down: ours until it answers
    who, outage, backoff = f"worker {slot}", Outage("database"), Backoff(0.5, 60.0)
    wake_fd, queued_fd = wake.fileno(), queued.fileno()
    while not stopping[0]:
        pause = interval
        try:
            results = processor.process(held) if held else processor.run_once()
            held = []
            outage.recovered(who)
            backoff.reset()
        except DatabaseUnavailable as exc:
            held = exc.claimed  # stay in cur/<slot>/, retried as they are
            outage.failed(who, str(exc))
            pause = backoff.next()
            results = []
        except Exception:
            log.exception("worker %d: processing pass failed; retrying", slot)
            pause, results = max(interval, 1.0), []
        if any(r.outcome and r.outcome.mails for r in results):
            with contextlib.suppress(OSError):
                os.write(queued_fd, QUEUED)
        deadline = time.monotonic() + (0.0 if results else pause)
        while not stopping[0]:
            if _wait([wake_fd, signals_r], max(0.0, deadline - time.monotonic())):
                stopping[0] = True
            elif not outage.down or time.monotonic() >= deadline:
                break  # backing off in an outage: a wake-up is no reason to retry sooner
    for claimed in held:  # stopping during an outage: back to new/ for whoever runs next
        processor.spool.release(claimed)
    processor.db.dispose()


def _wait(fds: list[int], seconds: float) -> bool:
    """Sleep until woken (the daemon's pipe, or a signal) or `seconds` pass; True when the
    daemon asked us to stop or is gone (EOF)."""
    ready, _, _ = select.select(fds, [], [], seconds)
    stop = False
    for fd in ready:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            continue
        if fd == fds[0]:
            stop = stop or not data or STOP in data
    return stop


@dataclass
class Worker:
    slot: int
    process: multiprocessing.process.BaseProcess
    wake: multiprocessing.connection.Connection  # our (write) end
    queued: multiprocessing.connection.Connection  # our (read) end
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


class WorkerPool:
    """The daemon service "processing": `count` worker processes, restarted when they die."""

    name = "processing"

    def __init__(
        self,
        config: Config,
        count: int,
        on_queued: Callable[[], None],
        build: Callable[..., None] = worker_main,
    ) -> None:
        self.config = config
        self.count = count
        self.on_queued = on_queued
        self.build = build
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["mailgated.workers", "mailgated.process"])
        self.workers: dict[int, Worker] = {}
        self._stopping = False
        self._records: multiprocessing.queues.Queue[logging.LogRecord] | None = None
        self._listener: logging.handlers.QueueListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restarts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from mailgated.intake.spool import Spool

        self._loop = asyncio.get_running_loop()
        from mailgated.process import prepare_spool

        await asyncio.to_thread(prepare_spool, Spool(self.config.spool.path), self.config)
        self._records = self.context.Queue()
        self._listener = logging.handlers.QueueListener(
            self._records, _Forward(), respect_handler_level=False
        )
        self._listener.start()
        for slot in range(self.count):
            self._spawn(slot)
        log.info("processing in %d worker process(es)", self.count)

    def wake(self) -> None:
        """Something was spooled: wake every idle worker (never blocks the event loop)."""
        for worker in self.workers.values():
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(worker.wake.fileno(), WAKE)

    async def stop(self) -> None:
        """Ask each worker to finish its batch and exit; kill it after STOP_GRACE seconds."""
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        for worker in self.workers.values():
            with contextlib.suppress(OSError):
                os.write(worker.wake.fileno(), STOP)
        await asyncio.gather(*(self._reap(w) for w in list(self.workers.values())))
        self.workers.clear()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        if self._records is not None:
            self._records.close()

    async def restart(self, config: Config) -> None:
        """After a reload: workers finish their batch and new ones start with `config`."""
        old, self.config = list(self.workers.values()), config
        self._stopping = True
        for worker in old:
            with contextlib.suppress(OSError):
                os.write(worker.wake.fileno(), STOP)
        await asyncio.gather(*(self._reap(w) for w in old))
        self._stopping = False
        for worker in old:
            self._spawn(worker.slot)

    # -- internals --------------------------------------------------------------
    def _spawn(self, slot: int, restarts: int = 0) -> None:
        assert self._loop is not None and self._records is not None
        wake_r, wake_w = self.context.Pipe(duplex=False)
        queued_r, queued_w = self.context.Pipe(duplex=False)
        level = logging.getLogger().getEffectiveLevel()
        process = self.context.Process(
            target=self.build,
            args=(self.config, slot, wake_r, queued_w, self._records, level),
            name=f"mailgated-worker-{slot}",
            daemon=True,
        )
        process.start()
        wake_r.close()
        queued_w.close()
        os.set_blocking(wake_w.fileno(), False)
        worker = Worker(slot, process, wake_w, queued_r, restarts=restarts)
        self.workers[slot] = worker
        self._loop.add_reader(queued_r.fileno(), self._on_queued, worker)
        self._loop.add_reader(process.sentinel, self._on_exit, worker)

    def _on_queued(self, worker: Worker) -> None:
        try:
            data = os.read(worker.queued.fileno(), 4096)
        except (BlockingIOError, InterruptedError):
            return
        if not data:  # the worker's end closed: it exited
            assert self._loop is not None
            self._loop.remove_reader(worker.queued.fileno())
            return
        self.on_queued()

    def _on_exit(self, worker: Worker) -> None:
        assert self._loop is not None
        self._loop.remove_reader(worker.process.sentinel)
        if self._stopping or self.workers.get(worker.slot) is not worker:
            return
        self._close(worker)
        code = worker.process.exitcode
        recovered = self._recover(worker.slot)
        quick = time.monotonic() - worker.started < 60
        restarts = worker.restarts + 1 if quick else 0
        delay = min(2.0 ** (restarts - 1), 60.0) if restarts else 0.0
        log.warning(
            "processing worker %d (pid %s) died (exit code %s); %d claimed message(s) back in "
            "the spool; restarting%s",
            worker.slot,
            worker.process.pid,
            code,
            recovered,
            f" in {delay:.0f} s" if delay else "",
        )
        task = self._loop.create_task(self._respawn(worker.slot, delay, restarts))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _respawn(self, slot: int, delay: float, restarts: int) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self._stopping:
            self._spawn(slot, restarts)

    async def _reap(self, worker: Worker) -> None:
        process = worker.process
        deadline = time.monotonic() + STOP_GRACE
        while process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if process.is_alive():
            log.warning("processing worker %d did not stop in %.0f s; killed", worker.slot,
                        STOP_GRACE)  # fmt: skip
            process.kill()
            await asyncio.to_thread(process.join, 5)
        process.join(0)
        assert self._loop is not None
        self._loop.remove_reader(process.sentinel)
        self._close(worker)
        recovered = self._recover(worker.slot)
        if recovered:
            log.info("worker %d: %d claimed message(s) back in the spool", worker.slot, recovered)

    def _close(self, worker: Worker) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(worker.queued.fileno())
        worker.wake.close()
        worker.queued.close()

    def _recover(self, slot: int) -> int:
        from mailgated.intake.spool import Spool

        return Spool(self.config.spool.path).recover(slot)


class _Forward(logging.Handler):
    """Hands a worker's log record to this process's loggers (their handlers and levels)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)
