"""`mailgated run`: one asyncio loop supervising the services it is given.

The daemon builds nothing: the composition root (app.py) makes the services and
wires their wake-ups; the daemon starts, reloads and stops them.

Start: intake (the section address list and the SMTP/LMTP listeners) first, as
it needs no database; then the database is made ready (created or upgraded).
When it is down the daemon waits for it with a doubling, capped backoff — one
WARNING, then one INFO when it answers — while intake keeps accepting mail
into the spool, and tells systemd it is up ("waiting for the database"); then
the rest: pollers, sender, rules timer, feeds, processing.

SIGHUP reloads: the config file is read again and the services rebuilt from it
(mailboxes, outbound settings, the listeners' TLS certificate and limits for
new sessions, the log level; templates, sections and rules with them). Open
SMTP sessions go on; the sender and the processing workers finish what they
hold before their successors start. An invalid file is logged and the running
configuration kept. A changed `[database] url` or listen address needs a
restart (said in the log).

SIGTERM/SIGINT stop it: services stop in reverse start order.

systemd (Type=notify, `sd_notify`): READY=1 once running, RELOADING=1 and READY=1
around a reload, STOPPING=1, STATUS= with a short summary every few seconds ("3
queued, 0 failed, spool 0; last poll 12 s ago", or which mailbox is failing: see
`Monitor.polls`), and WATCHDOG=1 from the event loop itself when the unit sets
WatchdogSec=, so a hung loop is restarted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from mailgated.app import App, Service, Services
from mailgated.config import Config
from mailgated.errors import first_line
from mailgated.periodic import Backoff, Periodic

log = logging.getLogger("mailgated.daemon")

STATUS_EVERY = 10.0  # seconds between STATUS= updates
STATUS_TIMEOUT = 5.0  # a database that does not answer within this is "not answering"
DATA_GRACE = 10.0  # seconds a stop waits for messages being received to be spooled


class Notifier:
    """sd_notify(3): datagrams to $NOTIFY_SOCKET; silent when not run by systemd.

    The socket is opened at the first message only when $NOTIFY_SOCKET is set,
    and closed when the daemon stops."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.enabled = bool(address)
        # "@name": Linux's abstract namespace, a leading NUL byte on the wire
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None

    def __call__(self, *lines: str) -> None:
        if not self.enabled:
            return
        try:
            if self._socket is None:
                self._socket = self._connect()
            self._socket.sendall("\n".join(lines).encode())
        except OSError:
            log.debug("sd_notify %s not delivered", lines)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self._address)
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half of WatchdogSec= (systemd's advice), when the watchdog is on for us."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000


class Daemon:
    def __init__(
        self,
        app: App,
        prepare: Callable[[], object] | None = None,
        settle: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.prepare = prepare or app.prepare_database  # the schema, made ready at start
        self.settle = settle  # `workers.settle_heap` in `mailgated run`; not in a test's process
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.services: list[Service] = []
        self.built = Services()
        self.notify = Notifier()
        self._reload = asyncio.Event()
        self._loops: list[Periodic] = []
        self._down_since = 0.0  # the database was down at start since then
        self._down_why = ""

    @property
    def config(self) -> Config:
        return self.app.config

    async def run(self) -> None:
        self._signals(install=True)
        try:
            self.built = self.app.services()
            up = await self._prepare()  # the schema first, when the database answers
            await self._start(self.built.intake())
            if up or await self._database_ready():
                if not up and self.built.addresses is not None:
                    await self.built.addresses.refresh()
                await self._start(self.built.the_rest())
                if self.settle is not None:
                    self.settle()
                log.info("mailgated ready (%d services)", len(self.services))
                self.notify("READY=1", f"STATUS={await self.status()}")
                self.ready.set()
                await self._start_loops()
                await self._serve()
        finally:
            self.notify("STOPPING=1")
            await self._drain_intake()
            for loop in self._loops:
                await loop.stop()
            for service in reversed(self.services):
                await self._stop(service)
            self.services.clear()
            await asyncio.to_thread(self.app.close)
            self._signals(install=False)
            self.notify.close()
            log.info("mailgated stopped")

    def request_stop(self, sig: int | None = None) -> None:
        if sig is not None:
            log.info("received %s, stopping", signal.Signals(sig).name)
        self.stopping.set()

    def request_reload(self) -> None:
        self._reload.set()

    # start and stop ------------------------------------------------------------
    async def _start(self, services: list[Service]) -> None:
        for service in services:
            await service.start()
            self.services.append(service)
            log.info("started %s", service.name)

    async def _stop(self, service: Service) -> None:
        try:
            await service.stop()
            log.info("stopped %s", service.name)
        except Exception:
            log.exception("error while stopping %s", service.name)

    async def _drain_intake(self) -> None:
        """First on stop: no new mail (421 4.3.2), the messages being received spooled."""
        listeners = [s for s in self.built.listeners if s in self.services]
        for listener in listeners:
            listener.drain()
        await asyncio.gather(*(listener.drained(DATA_GRACE) for listener in listeners))

    async def _serve(self) -> None:
        """Until stopped: reload on SIGHUP."""
        while not self.stopping.is_set():
            stop = asyncio.ensure_future(self.stopping.wait())
            reload = asyncio.ensure_future(self._reload.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if self._reload.is_set() and not self.stopping.is_set():
                self._reload.clear()
                await self.reload()

    async def _prepare(self) -> bool:
        """One try at creating or upgrading the schema; False when the database is down."""
        from mailgated.db import unavailable

        try:
            await asyncio.to_thread(self.prepare)
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._down_since = self._down_since or time.monotonic()
            self._down_why = first_line(exc)
            return False
        return True

    async def _database_ready(self) -> bool:
        """Wait (with backoff) for the database that was down at start, intake running;
        False when stopped meanwhile."""
        log.warning(
            "database unavailable at start (%s); mail is accepted into the spool meanwhile, "
            "retrying with backoff", self._down_why,
        )  # fmt: skip
        self.notify("READY=1", "STATUS=waiting for the database; intake runs")
        self.ready.set()  # as systemd hears it: up, taking mail
        backoff = Backoff(1.0, 30.0)
        while not self.stopping.is_set():
            await self._wait(backoff.next())
            if not self.stopping.is_set() and await self._prepare():
                log.info("database available after %.0f s", time.monotonic() - self._down_since)
                return True
        return False

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # reload --------------------------------------------------------------------
    async def reload(self) -> None:
        """SIGHUP: read the config file again and rebuild the services from it."""
        from mailgated.config import load

        path = self.app.config.path or os.environ.get("MAILGATED_CONFIG") or None
        log.info("received SIGHUP, reloading %s", path or "(built-in defaults)")
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            config = await asyncio.to_thread(load, path)
            fresh = self.app.reloaded(config)
            pollers = fresh.pollers()
            sender = fresh.sender()
            timer = fresh.timer(on_fired=self.built.wake_sender)
        except Exception as exc:  # a typo in the file: say so, keep running as before
            log.error("reload failed, the running configuration is kept: %s", first_line(exc))
            self.notify("READY=1", f"STATUS=reload failed: {first_line(exc)}")
            return
        self._warn_restart_needed(self.app.config, config)
        _log_level(config)
        for listener in self.built.listeners:
            listener.reconfigure(config.listen)
        old = [*self.built.pollers, self.built.sender, self.built.timer]
        self.built.pollers, self.built.sender, self.built.timer = pollers, sender, timer
        for service in old:
            if service is not None and service in self.services:
                await self._stop(service)
                self.services.remove(service)
        self.app = fresh
        await self._start([s for s in (*pollers, sender, timer) if s is not None])
        if self.built.processing is not None:
            await self.built.processing.restart(fresh.worker_config())
        if self.built.addresses is not None:
            await self.built.addresses.refresh()
        log.info("reloaded %s", path or "(built-in defaults)")
        self.notify("READY=1", f"STATUS={await self.status()}")

    @staticmethod
    def _warn_restart_needed(old: Config, new: Config) -> None:
        for key, before, after in (
            ("[database] url", old.database.url, new.database.url),
            ("[listen] smtp", old.listen.smtp, new.listen.smtp),
            ("[listen] lmtp", old.listen.lmtp, new.listen.lmtp),
            ("[listen] http", old.listen.http, new.listen.http),
            ("[spool] path", old.spool.path, new.spool.path),
            ("[processing] workers", old.processing.workers, new.processing.workers),
        ):
            if before != after:
                log.warning("%s changed: restart mailgated to apply it", key)

    # systemd -------------------------------------------------------------------
    async def _start_loops(self) -> None:
        if not self.notify.enabled:
            return
        self._loops = [Periodic("status", self._status_step, interval=STATUS_EVERY, logger=log)]
        every = self.notify.watchdog_interval()
        if every is not None:  # from the loop itself: a hung loop misses it and is restarted
            self._loops.append(Periodic("watchdog", self._watchdog, interval=every, logger=log))
        for loop in self._loops:
            await loop.start()

    async def _watchdog(self) -> bool:
        self.notify("WATCHDOG=1")
        return False

    async def _status_step(self) -> bool:
        self.notify(f"STATUS={await self.status()}")
        return False

    async def status(self) -> str:
        """A short summary for `systemctl status`: the outbox, the spool, the database."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._summary), STATUS_TIMEOUT)
        except TimeoutError:
            return "database not answering"

    def _summary(self) -> str:
        polls = self.app.monitor.polls(dt.datetime.now(dt.UTC))
        return f"{self._stored()}; {polls}" if polls else self._stored()

    def _stored(self) -> str:
        from mailgated.outbound import outbox

        counts = self.app.spool.counts()
        spool = f"spool {counts.get('new', 0) + counts.get('processing', 0)}"
        if self.app.outage.down:
            return f"database unavailable; {spool}"
        try:
            with self.app.db.session() as session:
                found = outbox.counts(session)
        except Exception as exc:
            return f"database: {first_line(exc)}; {spool}"
        return f"{found.queued} queued, {found.failed} failed, {spool}"

    # signals -------------------------------------------------------------------
    def _signals(self, install: bool) -> None:
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGINT: lambda: self.request_stop(signal.SIGINT),
            signal.SIGTERM: lambda: self.request_stop(signal.SIGTERM),
            signal.SIGHUP: self.request_reload,
        }
        for sig, handler in handlers.items():
            try:
                if install:
                    loop.add_signal_handler(sig, handler)
                else:
                    loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass


def _log_level(config: Config) -> None:
    """The reloaded `[logging] level` (it replaces a `-v` given at start)."""
    from mailgated import logs

    logging.getLogger().setLevel(logs.level_named(config.logging.level))
