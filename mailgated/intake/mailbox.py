"""What the IMAP and POP3 pollers share: the account from a `[[mailbox]]` entry,
their small state file under the spool directory, and the reconnect loop.

State (UIDVALIDITY and last UID for IMAP, the UIDLs already spooled for POP3)
lives in `<spool>/state/<kind>-<user>@<host>-<folder>.json`, written
atomically, never in the database: intake works while the database is down.
Passwords come from `password_file` or `password_env` and are never logged
(the `name` used in logs and in the envelope's source has no password).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mailgated.config import ConfigError, MailboxConfig, read_secret_value, tls_client_context
from mailgated.intake import durable
from mailgated.intake.spool import Envelope, Spool

log = logging.getLogger("mailgated.intake")

DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
MAX_BACKOFF = 300.0
HEALTHY_SESSION = 60.0  # a session that worked this long failed by chance: reconnect in 1 s
STOP_GRACE = 2.0  # seconds a poller gets to log out when the daemon stops


@dataclass(frozen=True)
class Account:
    scheme: str  # imap, imaps, pop3, pop3s
    host: str
    port: int
    user: str
    folder: str  # IMAP folder ("INBOX"); "" for POP3
    section: str
    config: MailboxConfig

    @property
    def tls(self) -> bool:
        return self.scheme.endswith("s")

    @property
    def name(self) -> str:
        """`user@host/folder`: in logs and in the envelope's source; never the password."""
        return f"{self.user}@{self.host}" + (f"/{self.folder}" if self.folder else "")

    def password(self) -> str:
        return read_secret_value(
            self.config.password_file, self.config.password_env, f"mailbox {self.name}"
        )


def parse_account(config: MailboxConfig) -> Account:
    parts = urlsplit(config.url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"mailbox url {config.url!r}: use imap://, imaps://, pop3:// or pop3s://")
    if not parts.hostname or not parts.username:
        raise ConfigError(f"mailbox url {config.url!r} needs user@host")
    if parts.password:
        raise ConfigError(f"mailbox url for {parts.hostname}: put the password in password_file")
    folder = (unquote(parts.path.lstrip("/")) or "INBOX") if scheme.startswith("imap") else ""
    return Account(
        scheme=scheme,
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[scheme],
        user=unquote(parts.username),
        folder=folder,
        section=config.section,
        config=config,
    )


class StateFile:
    """A small JSON document under `<spool>/state/`, replaced atomically."""

    def __init__(self, spool_path: str | os.PathLike[str], kind: str, account: Account) -> None:
        # \w keeps non-ASCII folder names apart (Входящие and Отправленные are two files)
        safe = re.sub(r"[^\w@.+-]+", "_", f"{kind}-{account.name}")
        self.path = Path(spool_path) / "state" / f"{safe}.json"

    def load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return data
        except FileNotFoundError:
            return {}

    def save(self, data: dict[str, Any]) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, durable.DIR_MODE)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, sort_keys=True))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        durable.fsync_dir(str(directory))


async def run_forever(
    what: str, session: Callable[[], Awaitable[None]], stopping: asyncio.Event
) -> None:
    """Run `session` (connect, poll/idle until it fails) again and again with backoff: 1 s
    after a session that had been working a while, doubling while it keeps failing."""
    delay = 1.0
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        started = loop.time()
        try:
            await until_stopped(session(), stopping)
            delay = 1.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if loop.time() - started > HEALTHY_SESSION:
                delay = 1.0
            log.warning("%s: %s; reconnecting in %.0f s", what, _why(exc), delay)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_BACKOFF)


async def until_stopped(work: Awaitable[None], stopping: asyncio.Event) -> None:
    """Await `work`; once `stopping` is set, give it STOP_GRACE seconds to end by itself
    (log out), then cancel it: a poller stuck in a slow command never holds up a stop."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=STOP_GRACE)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


Polling = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Guard = Callable[[Polling, asyncio.Event], Coroutine[Any, Any, None]]
"""Runs `polling(lost)` while it may (a lease is held), until the event (stopping) is set."""


class Poller:
    """What a mailbox poller holds: its account, the spool, its limits, TLS, its state file."""

    kind = ""  # "imap" | "pop3": the state file's and the log's name for the protocol

    def __init__(
        self,
        account: Account,
        spool: Spool,
        timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        max_size: int = 0,
    ) -> None:
        self.account = account
        self.spool = spool
        self.timeout = timeout
        self.max_size = max_size
        self.ssl_context = ssl_context or tls_client_context(
            account.config.ca_file, f"mailbox {account.name}"
        )
        self.state = StateFile(spool.path, self.kind, account)
        self.source = f"{self.kind}:{account.name}"
        self.on_poll: Callable[[], None] | None = None  # told after each good poll (status)
        self.on_idle: Callable[[bool], None] | None = None  # told on entering, leaving IDLE

    def _envelope(self) -> Envelope:
        """The envelope of a polled message: its source and the account's section."""
        return Envelope(
            source=self.source,
            envelope_from=None,
            recipients=[],
            section=self.account.section or None,
        )


class PollerService:
    """A daemon service running one poller's `session` loop as a task; with a `guard`
    (the composition root passes `leases.while_held` for the mailbox's lease), only
    while the guard lets it run."""

    def __init__(
        self,
        name: str,
        session: Callable[[asyncio.Event], Awaitable[None]],
        guard: Guard | None = None,
    ) -> None:
        self.name = name
        self._session = session
        self.guard = guard
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = asyncio.Event()

        async def polling(stop: asyncio.Event) -> None:
            await run_forever(self.name, lambda: self._session(stop), stop)

        work = (
            polling(self._stopping) if self.guard is None else self.guard(polling, self._stopping)
        )
        self._task = asyncio.create_task(work, name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
