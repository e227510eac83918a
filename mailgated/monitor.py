"""What a running daemon tells operators about itself.

`Metrics` holds the Prometheus counters and histograms (prometheus-client) that the
pieces doing the work increment: processing (messages by way in and by outcome, its
latency), the sender (relay latency, sent/failed attempts), the pollers (poll
errors). Processing runs in worker processes (`mailgated/workers.py`), so the
daemon runs prometheus-client in its *multiprocess* mode: `prepare_multiprocess`
points $PROMETHEUS_MULTIPROC_DIR at a fresh private directory before anything
imports prometheus-client, each process writes its counters there (memory-mapped
files) and /metrics adds them up — a worker that dies or is restarted loses no
count. Figures that are state rather than events (spool depth, outbox by state,
the oldest queued mail, rule firings) are read from the spool and the database at
scrape time, so every daemon sharing one PostgreSQL reports the same truth.

`Monitor` is what the composition root builds and hands to the pieces: the
metrics, each mailbox's last poll and last error, the bound listeners, and the
heartbeat (`Heartbeat`): a row in `instances`, rewritten every few seconds, from
which `mailgated status` tells which daemons are up and since when.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailgated.config import Config
    from mailgated.db import Database

log = logging.getLogger("mailgated.monitor")

HEARTBEAT_SECONDS = 10.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def our_version() -> str:
    try:
        return version("mailgated")
    except PackageNotFoundError:
        return "unknown"


def prepare_multiprocess() -> str:
    """A fresh directory for prometheus-client's multiprocess files, exported in the
    environment (inherited by worker processes). Call before prometheus-client is imported.
    Under systemd it lives in RuntimeDirectory (/run/mailgated), else in the temp dir."""
    base = (os.environ.get("RUNTIME_DIRECTORY") or "").split(":")[0] or None
    path = tempfile.mkdtemp(prefix="metrics-", dir=base)
    os.environ[MULTIPROC_ENV] = path
    return path


def end_multiprocess(path: str) -> None:
    if os.environ.get(MULTIPROC_ENV) == path:
        del os.environ[MULTIPROC_ENV]
    shutil.rmtree(path, ignore_errors=True)


def multiprocess_active() -> bool:
    """True when this process's prometheus-client writes its values to shared files."""
    from prometheus_client import values

    return bool(os.environ.get(MULTIPROC_ENV)) and values.ValueClass is not values.MutexValue


class Metrics:
    """The counters and histograms; one per process, all alike (see the module)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "mailgated_messages_received",
            "Messages taken from the spool for the first time, by the way they came in",
            ["way"],
            registry=r,
        )
        self.processed = Counter(
            "mailgated_messages_processed",
            "Spooled messages processed, by outcome (done, duplicate, retry, quarantine)",
            ["outcome"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "mailgated_processing_seconds",
            "From spooling to the end of processing, per message",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.relay_seconds = Histogram(
            "mailgated_relay_seconds",
            "One mail handed to the relay (MAIL FROM to the reply to DATA)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbound = Counter(
            "mailgated_outbound_attempts",
            "Delivery attempts to the relay, by result (sent, retry, failed)",
            ["result"],
            registry=r,
        )
        self.poll_errors = Counter(
            "mailgated_poll_errors",
            "Failed IMAP/POP3 polls (connection, login, protocol), by mailbox",
            ["mailbox"],
            registry=r,
        )

    def message_done(self, way: str, outcome: str, first: bool, spooled_at: dt.datetime) -> None:
        """Processing finished with one spooled message."""
        if first:
            self.received.labels(way.split(":")[0]).inc()
        self.processed.labels(outcome).inc()
        if outcome != "retry":
            age = (dt.datetime.now(dt.UTC) - spooled_at).total_seconds()
            self.processing_seconds.observe(max(age, 0.0))

    def outbound_result(self, state: str) -> None:
        """One delivery attempt recorded: the outbox state it left (sent, failed, queued)."""
        self.outbound.labels({"queued": "retry"}.get(state, state)).inc()


@dataclass
class MailboxState:
    """One polled mailbox as this daemon saw it: the last good poll, the last error."""

    name: str
    metrics: Metrics | None = None
    last_poll: dt.datetime | None = None
    last_error: str = ""
    error_at: dt.datetime | None = None
    idle: bool = False  # waiting in IMAP IDLE: the server tells of new mail, no poll is due

    def polled(self) -> None:
        self.last_poll = dt.datetime.now(dt.UTC)
        self.last_error, self.error_at = "", None

    def idling(self, on: bool) -> None:
        self.idle = on

    def failed(self, error: BaseException | str) -> None:
        text = str(error).strip().splitlines()
        self.last_error = (text[0] if text else type(error).__name__)[:500]
        self.error_at = dt.datetime.now(dt.UTC)
        if self.metrics is not None:
            self.metrics.poll_errors.labels(self.name).inc()

    def watch(
        self, session: Callable[[asyncio.Event], Awaitable[None]]
    ) -> Callable[[asyncio.Event], Awaitable[None]]:
        """`session`, with its failures recorded here (the poller's backoff loop logs them)."""

        async def watched(stopping: asyncio.Event) -> None:
            try:
                await session(stopping)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed(exc)
                raise

        return watched

    def as_dict(self) -> dict[str, Any]:
        return {
            "last_poll": self.last_poll.isoformat() if self.last_poll else None,
            "last_error": self.last_error or None,
            "error_at": self.error_at.isoformat() if self.error_at else None,
            "idle": self.idle,
        }


@dataclass
class Monitor:
    """Built once by the daemon's root and handed to the pieces that report."""

    metrics: Metrics = field(default_factory=Metrics)
    instance: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
    )
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    mailboxes: dict[str, MailboxState] = field(default_factory=dict)
    listeners: dict[str, str] = field(default_factory=dict)
    loop_tick: float = field(default_factory=time.monotonic)

    @classmethod
    def for_config(cls, config: Config) -> Monitor:
        monitor = cls()
        for kind in ("smtp", "lmtp", "http"):
            if getattr(config.listen, kind):
                monitor.listening(kind, getattr(config.listen, kind))
        return monitor

    def mailbox(self, name: str) -> MailboxState:
        if name not in self.mailboxes:
            self.mailboxes[name] = MailboxState(name, self.metrics)
        return self.mailboxes[name]

    def listening(self, kind: str, address: str) -> None:
        self.listeners[kind] = address

    def polls(self, now: dt.datetime) -> str:
        """The mailboxes in a few words for systemd's STATUS= ("" when there are none): a
        failing one first, else one not polled yet, else the oldest last poll of those not
        waiting in IDLE (an IDLE mailbox is told of new mail: its last poll can be old)."""
        boxes = sorted(self.mailboxes.values(), key=lambda m: m.name)
        if not boxes:
            return ""
        failing = [m for m in boxes if m.last_error]
        if failing:
            first = failing[0]
            return f"mailbox {first.name} failing: {first.last_error[:120]}{_more(failing)}"
        waiting = [m for m in boxes if m.last_poll is None]
        if waiting:
            return f"mailbox {waiting[0].name} not polled yet{_more(waiting)}"
        idle = sum(m.idle for m in boxes)
        polled = [m.last_poll for m in boxes if not m.idle and m.last_poll is not None]
        parts = [f"last poll {span((now - min(polled)).total_seconds())} ago"] if polled else []
        if idle:
            parts.append(f"{idle} in IDLE" if polled else f"mailbox{'es' * (idle > 1)} in IDLE")
        return ", ".join(parts)

    def snapshot(self) -> dict[str, Any]:
        """What the heartbeat stores for `mailgated status`."""
        return {
            "listeners": dict(self.listeners),
            "mailboxes": {name: m.as_dict() for name, m in sorted(self.mailboxes.items())},
        }


def _more(boxes: list[MailboxState]) -> str:
    return f" (+{len(boxes) - 1} more)" if len(boxes) > 1 else ""


def span(seconds: float) -> str:
    """A duration for people: "12 s", "5 min", "3 h", "2 d" (STATUS=, `mailgated status`)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


class Heartbeat:
    """A daemon service: this instance's row in `instances`, rewritten every few seconds
    (up since, last seen, version, listeners, mailboxes); marked stopped on a clean stop.
    A database outage only delays the row: the loop goes on and writes again."""

    name = "heartbeat"

    def __init__(self, db: Database, monitor: Monitor, interval: float = HEARTBEAT_SECONDS):
        self.db = db
        self.monitor = monitor
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        await self._beat_quietly()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.wait_for(asyncio.to_thread(self.write, True), 5)
        except Exception:  # the database is away: `status` will see the row go stale
            log.debug("could not mark instance %s stopped", self.monitor.instance)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.monitor.loop_tick = time.monotonic()
            await self._beat_quietly()

    async def _beat_quietly(self) -> None:
        try:
            await asyncio.to_thread(self.write, False)
            if self._failing:
                log.info("heartbeat: database available again")
            self._failing = False
        except Exception as exc:
            if not self._failing:
                log.warning("heartbeat: cannot write to the database: %s", _first_line(exc))
            self._failing = True

    def write(self, stopped: bool) -> None:
        from mailgated.models import Instance

        now = dt.datetime.now(dt.UTC)
        m = self.monitor
        with self.db.session() as session:
            row = session.get(Instance, m.instance)
            if row is None:
                row = Instance(
                    id=m.instance,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    version=our_version(),
                    started_at=m.started_at,
                )
                session.add(row)
            row.seen_at = now
            row.stopped_at = now if stopped else None
            row.state = m.snapshot()
            if not stopped:  # forget daemons not seen for a week
                from sqlalchemy import delete

                week_ago = now - dt.timedelta(days=7)
                session.execute(delete(Instance).where(Instance.seen_at < week_ago))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(exc).__name__])[0]
