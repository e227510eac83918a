"""The composition root: every long-lived object of mailgated is built here, once.

    Config → Database → Spool → secret → Composer → RulesEngine
      ├── the processing pieces: Processor                       App.processor
      └── the event-loop services: section addresses, SMTP/LMTP   App.services
          listeners, IMAP/POP3 pollers, sender, rules timer, feed
          server, processing

Each piece is a lazy, cached attribute of `App`, so a command pays only for
what it uses (`mailgated deliver` builds the spool and never the database),
and a piece used by several others is one object. Feature modules build
nothing themselves: they receive their pieces here. Wake-ups between services
are plain callables handed over at build time (spooled → processing, queued →
sender, fired → sender).

Process model: `mailgated run` is one process whose asyncio loop runs
`App.services()` (daemon.py starts, reloads and stops them). The processing
pieces have their own builder so that a worker process can build an `App`
from the same config and run `App.processor()` alone, while the event-loop
process keeps the listeners, pollers, sender and timers. The CLI builds its
context (context.py) from the same root.

This module imports the feature modules only inside the builders: importing
it costs no more than the config.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from mailgated.config import Config

if TYPE_CHECKING:
    from mailgated.db import Database
    from mailgated.intake.addresses import SectionAddresses
    from mailgated.intake.smtp import Listener
    from mailgated.intake.spool import Spool
    from mailgated.monitor import Heartbeat, Monitor
    from mailgated.outbound.compose import Composer
    from mailgated.outbound.sender import Sender
    from mailgated.periodic import Outage
    from mailgated.process import Processor
    from mailgated.rules.engine import RulesEngine
    from mailgated.rules.timer import RulesTimer
    from mailgated.web import HttpServer
    from mailgated.workers import WorkerPool


class Service(Protocol):
    """What the daemon runs: started in order, stopped in reverse order."""

    name: str

    async def start(self) -> None:
        """Bind sockets, start background tasks; raise if it cannot run."""

    async def stop(self) -> None:
        """Finish what is in hand and release everything."""


@dataclass
class Services:
    """The event-loop services of `mailgated run`, each built once."""

    addresses: SectionAddresses | None = None
    listeners: list[Listener] = field(default_factory=list)
    pollers: list[Service] = field(default_factory=list)
    sender: Sender | None = None
    timer: RulesTimer | None = None
    http: HttpServer | None = None
    heartbeat: Heartbeat | None = None
    processing: WorkerPool | None = None

    def in_start_order(self) -> list[Service]:
        """Intake first (it needs no database), processing last (stopped first)."""
        return self.intake() + self.the_rest()

    def intake(self) -> list[Service]:
        """What takes mail in without the database: the listeners (and their address list,
        kept from the last run when the database is down at start)."""
        found: list[Any] = [self.addresses, *self.listeners]
        return [s for s in found if s is not None]

    def the_rest(self) -> list[Service]:
        """What needs the database: pollers (their leases), sender, timer, the HTTP server,
        the heartbeat, processing."""
        found: list[Any] = [*self.pollers, self.sender, self.timer, self.http, self.heartbeat]
        found.append(self.processing)
        return [s for s in found if s is not None]

    def wake_sender(self) -> None:
        """Mail was queued (the running sender, also after a reload replaced it)."""
        if self.sender is not None:
            self.sender.wake()

    def wake_processing(self) -> None:
        """Mail was spooled."""
        if self.processing is not None:
            self.processing.wake()


class App:
    """The pieces of one mailgated process, built lazily and each at most once.

    `db` and `secret` may be given (tests, benchmarks); `now` is the clock of
    processing (an injectable clock keeps timers testable); `slot` is the number
    of a processing worker process, whose spool claims go to `cur/<slot>/`.
    """

    def __init__(
        self,
        config: Config,
        *,
        db: Database | None = None,
        secret: bytes | None = None,
        now: Callable[[], dt.datetime] | None = None,
        slot: int | None = None,
    ) -> None:
        self.config = config
        self.slot = slot
        self._db = db
        self._secret = secret
        self._now = now

    # the shared pieces -----------------------------------------------------
    @cached_property
    def db(self) -> Database:
        """The database (not connected yet: its schema is checked by whoever needs it)."""
        from mailgated.db import Database

        return self._db if self._db is not None else Database(self.config.database.url)

    @cached_property
    def spool(self) -> Spool:
        from mailgated.intake.spool import Spool

        return Spool(self.config.spool.path, slot=self.slot)

    @cached_property
    def secret(self) -> bytes:
        from mailgated.secret import load_secret

        return self._secret if self._secret is not None else load_secret(self.config)

    @cached_property
    def monitor(self) -> Monitor:
        """Metrics, mailbox poll state and listeners of this process (mailgated/monitor.py)."""
        from mailgated.monitor import Monitor

        return Monitor.for_config(self.config)

    @cached_property
    def composer(self) -> Composer:
        from mailgated.outbound.compose import Composer

        return Composer(self.config, self.secret)

    @cached_property
    def rules(self) -> RulesEngine:
        """The rules engine; its Composer (and the secret) is made on the first rule mail."""
        from mailgated.rules.engine import RulesEngine

        return RulesEngine(self.config, lambda: self.composer)

    @cached_property
    def outage(self) -> Outage:
        """The database as the background loops see it: an outage is logged once for all."""
        from mailgated.periodic import Outage

        return Outage("database")

    # the processing pieces -------------------------------------------------
    @cached_property
    def processor(self) -> Processor:
        """Spool → cases and queued mail; all a processing worker process needs."""
        from mailgated.models import utcnow
        from mailgated.process import Processor

        now = self._now or utcnow
        return Processor(
            self.config,
            self.db,
            self.spool,
            self.composer,
            self.rules,
            now=now,
            metrics=self.monitor.metrics,
        )

    # the event-loop services -----------------------------------------------
    def services(self) -> Services:
        """Every service `mailgated run` runs, wired by their wake-ups."""
        built = Services(sender=self.sender())
        built.processing = self.processing(on_queued=built.wake_sender)
        built.addresses, built.listeners = self.listeners(built.wake_processing)
        built.pollers = self.pollers()
        built.timer = self.timer(on_fired=built.wake_sender)
        built.http = self.http()
        built.heartbeat = self.heartbeat()
        return built

    def reloaded(self, config: Config) -> App:
        """The root for a new configuration (SIGHUP): the same database (its connections and
        outage state go on; a new [database] url needs a restart), everything else anew."""
        fresh = App(config, db=self.db, now=self._now, slot=self.slot)
        fresh.__dict__["outage"] = self.outage  # one outage state for old and new loops
        if "spool" in self.__dict__ and config.spool.path == self.config.spool.path:
            fresh.__dict__["spool"] = self.spool  # and one set of spool-writing threads
        return fresh

    def close(self) -> None:
        """At the daemon's end: the spool's writing threads finish and stop."""
        if "spool" in self.__dict__:
            self.spool.close()

    def prepare_database(self) -> None:
        """Create or upgrade the schema (`mailgated run` waits for this with backoff)."""
        self.db.require_schema(create=True)

    def listeners(
        self, on_spooled: Callable[[], None]
    ) -> tuple[SectionAddresses | None, list[Listener]]:
        """The section address list and the SMTP and LMTP listeners (none when both are off)."""
        from mailgated.db import unavailable
        from mailgated.intake.addresses import SectionAddresses
        from mailgated.intake.smtp import IntakeHandler, Listener

        listen = self.config.listen
        if not (listen.smtp or listen.lmtp):
            return None, []
        quiet = logging.getLogger("mail.log")  # aiosmtpd: a line per connection and command
        if quiet.level == logging.NOTSET and not logging.getLogger("mailgated.intake").isEnabledFor(
            logging.DEBUG
        ):
            quiet.setLevel(logging.WARNING)
        saved = os.path.join(self.config.spool.path, "state", "section-addresses.json")
        book = SectionAddresses(
            self.section_addresses, outage=self.outage, is_outage=unavailable, saved=saved
        )
        found = []
        for protocol, address in (("smtp", listen.smtp), ("lmtp", listen.lmtp)):
            if address:
                handler = IntakeHandler(self.spool, book, protocol, on_spooled)
                found.append(Listener(protocol, address, handler, listen))
        return book, found

    def section_addresses(self) -> dict[str, str]:
        """Every active section address → its section, from the database (the SMTP
        listener's recipient check reloads it; intake itself never opens the database)."""
        from mailgated.directory import Directory

        with self.db.session() as session:
            return Directory(session).section_addresses()

    def pollers(self) -> list[Service]:
        """One poller per `[[mailbox]]`: IMAP for imap(s)://, POP3 for pop3(s)://."""
        if not self.config.mailbox:
            return []  # and their clients (imapclient, aioimaplib, poplib) stay unimported
        from mailgated.intake.imap import ImapPoller
        from mailgated.intake.mailbox import PollerService, StateFile, parse_account
        from mailgated.intake.pop3 import Pop3Poller
        from mailgated.leases import mailbox_lease, while_held

        found: list[Service] = []
        max_size = self.config.listen.max_message_size  # skipped by size before the body
        for config in self.config.mailbox:
            account = parse_account(config)
            kind = "imap" if account.scheme.startswith("imap") else "pop3"
            carried = StateFile(self.config.spool.path, kind, account)
            lease = mailbox_lease(
                self.db, self.config.spool.path, account.name, config.lease, carried=carried
            )
            guard = functools.partial(while_held, lease)
            state = self.monitor.mailbox(account.name)  # last poll, last error (status)
            poller: ImapPoller | Pop3Poller
            if account.scheme.startswith("imap"):
                poller, label = ImapPoller(account, self.spool, max_size=max_size), "IMAP"
            else:
                poller, label = Pop3Poller(account, self.spool, max_size=max_size), "POP3"
            poller.on_poll, poller.on_idle = state.polled, state.idling
            session = state.watch(poller.session)
            found.append(PollerService(f"{label} poller {account.name}", session, guard))
        return found

    def sender(self) -> Sender | None:
        """The outbox sender, unless no relay is configured."""
        if not self.config.outbound.relay:
            return None
        from mailgated.leases import instance_name
        from mailgated.outbound.sender import Sender

        interval = self.config.processing.poll_interval
        return Sender(
            self.db,
            self.config.outbound,
            interval,
            outage=self.outage,
            metrics=self.monitor.metrics,
            owner=instance_name(self.config.spool.path),
        )

    def processing(self, on_queued: Callable[[], None]) -> WorkerPool | None:
        """Processing of the spool in `[processing] workers` child processes (0: intake only).

        Each worker builds its own `App(config, slot=N).processor`; the database it is
        given is the one this process uses, and the secret is made here first, so that
        workers starting together never race to create it."""
        from mailgated.workers import WorkerPool

        count = self.workers()
        if count <= 0:
            return None
        return WorkerPool(self.worker_config(), count, on_queued)

    def workers(self) -> int:
        """`[processing] workers`, or when unset: one on SQLite (its writers take turns on
        the database lock, so a second worker only waits and costs memory: README,
        Performance), one per core on PostgreSQL (where they run side by side)."""
        configured = self.config.processing.workers
        if configured is not None:
            return configured
        return 1 if self.db.engine.dialect.name == "sqlite" else (os.cpu_count() or 1)

    def worker_config(self) -> Config:
        """The configuration a processing worker process builds its App from."""
        self.secret  # noqa: B018 - created (0600) before any worker reads it
        database = dataclasses.replace(self.config.database, url=self.db.url)
        return dataclasses.replace(self.config, database=database)

    def timer(self, on_fired: Callable[[], None]) -> RulesTimer | None:
        """The rules timer, unless `[rules] sweep_interval` is 0."""
        interval = self.config.rules.sweep_interval
        if interval <= 0:
            return None  # nor is the rules engine imported
        from mailgated.rules.timer import RulesTimer

        return RulesTimer(self.db, self.rules, interval, on_fired=on_fired, outage=self.outage)

    def http(self) -> HttpServer | None:
        """The HTTP listener (calendar feeds, /health, /metrics) when `[listen] http` is set."""
        if not self.config.listen.http:
            return None  # nor is aiohttp imported
        from mailgated.web import HttpServer

        return HttpServer(self.db, self.config, self.secret, self.monitor)

    def heartbeat(self) -> Heartbeat:
        """This daemon's row in `instances`, for `mailgated status`."""
        from mailgated.monitor import Heartbeat

        return Heartbeat(self.db, self.monitor)
