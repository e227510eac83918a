"""`mailgated run`: one asyncio loop supervising the services it is given, stopped by signals.

The daemon builds nothing: the composition root (app.py) makes the services
and wires their wake-ups; the daemon starts them in order, and stops them in
reverse order when asked. It reports READY and STOPPING to systemd
(Type=notify) through sd_notify.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from mailgated.app import App, Service
from mailgated.config import Config

log = logging.getLogger("mailgated.daemon")


def _notify(state: str) -> None:
    try:
        import sdnotify

        sdnotify.SystemdNotifier().notify(state)
    except Exception:  # not under systemd, or no socket: nothing to tell
        log.debug("sd_notify %s not delivered", state)


class Daemon:
    def __init__(self, app: App) -> None:
        self.app = app
        self.stopping = asyncio.Event()
        self.services: list[Service] = []
        self.ready = asyncio.Event()

    @property
    def config(self) -> Config:
        return self.app.config

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            for service in self.app.services().in_start_order():
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
