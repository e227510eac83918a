"""`mailgated run`: one asyncio loop supervising every service, stopped cleanly by signals.

Services are listed as data in SERVICE_FACTORIES ("module:function"); each
factory takes the Daemon and returns the services it wants to run (none when
the config turns it off). A service starts (binds its socket, spawns its
loop), and stops when asked. The daemon reports READY and STOPPING to
systemd (Type=notify) through sd_notify.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from mailgated.config import Config
from mailgated.db import Database

log = logging.getLogger("mailgated.daemon")


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Bind sockets, start background tasks; raise if it cannot run."""

    async def stop(self) -> None:
        """Finish what is in hand and release everything."""


# Each factory: Callable[[Daemon], list[Service]]. Order is start order.
SERVICE_FACTORIES: list[str] = [
    "mailgated.rules.timer:services",  # first: installs the rules engine before any case change
    "mailgated.intake.smtp:services",
    "mailgated.intake.imap:services",
    "mailgated.intake.pop3:services",
    "mailgated.outbound.sender:services",
    "mailgated.reporting.feeds:services",
    "mailgated.process:services",  # last: stopped first, before the sender and the listeners
]


def _notify(state: str) -> None:
    try:
        import sdnotify

        sdnotify.SystemdNotifier().notify(state)
    except Exception:  # not under systemd, or no socket: nothing to tell
        log.debug("sd_notify %s not delivered", state)


class Daemon:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.stopping = asyncio.Event()
        self.services: list[Service] = []
        self.ready = asyncio.Event()
        self.sender: Any = None  # the outbound sender, when running (woken after queueing)
        self.spooled = asyncio.Event()  # set by intake after spooling: processing looks now

    def notify_spooled(self) -> None:
        self.spooled.set()

    def wake_sender(self) -> None:
        if self.sender is not None:
            self.sender.wake.set()

    def _factories(self) -> list[Callable[[Daemon], list[Service]]]:
        found = []
        for target in SERVICE_FACTORIES:
            module, attr = target.split(":")
            found.append(getattr(importlib.import_module(module), attr))
        return found

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            for factory in self._factories():
                for service in factory(self):
                    await service.start()
                    self.services.append(service)
                    log.info("started %s", service.name)
            log.info("mailgated ready (%d services)", len(self.services))
            _notify("READY=1")
            self.ready.set()
            await self.stopping.wait()
        finally:
            _notify("STOPPING=1")
            for service in reversed(self.services):
                try:
                    await service.stop()
                    log.info("stopped %s", service.name)
                except Exception:
                    log.exception("error while stopping %s", service.name)
            self.services.clear()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
            log.info("mailgated stopped")

    def request_stop(self, sig: int | None = None) -> None:
        if sig is not None:
            log.info("received %s, stopping", signal.Signals(sig).name)
        self.stopping.set()
