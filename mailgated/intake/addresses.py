"""The section addresses the SMTP/LMTP listener accepts mail for, kept in memory.

The daemon refreshes the list from the database every `interval` seconds (in a
worker thread: SQLAlchemy is blocking) and keeps the last good list when the
database is down, so mail is still accepted during an outage. An address not in
the list is looked up again before it is refused with a permanent 550 (at most
one reload per `recheck` seconds, shared by concurrent misses), so a section an
admin has just added takes mail at once rather than bouncing it. Lookups use
plus-addressing: `support+anything@example.com` is `support@example.com`.

Each list loaded is also kept in a small file (`saved`, under the spool's
`state/`), so a daemon that starts while the database is down accepts mail for
the sections it knew, instead of answering 451 until the database is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable

from mailgated.addresses import normalize_address as normalize
from mailgated.errors import first_line
from mailgated.periodic import Outage, Periodic

log = logging.getLogger("mailgated.intake")


class SectionAddresses:
    """address → section name, refreshed in the background; a daemon service."""

    name = "section-addresses"

    def __init__(
        self,
        load: Callable[[], dict[str, str]],
        interval: float = 30.0,
        recheck: float = 0.25,
        outage: Outage | None = None,
        is_outage: Callable[[BaseException], bool] = lambda exc: False,
        saved: str | os.PathLike[str] | None = None,
    ) -> None:
        self._load = load
        self.saved = saved  # the last list loaded, for a start while the database is down
        self.interval = interval
        self.recheck = recheck
        self.outage = outage  # shared with the other loops: a database outage is logged once
        self.is_outage = is_outage
        self.addresses: dict[str, str] = {}
        self.loaded = False
        self.loop = Periodic(self.name, self._step, interval=interval, wait_first=True, logger=log)
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def section_for(self, address: str) -> str | None:
        return self.addresses.get(normalize(address))

    async def lookup(self, address: str) -> str | None:
        """The section of `address`; on a miss, reload first unless that was just done."""
        found = self.section_for(address)
        if found is not None:
            return found
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.recheck:
                await self.refresh()
        return self.section_for(address)

    async def refresh(self) -> bool:
        """Reload the list; on failure keep the last one and say so. True if it loaded."""
        try:
            found = await asyncio.to_thread(self._load)
        except Exception as exc:
            state = f"keeping the last {len(self.addresses)}" if self.loaded else "none loaded yet"
            if self.outage is not None and self.is_outage(exc):
                self.outage.failed(self.name, f"{first_line(exc)} ({state})")
            else:
                log.warning("cannot refresh section addresses (%s): %s", state, first_line(exc))
            return False
        if self.outage is not None:
            self.outage.recovered(self.name)
        if found != self.addresses or not self.loaded:
            log.info("section addresses: %d (%s)", len(found), ", ".join(sorted(found)) or "none")
            await asyncio.to_thread(self._save, found)
        self.addresses = {normalize(a): s for a, s in found.items()}
        self.loaded = True
        self._loaded_at = time.monotonic()
        return True

    async def start(self) -> None:
        if not await self.refresh():
            self._restore()
        await self.loop.start()

    def _save(self, found: dict[str, str]) -> None:
        if self.saved is None:
            return
        try:
            os.makedirs(os.path.dirname(self.saved), exist_ok=True)
            tmp = f"{os.fspath(self.saved)}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                json.dump(found, fh, sort_keys=True)
            os.replace(tmp, self.saved)
        except OSError as exc:
            log.warning("cannot keep the section addresses in %s: %s", self.saved, exc)

    def _restore(self) -> None:
        """The list of the last run, while the database cannot give the current one."""
        if self.saved is None:
            return
        try:
            with open(self.saved) as fh:
                found: dict[str, str] = json.load(fh)
        except (OSError, ValueError):
            return
        self.addresses = {normalize(a): s for a, s in found.items()}
        self.loaded = True
        log.info("section addresses from the last run: %d (%s)", len(found),
                 ", ".join(sorted(found)) or "none")  # fmt: skip

    async def _step(self) -> bool:
        """The periodic refresh (a failure is logged by `refresh`, which keeps the list)."""
        await self.refresh()
        return False

    async def stop(self) -> None:
        await self.loop.stop()
