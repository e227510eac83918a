"""One shape for every background loop of the daemon: start, wake, stop, back off, log.

A `Periodic` runs its `step` on the event loop again and again:

- after a step that did work (returned True) it runs again at once; after one that
  found nothing, it sleeps `interval` seconds or until `wake()` is called;
- a step that raises makes it wait with a doubling, capped backoff (`Backoff`);
  a wake-up does not cut that wait short (new mail must not turn into a retry
  storm), a stop does;
- failures are logged once per streak, not once per retry: the first failure of
  a streak as one WARNING line when it is an outage (`is_outage`: the database
  is unreachable; no traceback, it is not a bug) and as an ERROR with the
  traceback otherwise; the retries of the same streak only at DEBUG; and one
  INFO line when a step works again. Loops that share an `Outage` (every loop
  that needs the database) report it together: one WARNING when the first of
  them meets it, one INFO when the last of them is past it;
- `stop()` sets `stopping` (a step that waits on something long, such as IMAP
  IDLE, watches it), wakes the loop and waits up to `grace` seconds for the step
  in hand to end by itself before cancelling it (`grace=None`: wait for it,
  for steps that run in a worker thread and cannot be interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from mailgated.errors import first_line

log = logging.getLogger("mailgated.daemon")


class Backoff:
    """A doubling delay: `first`, 2 × `first`, … up to `most`; `reset()` after a success."""

    def __init__(self, first: float = 1.0, most: float = 30.0) -> None:
        self.first = first
        self.most = most
        self.current = 0.0

    def next(self) -> float:
        self.current = min(self.most, self.current * 2 if self.current else self.first)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class Outage:
    """One shared resource (the database) seen down by one or more loops; logged once."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.log = logger
        self.failing: set[str] = set()
        self.since: float | None = None
        self.attempts = 0

    @property
    def down(self) -> bool:
        return bool(self.failing)

    def failed(self, who: str, why: str) -> None:
        self.attempts += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s unavailable (%s): %s; retrying with backoff", self.what, who, why)
        else:
            self.log.debug("%s still unavailable (%s): %s", self.what, who, why)
        self.failing.add(who)

    def recovered(self, who: str) -> None:
        if who not in self.failing:
            return
        self.failing.discard(who)
        if not self.failing and self.since is not None:
            self.log.info(
                "%s available again after %.0f s (%d failed attempt(s))",
                self.what,
                time.monotonic() - self.since,
                self.attempts,
            )
            self.since, self.attempts = None, 0


Step = Callable[[], Awaitable[bool]]


class Periodic:
    """A background loop with a name; a daemon service (start, stop) with a `wake()`."""

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        interval: float,
        backoff: Backoff | None = None,
        outage: Outage | None = None,
        is_outage: Callable[[BaseException], bool] = lambda exc: False,
        grace: float | None = 10.0,
        wait_first: bool = False,
        logger: logging.Logger = log,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.backoff = backoff or Backoff()
        self.outage = outage
        self.is_outage = is_outage
        self.grace = grace
        self.wait_first = wait_first  # the first step after `interval`, not at once
        self.log = logger
        self.stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing: str | None = None  # the failure of the current streak, if any
        self._failures = 0

    async def start(self) -> None:
        self.stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Run the step soon (something arrived); ignored while backing off after a failure."""
        self._woken.set()

    async def stop(self) -> None:
        self.stopping.set()
        self._woken.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=self.grace)
        if not done:
            self.log.warning("%s did not stop within %.0f s; cancelled", self.name, self.grace)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        if self.wait_first:
            await self._sleep(self.interval, wakeable=True)
        while not self.stopping.is_set():
            self._woken.clear()  # before the step: a wake-up while it runs is not lost
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await self._sleep(self.backoff.next(), wakeable=False)
                continue
            self._worked()
            if not busy:
                await self._sleep(self.interval, wakeable=True)

    async def _sleep(self, seconds: float, wakeable: bool) -> None:
        if self.stopping.is_set():
            return
        event = self._woken if wakeable else self.stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)

    def _failed(self, exc: Exception) -> None:
        why = first_line(exc)
        self._failures += 1
        if self.outage is not None and self.is_outage(exc):
            self.outage.failed(self.name, why)
        elif self._failing is None:
            self.log.exception("%s failed; retrying with backoff", self.name)
        else:
            self.log.debug("%s failed again: %s", self.name, why)
        self._failing = why

    def _worked(self) -> None:
        if self._failing is None:
            return
        if self.outage is not None and self.name in self.outage.failing:
            self.outage.recovered(self.name)
        else:
            self.log.info("%s works again after %d failure(s)", self.name, self._failures)
        self._failing, self._failures = None, 0
        self.backoff.reset()
