"""The sender: a daemon service that delivers the outbox to the relay with aiosmtplib.

Database work runs in a thread (the ORM is synchronous); SMTP runs on the
loop. A message is claimed and leased in one transaction, sent, and its outcome
recorded in another, so a crash between the two only means the message is
sent again after the lease, never lost. TLS to the relay (`tls`, `starttls`)
verifies its certificate against `ca_file`, else the system's trust store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

import aiosmtplib

from mailgated.config import OutboundConfig, read_secret_value, tls_client_context
from mailgated.models import utcnow
from mailgated.outbound import outbox

if TYPE_CHECKING:
    from mailgated.db import Database

log = logging.getLogger("mailgated.outbound")


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    return host.strip("[]"), int(port)


class Sender:
    name = "sender"

    def __init__(self, db: Database, config: OutboundConfig, interval: float = 1.0) -> None:
        self.db = db
        self.config = config
        self.interval = interval
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._password = read_secret_value(
            config.password_file, config.password_env, "outbound relay password"
        )
        self._tls_context = tls_client_context(config.ca_file, "outbound relay")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sender")

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
                sent = await self.run_once()
            except Exception:
                log.exception("sender pass failed; retrying")
                sent = 0
            if sent == 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=self.interval)
                except TimeoutError:
                    pass

    async def run_once(self, now: dt.datetime | None = None) -> int:
        """Send what is due (now, or at `now`); returns how many were attempted."""
        deliveries = await asyncio.to_thread(self._claim, now or utcnow())
        for delivery in deliveries:
            await self._send(delivery, now)
        return len(deliveries)

    def _claim(self, now: dt.datetime) -> list[outbox.Delivery]:
        with self.db.session() as session:
            return outbox.claim(session, now)

    async def _send(self, delivery: outbox.Delivery, now: dt.datetime | None = None) -> None:
        host, port = split_hostport(self.config.relay, 465 if self.config.tls else 25)
        try:
            errors, _ = await aiosmtplib.send(
                delivery.raw,
                sender=delivery.from_addr,
                recipients=delivery.recipients,
                hostname=host,
                port=port,
                username=self.config.username or None,
                password=self._password or None,
                use_tls=self.config.tls,
                start_tls=self.config.starttls,
                tls_context=self._tls_context,
                timeout=self.config.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._record(delivery, f"all recipients refused: {exc}", True, now)
        except aiosmtplib.SMTPResponseException as exc:
            await self._record(delivery, f"{exc.code} {exc.message}", exc.code >= 500, now)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._record(delivery, f"relay {self.config.relay}: {exc}", False, now)
        else:
            await asyncio.to_thread(self._done, delivery, now)
            log.info(
                "sent outbox %d %s to %s",
                delivery.id,
                delivery.message_id,
                ", ".join(delivery.recipients),
            )
            if errors:
                log.warning("outbox %d: some recipients refused: %s", delivery.id, errors)

    def _done(self, delivery: outbox.Delivery, now: dt.datetime | None) -> None:
        with self.db.session() as session:
            outbox.mark_sent(session, delivery.id, now or utcnow())

    async def _record(
        self, delivery: outbox.Delivery, error: str, permanent: bool, now: dt.datetime | None
    ) -> None:
        def write() -> str:
            with self.db.session() as session:
                return outbox.mark_failed(
                    session, delivery.id, error, now or utcnow(), self.config, permanent
                )

        state = await asyncio.to_thread(write)
        log.warning(
            "outbox %d %s not delivered (%s): %s",
            delivery.id,
            delivery.message_id,
            "gave up" if state == "failed" else "will retry",
            error,
        )
