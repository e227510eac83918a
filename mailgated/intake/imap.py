"""IMAP poller (aioimaplib) for each `[[mailbox]]` with an imap:// or imaps:// url.

It remembers the folder's UIDVALIDITY and the last UID it spooled (state file
under the spool directory), so it takes every new message whatever its flags —
mail already read in another client is still taken (UID tracking, not UNSEEN).
Each new message is fetched with BODY.PEEK[] (which does not set \\Seen),
spooled, and only then marked \\Seen or moved to `move_to`: a failure before
the rename leaves it untouched on the server, to be taken on the next poll.
A message over `[listen] max_message_size` (RFC822.SIZE, asked before the
body is fetched) is recorded instead: its header goes to the quarantine with
the reason (WARNING), the UID counts as taken, and the message is left as it
is on the server for a person to deal with.
Between polls it waits in IDLE when the server offers it (and `idle = true`),
else sleeps `interval` seconds; on any error it reconnects with backoff.
`imaps://` is implicit TLS; `starttls = true` upgrades an `imap://` connection;
`ca_file` names the CAs to trust instead of the system store.

Folder names (the url's path, percent-encoded or not, and `move_to`) may be any
Unicode: they are sent in IMAP's modified UTF-7 (RFC 3501 §5.1.3), quoted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import TYPE_CHECKING, Any

import aioimaplib
from imapclient import imap_utf7

from mailgated.config import tls_client_context
from mailgated.intake.mailbox import Account, PollerService, StateFile, mailbox_lease, parse_account
from mailgated.intake.spool import Envelope, Spool

if TYPE_CHECKING:
    from mailgated.daemon import Daemon

log = logging.getLogger("mailgated.intake")

IDLE_MAX = 29 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
_FETCH = re.compile(rb"FETCH \(.*\{(\d+)\}$")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class ImapError(Exception):
    """The server said NO/BAD to a command we need."""


def mailbox_argument(name: str) -> str:
    """A folder name as an IMAP argument: modified UTF-7, quoted (spaces, quotes, backslashes)."""
    return aioimaplib.quoted(imap_utf7.encode(name).decode("ascii"))


def _check(response: Any, what: str) -> Any:
    if response.result != "OK":
        text = b" ".join(bytes(x) for x in response.lines[-1:]).decode(errors="replace")
        raise ImapError(f"{what} failed: {response.result} {text}")
    return response


class ImapPoller:
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
        self.state = StateFile(spool.path, "imap", account)
        self.source = f"imap:{account.name}"

    async def connect(self) -> aioimaplib.IMAP4:
        acc = self.account
        client: aioimaplib.IMAP4
        if acc.tls:
            client = aioimaplib.IMAP4_SSL(
                acc.host, acc.port, timeout=self.timeout, ssl_context=self.ssl_context
            )
        else:
            client = aioimaplib.IMAP4(acc.host, acc.port, timeout=self.timeout)
        await client.wait_hello_from_server()
        if acc.config.starttls and not acc.tls:
            await self._starttls(client)
        _check(await client.login(acc.user, acc.password()), f"login as {acc.user}")
        return client

    async def _starttls(self, client: aioimaplib.IMAP4) -> None:
        """aioimaplib has no STARTTLS: send it, then upgrade the transport in place."""
        protocol = client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(f"{self.account.host} does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        _check(await protocol.execute(command), "STARTTLS")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, self.ssl_context, server_hostname=self.account.host
        )
        await protocol.capability()

    async def poll_once(self, client: aioimaplib.IMAP4 | None = None) -> int:
        """Spool every message newer than the last UID; returns how many were spooled."""
        own = client is None
        client = client or await self.connect()
        try:
            return await self._take_new(client)
        finally:
            if own:
                await self._logout(client)

    async def _take_new(self, client: aioimaplib.IMAP4) -> int:
        folder = self.account.folder
        selected = _check(await client.select(mailbox_argument(folder)), f"SELECT {folder}")
        validity = next(
            (int(m.group(1)) for line in selected.lines if (m := _UIDVALIDITY.search(bytes(line)))),
            0,
        )
        state = self.state.load()
        last_uid = int(state.get("last_uid", 0))
        if state.get("uidvalidity") not in (None, validity):
            log.warning(
                "%s: UIDVALIDITY changed (%s -> %s): taking the whole folder again",
                self.source,
                state.get("uidvalidity"),
                validity,
            )
            last_uid = 0
        found = _check(await client.uid_search(f"UID {last_uid + 1}:*", charset=None), "UID SEARCH")
        uids = sorted(
            int(u)
            for line in found.lines[:-1]
            for u in bytes(line).split()
            if u.isdigit() and int(u) > last_uid
        )
        sizes = await self._sizes(client, last_uid) if uids and self.max_size else {}
        spooled = 0
        for uid in uids:
            if sizes.get(uid, 0) > self.max_size:
                await self._record_too_large(client, uid, sizes[uid])
                await asyncio.to_thread(self.state.save, {"uidvalidity": validity, "last_uid": uid})
                continue
            raw = await self._fetch(client, uid)
            spool_id = await asyncio.to_thread(self.spool.put, raw, self._envelope())
            await asyncio.to_thread(self.state.save, {"uidvalidity": validity, "last_uid": uid})
            await self._acknowledge(client, uid)
            log.info("%s: spooled %s (UID %d, %d bytes)", self.source, spool_id, uid, len(raw))
            spooled += 1
        if not uids and state.get("uidvalidity") != validity:
            await asyncio.to_thread(
                self.state.save, {"uidvalidity": validity, "last_uid": last_uid}
            )
        return spooled

    def _envelope(self) -> Envelope:
        return Envelope(
            source=self.source,
            envelope_from=None,
            recipients=[],
            section=self.account.section or None,
        )

    async def _sizes(self, client: aioimaplib.IMAP4, last_uid: int) -> dict[int, int]:
        """UID -> RFC822.SIZE of the messages after `last_uid`, before any body is fetched."""
        response = _check(
            await client.uid("fetch", f"{last_uid + 1}:*", "(RFC822.SIZE)"), "FETCH RFC822.SIZE"
        )
        sizes = {}
        for line in response.lines:
            line = bytes(line)
            uid, size = _UID.search(line), _SIZE.search(line)
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _record_too_large(self, client: aioimaplib.IMAP4, uid: int, size: int) -> None:
        head = await self._fetch(client, uid, "BODY.PEEK[HEADER]")
        envelope = self._envelope()
        spool_id = await asyncio.to_thread(
            self.spool.put_too_large, head, size, self.max_size, envelope
        )
        log.warning(
            "%s: UID %d is too large (%d bytes, max_message_size %d): left on the server, "
            "its header recorded as %s in the quarantine",
            self.source, uid, size, self.max_size, spool_id,
        )  # fmt: skip

    async def _fetch(self, client: aioimaplib.IMAP4, uid: int, what: str = "BODY.PEEK[]") -> bytes:
        response = _check(await client.uid("fetch", str(uid), f"({what})"), f"FETCH {uid}")
        lines = response.lines
        for i, line in enumerate(lines[:-1]):
            if isinstance(line, bytes) and _FETCH.search(line):
                return bytes(lines[i + 1])
        raise ImapError(f"FETCH {uid}: no message body in the answer")

    async def _acknowledge(self, client: aioimaplib.IMAP4, uid: int) -> None:
        """Only after the spool rename: \\Seen, or move to the configured folder."""
        target = self.account.config.move_to
        if not target:
            _check(await client.uid("store", str(uid), "+FLAGS.SILENT (\\Seen)"), "STORE \\Seen")
        elif "MOVE" in client.protocol.capabilities:
            _check(
                await client.uid("move", str(uid), mailbox_argument(target)), f"MOVE to {target}"
            )
        else:
            _check(
                await client.uid("copy", str(uid), mailbox_argument(target)), f"COPY to {target}"
            )
            _check(await client.uid("store", str(uid), "+FLAGS.SILENT (\\Deleted)"), "STORE")
            _check(await client.expunge(), "EXPUNGE")

    async def _logout(self, client: aioimaplib.IMAP4) -> None:
        try:
            await asyncio.wait_for(client.logout(), timeout=5)
        except Exception:
            log.debug("%s: logout failed", self.source, exc_info=True)

    async def session(self, stopping: asyncio.Event) -> None:
        """One connection: poll, then IDLE (or sleep) and poll again, until stopped or broken."""
        client = await self.connect()
        try:
            use_idle = self.account.config.idle and client.has_capability("IDLE")
            log.info(
                "%s: connected (%s)",
                self.source,
                "IDLE" if use_idle else f"polling every {self.account.config.interval} s",
            )
            while not stopping.is_set():
                await self.poll_once(client)
                if use_idle:
                    await self._idle(client, stopping)
                else:
                    try:
                        await asyncio.wait_for(stopping.wait(), self.account.config.interval)
                    except TimeoutError:
                        pass
        finally:
            await self._logout(client)

    async def _idle(self, client: aioimaplib.IMAP4, stopping: asyncio.Event) -> None:
        idle = await client.idle_start(timeout=IDLE_MAX)
        push = asyncio.ensure_future(client.wait_server_push(timeout=IDLE_MAX + 5))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({push, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (push, stop):
                task.cancel()
            client.idle_done()
            await asyncio.wait_for(idle, timeout=self.timeout)


def services(daemon: Daemon) -> list[Any]:
    """SERVICE_FACTORIES entry: one poller per imap:// or imaps:// mailbox."""
    spool = Spool(daemon.config.spool.path)
    found: list[Any] = []
    for config in daemon.config.mailbox:
        account = parse_account(config)
        if account.scheme.startswith("imap"):
            poller = ImapPoller(account, spool, max_size=daemon.config.listen.max_message_size)
            lease = mailbox_lease(daemon.db, daemon.config.spool.path, account)
            found.append(PollerService(f"IMAP poller {account.name}", poller.session, lease))
    return found
