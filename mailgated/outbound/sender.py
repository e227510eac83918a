"""The sender: a daemon service that delivers the outbox to the relay.

A pass claims a batch of due messages (one transaction, leased), hands them to
`[outbound] connections` SMTP sessions that stay open and send mail after mail
(`outbound/relay.py`), and records the outcomes in batches (one transaction for
many "sent" marks). Each message's failure is its own: it is recorded on that
message and the pass goes on with the next.

The promise: a message the relay accepted is marked sent (during a database
outage the outcome is kept and written before anything else is claimed); if
the sender dies between the relay's 250 and the mark, the lease runs out and
the message is sent once more, with the same Message-ID (the stored bytes are
sent as they are) — never lost, at most one duplicate. A stop finishes the mails in hand
for a short grace, marks what went and gives the rest back at once.

The daemon (or whoever queues mail) calls `wake()` after queueing, from any
thread; otherwise the queue is looked at every `interval` seconds — in the database
only when something can be due: after a look that found nothing due, the sender knows
when the earliest queued mail will be (a retry, a lease running out) and looks again
then, or after `IDLE_LOOK` seconds at the latest (mail queued by another process: the
CLI, another daemon). An idle sender with a short `[processing] poll_interval` so
costs a timer, not a transaction, per interval. The loop is
the daemon's one periodic-task helper (periodic.py): a database outage is
waited out with backoff and logged once for all the loops.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from mailgated.config import OutboundConfig, read_secret_value, tls_client_context
from mailgated.db import unavailable
from mailgated.errors import first_line
from mailgated.models import utcnow
from mailgated.outbound import delivery as queue
from mailgated.outbound.delivery import Delivery, Outcome, Recorded
from mailgated.outbound.relay import RelayDown, Session
from mailgated.periodic import Outage, Periodic

if TYPE_CHECKING:
    from mailgated.db import Database
    from mailgated.monitor import Metrics

log = logging.getLogger("mailgated.outbound")

__all__ = ["Sender"]

PER_CONNECTION = 50  # messages claimed per session and pass
MARK_BATCH = 50  # outcomes recorded per transaction
STOP_GRACE = 5.0  # seconds a stop waits for the mails in hand before giving them back
SESSION_IDLE = 30.0  # seconds an unused session stays open
IDLE_LOOK = 1.0  # seconds at most between looks at an outbox with nothing due


@dataclass
class _Pass:
    """The messages of one pass: still to send, in a session's hands, and done."""

    todo: collections.deque[Delivery]
    in_hand: dict[int, Delivery] = field(default_factory=dict)
    done: list[tuple[Delivery, Outcome]] = field(default_factory=list)
    relay_down: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    marking: asyncio.Task[None] | None = None  # a batch of outcomes being recorded meanwhile


class Sender:
    name = "sender"

    def __init__(
        self,
        db: Database,
        config: OutboundConfig,
        interval: float = 1.0,
        outage: Outage | None = None,
        metrics: Metrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.owner = owner  # this daemon in the outbox's claimed_by (leases.instance_name)
        self.metrics = metrics  # relay latency and results (mailgated/monitor.py)
        self.config = config
        self.interval = interval
        self.loop = Periodic(
            self.name, self._step, interval=interval, outage=outage, is_outage=unavailable,
            grace=STOP_GRACE, logger=log,
        )  # fmt: skip
        password = read_secret_value(
            config.password_file, config.password_env, "outbound relay password"
        )
        tls_context = tls_client_context(config.ca_file, "outbound relay")
        self._sessions = [
            Session(config, password, tls_context) for _ in range(max(1, config.connections))
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relay_down = False
        self._active_at = 0.0  # when a pass last sent something (unused sessions close)
        # monotonic time before which the outbox is not looked at again: nothing is due
        # then, and a look is at most IDLE_LOOK old (None: look at the next pass)
        self._quiet_until: float | None = None
        self._wakes = 0  # wake-ups so far (one during a look makes the next look happen)
        # outcomes the database could not take (an outage): written before anything is claimed
        self._unrecorded: list[tuple[Delivery, Outcome]] = []

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """`async with Sender(…) as sender:` for run_once outside the daemon (a test, a
        one-off pass): its relay connections are closed at the end."""
        await self.close_sessions()

    def wake(self) -> None:
        """Look at the queue now: mail was queued. Safe to call from any thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._look_now()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._look_now)

    def _look_now(self) -> None:
        self._wakes += 1
        self._quiet_until = None
        self.loop.wake()

    def _quiet(self) -> bool:
        """Nothing can be due yet: the last look found the earliest due later, and it was
        less than IDLE_LOOK seconds ago."""
        return self._quiet_until is not None and time.monotonic() < self._quiet_until

    @property
    def _stopping(self) -> bool:
        return self.loop.stopping.is_set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._active_at = self._loop.time()
        if self.owner is not None:
            try:
                released = await asyncio.to_thread(self._release_stale)
            except Exception as exc:  # the database is down: the leases run out instead
                log.warning("stale outbox claims not released at start: %s", first_line(exc))
            else:
                if released:
                    log.info("released %d outbox claim(s) left by this daemon's last run",
                             released)  # fmt: skip
        await self.loop.start()

    def _release_stale(self) -> int:
        assert self.owner is not None
        with self.db.session() as session:
            return queue.release_stale(session, self.owner, utcnow())

    async def stop(self) -> None:
        """Finish the mails in hand (a short grace), record them, give the rest back."""
        await self.loop.stop()
        await self.close_sessions()

    async def close_sessions(self) -> None:
        await asyncio.gather(*(s.close() for s in self._sessions))

    async def _step(self) -> bool:
        """One pass; sessions unused for SESSION_IDLE seconds are closed."""
        attempted = await self.run_once()
        now = asyncio.get_running_loop().time()
        if attempted:
            self._active_at = now
        elif now - self._active_at >= SESSION_IDLE:
            await self.close_sessions()
            self._active_at = now
        return attempted > 0

    async def run_once(self, now: dt.datetime | None = None) -> int:
        """Send what is due (now, or at `now`); returns how many messages were attempted."""
        if self._unrecorded:  # the relay took these during a database outage: mark them first
            await self._flush(_Pass(collections.deque()), now)
        if now is None and self._quiet():
            return 0
        limit = PER_CONNECTION * len(self._sessions)
        wakes, looked = self._wakes, time.monotonic()
        deliveries, due = await asyncio.to_thread(self._claim, now or utcnow(), limit)
        self._quiet_until = None
        if not deliveries:
            if wakes == self._wakes:  # nothing was queued here while we looked
                wait = IDLE_LOOK if due is None else (due - (now or utcnow())).total_seconds()
                self._quiet_until = looked + min(wait, IDLE_LOOK)
            return 0
        batch = _Pass(collections.deque(deliveries))
        sessions = self._sessions[: len(deliveries)]
        workers = [asyncio.create_task(self._work(s, batch, now)) for s in sessions]
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:  # a stop past its grace: mails cut off mid-transaction
            for session in sessions:
                session.drop()
            raise
        finally:
            if batch.marking is not None:
                await asyncio.wait({batch.marking})
                if not batch.marking.cancelled():
                    batch.marking.exception()  # seen: its outcomes are in _unrecorded, retried
            await self._flush(batch, now, final=True)
        if batch.relay_down:
            self._relay_is(down=batch.relay_down, waiting=len(deliveries))
        else:
            self._relay_is(down=None, waiting=0)
        return len(deliveries)

    def _claim(self, now: dt.datetime, limit: int) -> tuple[list[Delivery], dt.datetime | None]:
        """Due mail, claimed; when there is none, also when the earliest queued one is due."""
        with self.db.session() as session:
            lease = dt.timedelta(seconds=self.config.claim_lease)
            deliveries = queue.claim(session, now, limit, lease=lease, owner=self.owner)
            return deliveries, None if deliveries else queue.next_due(session)

    async def _work(self, session: Session, batch: _Pass, now: dt.datetime | None) -> None:
        while batch.todo and not self._stopping:
            delivery = batch.todo.popleft()
            batch.in_hand[delivery.id] = delivery
            outcome = await self._attempt(session, batch, delivery)
            del batch.in_hand[delivery.id]
            batch.done.append((delivery, outcome))
            if len(batch.done) >= MARK_BATCH and (batch.marking is None or batch.marking.done()):
                batch.marking = asyncio.create_task(self._flush(batch, now))  # sending goes on

    async def _attempt(self, session: Session, batch: _Pass, delivery: Delivery) -> Outcome:
        """One mail over `session`; whatever goes wrong is this mail's outcome, not the pass's."""
        if batch.relay_down:
            return Outcome().defer_all(delivery.recipients, batch.relay_down)
        started = time.monotonic()
        try:
            outcome = await session.deliver(delivery.from_addr, delivery.recipients, delivery.raw)
            if self.metrics is not None:
                self.metrics.relay_seconds.observe(time.monotonic() - started)
            return outcome
        except RelayDown as exc:
            batch.relay_down = str(exc)
            return Outcome().defer_all(delivery.recipients, str(exc))
        except Exception as exc:  # an input nothing foresaw: it must not stall the others
            log.exception("outbox %d %s: error while sending", delivery.id, delivery.message_id)
            session.drop()
            return Outcome().defer_all(delivery.recipients, f"error while sending: {exc!r}")

    async def _flush(self, batch: _Pass, now: dt.datetime | None, final: bool = False) -> None:
        """Record the outcomes so far in one transaction; on the last flush also give back
        what was claimed and not sent (a stop, or a pass cut short)."""
        async with batch.lock:
            attempts, batch.done = [*self._unrecorded, *batch.done], []
            self._unrecorded = []
            unsent = [*batch.todo, *batch.in_hand.values()] if final else []
            if final:
                batch.todo.clear()
                batch.in_hand.clear()
            if not attempts and not unsent:
                return
            try:
                recorded = await asyncio.to_thread(self._write, attempts, unsent, now)
            except OperationalError:  # kept, and written when the database is back
                self._unrecorded = attempts
                raise
        for item in recorded:
            self._log(item, quiet=batch.relay_down is not None)

    def _write(
        self,
        attempts: list[tuple[Delivery, Outcome]],
        unsent: list[Delivery],
        now: dt.datetime | None,
    ) -> list[Recorded]:
        with self.db.session() as session:
            recorded = queue.record(session, attempts, now or utcnow(), self.config)
            queue.release(session, [d.id for d in unsent], now or utcnow())
        return recorded

    def _log(self, item: Recorded, quiet: bool) -> None:
        """INFO for a mail sent or to be retried; WARNING (someone must look) for a mail
        given up on, or a recipient the relay refused."""
        if self.metrics is not None:
            self.metrics.outbound_result(item.state)
        d = item.delivery
        what = f"outbox {d.id} ({f'case {d.case_id}' if d.case_id else 'no case'}) {d.message_id}"
        if item.state == "failed":
            log.warning("%s failed, gave up: %s", what, item.error)
            return
        if item.refused:
            refused = "; ".join(f"{r}: {why}" for r, why in item.refused.items())
            log.warning("%s refused for %s", what, refused)
        if item.state == "sent":
            log.info("sent %s to %s", what, ", ".join(d.recipients))
        elif not quiet:
            log.info("%s will retry: %s", what, item.error)

    def _relay_is(self, down: str | None, waiting: int) -> None:
        """One WARNING when the relay becomes unreachable, one INFO when it is back."""
        if down and not self._relay_down:
            log.warning("%s; %d mail(s) will retry", down, waiting)
        elif down:
            log.info("%s; %d mail(s) will retry", down, waiting)
        elif self._relay_down:
            log.info("relay %s reachable again", self.config.relay)
        self._relay_down = down is not None
