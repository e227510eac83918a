"""The rules timer: a daemon service that runs a sweep every `rules.sweep_interval` seconds.

The sweep runs in a worker thread (the ORM is synchronous) in its own
transaction; a failed sweep is logged and retried at the next tick, and since
each rule remembers its last sweep, nothing that fell due meanwhile is
skipped. Mail queued by rules wakes the sender at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailgated.models import utcnow
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
    ) -> None:
        self.db = db
        self.engine = engine
        self.interval = interval
        self.now = now
        self.on_fired = on_fired
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rules-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                fired = await self.run_once()
                if fired and self.on_fired is not None:
                    self.on_fired()
            except Exception:
                log.exception("rules sweep failed; retrying in %s s", self.interval)
            await asyncio.sleep(self.interval)

    async def run_once(self, now: dt.datetime | None = None) -> list[Firing]:
        return await asyncio.to_thread(self._sweep, now or self.now())

    def _sweep(self, now: dt.datetime) -> list[Firing]:
        with self.db.session() as session:
            return self.engine.sweep(session, now)
