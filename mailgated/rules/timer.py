"""The rules timer: a daemon service that runs a sweep every `rules.sweep_interval` seconds.

The sweep runs in a worker thread (the ORM is synchronous) in its own
transaction, in the daemon's one periodic-task loop (periodic.py); a failed
sweep is retried with backoff, and since
each rule remembers its last sweep, nothing that fell due meanwhile is
skipped. Mail queued by rules wakes the sender at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailgated.db import unavailable
from mailgated.models import utcnow
from mailgated.periodic import Outage, Periodic
from mailgated.rules.engine import Firing, RulesEngine

if TYPE_CHECKING:
    from mailgated.db import Database

log = logging.getLogger("mailgated.rules")


class RulesTimer:
    name = "rules timer"

    def __init__(
        self,
        db: Database,
        engine: RulesEngine,
        interval: float,
        now: Callable[[], dt.datetime] = utcnow,
        on_fired: Callable[[], None] | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.interval = interval
        self.now = now
        self.on_fired = on_fired
        self.loop = Periodic(
            self.name, self._step, interval=interval, outage=outage, is_outage=unavailable,
            logger=log,
        )  # fmt: skip

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def _step(self) -> bool:
        """One sweep; the next one after `interval` seconds (a sweep is never 'busy')."""
        fired = await self.run_once()
        if fired and self.on_fired is not None:
            self.on_fired()
        return False

    async def run_once(self, now: dt.datetime | None = None) -> list[Firing]:
        return await asyncio.to_thread(self._sweep, now or self.now())

    def _sweep(self, now: dt.datetime) -> list[Firing]:
        with self.db.session() as session:
            return self.engine.sweep(session, now)
