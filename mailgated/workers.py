"""Processing in worker processes: the daemon's "processing" service supervises them.

`mailgated run` keeps the listeners, pollers, sender and timers on its event loop
and leaves the CPU-heavy part — parse, thread, apply, store — to `[processing]
workers` child processes (default: one on SQLite, one per core on PostgreSQL:
`App.workers`), so that processing never holds the listener's GIL and the daemon
uses every core.

Each worker is a fresh interpreter (`python -c "from mailgated.workers import serve;
serve()" …`, started with subprocess, not forked from the daemon): it inherits
nothing of the daemon's state (event loop, threads, database connections), imports
only the processing code, builds its own processing pieces from the configuration
(`build_processor`), and claims spool files into its own `cur/<slot>/` folder, so
the claims of a worker that dies are put back in `new/` at once, without touching
the others'. There is no forkserver and no multiprocessing resource tracker
process beside the workers: with two workers the daemon is three
processes (issue 15: each of those two helpers cost a process of its own, 72 MB
resident together, for a start-up that happens once). The configuration is handed
over in a memory file (`memfd`, pickled: it may hold passwords, so never on the
command line or in the environment).

Talking to a worker takes two pipes: the daemon writes a byte to `wake` when a
message was spooled ("w") or to ask it to stop after the batch in hand ("x"); the
worker writes frames to `up` — READY once it has built its processor (the pool's
`start` waits for every worker's, so the daemon says READY=1 to systemd when processing
runs, not a second before), an empty frame after a batch that queued mail (the daemon
wakes the sender), or a pickled log record, which goes through the daemon's own
handlers (one log, one format, journald-friendly). End of file on `up` means
the worker exited.

A worker runs `[processing] nice` (10) steps nicer than the daemon: when the cores
are busy, the scheduler lets the daemon's listeners and sender run first, so an SMTP
client waits less for its 250 (measured: accept p99 at 150 msg/s 0.8-2.4 ms lower in each of
four paired runs), while processing still gets every cycle they leave.

A worker that dies is logged at WARNING and started again (after 1 s, doubling
up to 60 s while it keeps dying within a minute of its start). SIGTERM to a worker
(systemd signals the whole control group on stop) finishes its batch and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.handlers
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailgated.periodic import Backoff, Outage

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailgated.config import Config
    from mailgated.intake.spool import Spool

log = logging.getLogger("mailgated.workers")

WAKE, STOP = b"w", b"x"
STOP_GRACE = 20.0  # seconds a worker has to finish its batch on stop, then it is killed
# After a batch that was not full, a worker waits this long before it claims the next, so
# that mail arriving steadily is processed in batches (one commit, one lookup of sections,
# staff, rules and loop-breaker windows for many) rather than one message at a time.
GATHER = 0.05
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = 4  # bytes of a frame's length on the `up` pipe; an empty frame: mail was queued
READY = b"ready"  # the frame a worker sends once built (imports done): it can take mail
START_WAIT = 60.0  # seconds start() waits for the workers to be ready before going on
# Ctrl-C reaches the daemon, which stops us: ignored from the first line, not only once the
# imports are done. The last argument: where this package was loaded from, for a daemon run
# from a source tree (appended: an installed package is found first, as in the daemon).
SERVE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "sys.path.append(sys.argv.pop()); from mailgated.workers import serve; serve()"
)


def settle_heap() -> None:
    """Once a process (the daemon, a worker) has built what it keeps (code, configuration,
    engine, templates), move those objects out of the cyclic garbage collector's sight
    (`gc.freeze`): its full collections no longer walk them. A worker, measured with
    callgrind on 300 corpus messages: 3.28 → 3.12 G instructions (-4.9 %)."""
    gc.collect()
    gc.freeze()


def build_processor(config: Config, slot: int) -> Any:
    """The pieces one worker needs, built once in the worker by the composition root."""
    from mailgated.app import App

    return App(config, slot=slot).processor


def prepare_spool(spool: Spool, config: Config) -> None:
    """At start-up, before any worker claims: stale tmp/ files and expired duplicates go,
    claims left by a crash come back to new/ (each logged)."""
    for line in spool.remove_stale(config.spool.keep_duplicates_days):
        log.info("removed stale spool file %s", line)
    recovered = spool.recover()
    if recovered:
        log.info("recovered %d message(s) claimed before a crash", recovered)


class Up:
    """The worker's end of the `up` pipe: length-prefixed frames, written whole (a lock:
    a log record from another thread never cuts into a frame)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, payload: bytes) -> None:
        data = memoryview(len(payload).to_bytes(HEADER, "big") + payload)
        with self.lock:
            while data:
                data = data[os.write(self.fd, data) :]

    def put_nowait(self, record: logging.LogRecord) -> None:
        """QueueHandler's side: the record, already formatted and stripped by `prepare`."""
        self.send(pickle.dumps(record))


def serve() -> None:
    """A worker process's entry: `python -c SERVE SLOT LEVEL WAKE_FD UP_FD CONFIG_FD`."""
    slot, level, wake_fd, up_fd, config_fd = (int(arg) for arg in sys.argv[1:6])
    with open(config_fd, "rb") as fh:
        config = pickle.load(fh)
    worker_main(config, slot, wake_fd, up_fd, level)


def worker_main(config: Config, slot: int, wake_fd: int, up_fd: int, level: int) -> None:
    """A worker process: process batches until told to stop (pipe or SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the daemon, which stops us
    os.nice(config.processing.nice)  # the listeners and the sender answer first
    stopping = [False]

    def on_term(signum: int, frame: object) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signals_r, signals_w = os.pipe()  # a signal wakes the select() below at once
    os.set_blocking(signals_w, False)
    signal.set_wakeup_fd(signals_w)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon reloads and restarts us
    up = Up(up_fd)
    root = logging.getLogger()
    from mailgated.logs import MessageOnly

    handler = logging.handlers.QueueHandler(up)  # type: ignore[arg-type]  # put_nowait only
    handler.setFormatter(MessageOnly())  # escaped here; time, level, prefix in the daemon
    root.handlers[:] = [handler]
    root.setLevel(level)
    from mailgated.process import DatabaseUnavailable

    processor = build_processor(config, slot)
    settle_heap()
    up.send(READY)
    interval = config.processing.poll_interval
    held: list[Any] = []  # a batch claimed while the database was down: ours until it answers
    who, outage, backoff = f"worker {slot}", Outage("database"), Backoff(0.5, 60.0)
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
                up.send(b"")
        if results:  # after a batch that was not full, the next waits a moment to carry more
            wait = GATHER if len(results) < config.processing.batch_size else 0.0
            woken_goes = False  # wake-ups are read (at least once) but hurry nothing
        else:  # idle: a wake-up ends the wait, except while backing off in an outage
            wait, woken_goes = pause, not outage.down
        deadline = time.monotonic() + wait
        while not stopping[0]:
            stopping[0] = _wait([wake_fd, signals_r], max(0.0, deadline - time.monotonic()))
            if woken_goes or time.monotonic() >= deadline:
                break
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
    process: subprocess.Popen[bytes]
    wake: int  # our (write) end
    up: int  # our (read) end
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    frames: bytearray = field(default_factory=bytearray)
    ready: bool = False  # it said so (READY), having built its processor


class WorkerPool:
    """The daemon service "processing": `count` worker processes, restarted when they die."""

    name = "processing"

    def __init__(self, config: Config, count: int, on_queued: Callable[[], None]) -> None:
        self.config = config
        self.count = count
        self.on_queued = on_queued
        self.workers: dict[int, Worker] = {}
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from mailgated.intake.spool import Spool

        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(prepare_spool, Spool(self.config.spool.path), self.config)
        for slot in range(self.count):
            self._spawn(slot)
        took = await self._ready()
        log.info("processing in %d worker process(es), ready in %.1f s", self.count, took)

    def wake(self) -> None:
        """Something was spooled: wake every idle worker (never blocks the event loop)."""
        for worker in self.workers.values():
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(worker.wake, WAKE)

    async def stop(self) -> None:
        """Ask each worker to finish its batch and exit; kill it after STOP_GRACE seconds."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for worker in self.workers.values():
            with contextlib.suppress(OSError):
                os.write(worker.wake, STOP)
        await asyncio.gather(*(self._reap(w) for w in list(self.workers.values())))
        self.workers.clear()

    async def restart(self, config: Config) -> None:
        """After a reload: workers finish their batch and new ones start with `config`."""
        old, self.config = list(self.workers.values()), config
        self._stopping = True
        for worker in old:
            with contextlib.suppress(OSError):
                os.write(worker.wake, STOP)
        await asyncio.gather(*(self._reap(w) for w in old))
        self._stopping = False
        for worker in old:
            self._spawn(worker.slot)
        await self._ready()

    # -- internals --------------------------------------------------------------
    async def _ready(self) -> float:
        """Wait until each worker just started has said READY (a worker starts in about a
        second: the daemon says READY=1 to systemd once processing runs, not before) or
        has exited (it is restarted, with backoff, while intake goes on); seconds taken."""
        began = time.monotonic()
        starting = list(self.workers.values())
        while not all(w.ready or w.process.poll() is not None for w in starting):
            if time.monotonic() - began > START_WAIT:
                log.warning("processing workers not ready after %.0f s; going on", START_WAIT)
                break
            await asyncio.sleep(0.01)
        return time.monotonic() - began

    def _spawn(self, slot: int, restarts: int = 0) -> None:
        assert self._loop is not None
        wake_r, wake_w = os.pipe()
        up_r, up_w = os.pipe()
        config_fd = os.memfd_create("mailgated-worker-config")
        try:
            os.write(config_fd, pickle.dumps(self.config))
            os.lseek(config_fd, 0, os.SEEK_SET)
            level = logging.getLogger().getEffectiveLevel()
            fds = (wake_r, up_w, config_fd)
            process = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(slot), str(level), *map(str, fds), _ROOT],
                stdin=subprocess.DEVNULL,
                pass_fds=fds,
            )
        except BaseException:
            for fd in (wake_w, up_r):
                os.close(fd)
            raise
        finally:
            for fd in (wake_r, up_w, config_fd):
                os.close(fd)
        os.set_blocking(wake_w, False)
        os.set_blocking(up_r, False)
        worker = Worker(slot, process, wake_w, up_r, restarts=restarts)
        self.workers[slot] = worker
        self._loop.add_reader(up_r, self._on_up, worker)

    def _on_up(self, worker: Worker) -> None:
        if self._read(worker) is False:  # end of file: the worker exited
            assert self._loop is not None
            self._loop.remove_reader(worker.up)
            self._on_exit(worker)

    def _read(self, worker: Worker) -> bool | None:
        """Frames from a worker: its log records, and mail queued (the sender is woken).
        True when something was read, None when nothing is there now, False at end of file."""
        try:
            data = os.read(worker.up, 65536)
        except (BlockingIOError, InterruptedError):
            return None
        if not data:
            return False
        frames, queued = worker.frames, False
        frames += data
        while len(frames) >= HEADER:
            size = int.from_bytes(frames[:HEADER], "big")
            if len(frames) < HEADER + size:
                break
            payload = bytes(frames[HEADER : HEADER + size])
            del frames[: HEADER + size]
            if not size:
                queued = True
                continue
            if payload == READY:
                worker.ready = True
                continue
            try:
                record: logging.LogRecord = pickle.loads(payload)
            except Exception:
                log.exception("worker %d: unreadable log record", worker.slot)
                continue
            logging.getLogger(record.name).handle(record)
        if queued:
            self.on_queued()
        return True

    def _on_exit(self, worker: Worker) -> None:
        if self._stopping or self.workers.get(worker.slot) is not worker:
            return
        assert self._loop is not None
        task = self._loop.create_task(self._died(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _died(self, worker: Worker) -> None:
        """A worker's pipe closed by itself: reap it, log it, start another (backing off)."""
        code = await _exit_code(worker.process)
        if self._stopping or self.workers.get(worker.slot) is not worker:
            return
        self._close(worker)
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
        if delay:
            await asyncio.sleep(delay)
        if not self._stopping:
            self._spawn(worker.slot, restarts)

    async def _reap(self, worker: Worker) -> None:
        process = worker.process
        deadline = time.monotonic() + STOP_GRACE
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if process.poll() is None:
            log.warning("processing worker %d did not stop in %.0f s; killed", worker.slot,
                        STOP_GRACE)  # fmt: skip
            process.kill()
            await asyncio.to_thread(process.wait, 5)
        self._drain(worker)
        self._close(worker)
        recovered = self._recover(worker.slot)
        if recovered:
            log.info("worker %d: %d claimed message(s) back in the spool", worker.slot, recovered)

    def _drain(self, worker: Worker) -> None:
        """The last frames of a worker that exited (its last log lines), to the end of file."""
        with contextlib.suppress(OSError):
            while worker.up >= 0 and self._read(worker):
                pass

    def _close(self, worker: Worker) -> None:
        assert self._loop is not None
        if worker.up >= 0:
            self._loop.remove_reader(worker.up)
            os.close(worker.up)
        if worker.wake >= 0:
            os.close(worker.wake)
        worker.up = worker.wake = -1

    def _recover(self, slot: int) -> int:
        from mailgated.intake.spool import Spool

        return Spool(self.config.spool.path).recover(slot)


async def _exit_code(process: subprocess.Popen[bytes]) -> int:
    """The exit status of a worker whose pipe closed (it may take a moment to be reaped)."""
    while (code := process.poll()) is None:
        await asyncio.sleep(0.01)
    return code
