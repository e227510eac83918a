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
from typing import Any

import aioimaplib
from imapclient import imap_utf7

from mailgated.intake.mailbox import Poller

log = logging.getLogger("mailgated.intake")

IDLE_MAX = 29 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
_FETCH = re.compile(rb"FETCH \(.*\{(\d+)\}$")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class ImapError(Exception):
    """The server said NO/BAD to a command we need."""


class ServerClosed(ImapError):
    """The server closed the connection (BYE, or the socket reached EOF)."""


class Connection(aioimaplib.IMAP4):  # type: ignore[misc]  # aioimaplib is untyped
    """aioimaplib's client, told at once when the server closes the connection: the
    commands waiting for an answer end then (not when their timeout runs out), IDLE
    stops waiting, and `lost` is set. (Without it a Dovecot restart during IDLE was
    noticed ~60 s later, when the IDLE command timed out; issue 12.)"""

    def __init__(
        self, host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.lost = asyncio.Event()
        super().__init__(
            host, port, timeout=timeout, conn_lost_cb=self._on_lost, ssl_context=ssl_context
        )

    def _on_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        protocol = self.protocol
        for command in [protocol.pending_sync_command, *protocol.pending_async_commands.values()]:
            if command is not None:
                command.close(b"connection closed by the server", "BYE")


def _alive(client: aioimaplib.IMAP4) -> None:
    if isinstance(client, Connection) and client.lost.is_set():
        raise ServerClosed("the server closed the connection")


def _disconnect(client: aioimaplib.IMAP4, abort: bool) -> None:
    """Close the client's socket, or stop it being opened; aioimaplib leaves it open when
    LOGOUT is not answered, and has no call to close it."""
    connecting = getattr(client, "_client_task", None)
    if connecting is not None and not connecting.done():
        connecting.cancel()
    transport = client.protocol.transport
    if transport is None:
        return
    if abort:
        transport.abort()
    else:
        transport.close()


def mailbox_argument(name: str) -> str:
    """A folder name as an IMAP argument: modified UTF-7, quoted (spaces, quotes, backslashes)."""
    return str(aioimaplib.quoted(imap_utf7.encode(name).decode("ascii")))


def _check(response: Any, what: str) -> Any:
    if response.result != "OK":
        text = b" ".join(bytes(x) for x in response.lines[-1:]).decode(errors="replace")
        failed = ServerClosed if response.result == "BYE" else ImapError  # see Connection
        raise failed(f"{what} failed: {response.result} {text}")
    return response


class ImapPoller(Poller):
    kind = "imap"

    async def connect(self) -> Connection:
        acc = self.account
        context = self.ssl_context if acc.tls else None
        client = Connection(acc.host, acc.port, self.timeout, context)
        try:
            await client.wait_hello_from_server()
            if acc.config.starttls and not acc.tls:
                await self._starttls(client)
            _check(await client.login(acc.user, acc.password()), f"login as {acc.user}")
        except BaseException:  # no greeting, a refused login: the socket is closed all the same
            _disconnect(client, abort=True)
            raise
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
            count = await self._take_new(client)
            if self.on_poll is not None:
                self.on_poll()
            return count
        finally:
            if own:
                await self._logout(client)

    async def _take_new(self, client: aioimaplib.IMAP4) -> int:
        folder = self.account.folder
        _alive(client)
        selected = _check(await client.select(mailbox_argument(folder)), f"SELECT {folder}")
        validity = next(
            (int(m.group(1)) for line in selected.lines if (m := _UIDVALIDITY.search(bytes(line)))),
            0,
        )
        state = self.state.load()
        record: dict[str, Any] = {
            "uidvalidity": validity,
            "last_uid": int(state.get("last_uid", 0)),
            "unacknowledged": [int(u) for u in state.get("unacknowledged", [])],
        }
        if state.get("uidvalidity") not in (None, validity):
            log.warning(
                "%s: UIDVALIDITY changed (%s -> %s): taking the whole folder again",
                self.source,
                state.get("uidvalidity"),
                validity,
            )
            record.update(last_uid=0, unacknowledged=[])  # the old UIDs name nothing now
        if record["unacknowledged"]:
            await self._finish_acknowledgements(client, record)
        last_uid = record["last_uid"]
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
                record["last_uid"] = uid
                await asyncio.to_thread(self.state.save, record)
                continue
            raw = await self._fetch(client, uid)
            spool_id = await self.spool.off_loop(self.spool.put, raw, self._envelope())
            # spooled, not yet flagged/moved: a crash or a lost connection from here on
            # leaves the UID in "unacknowledged", finished by the next poll (issue 12)
            record["last_uid"] = uid
            record["unacknowledged"] = [*record["unacknowledged"], uid]
            await asyncio.to_thread(self.state.save, record)
            await self._acknowledge(client, str(uid))
            record["unacknowledged"] = [u for u in record["unacknowledged"] if u != uid]
            log.info(
                "%s: spooled %s (UID %d, %d bytes)",
                self.source,
                spool_id,
                uid,
                len(raw),
                extra={"spool_id": spool_id},
            )
            spooled += 1
        if record != state:  # the last acknowledgement, or a new UIDVALIDITY
            await asyncio.to_thread(self.state.save, record)
        return spooled

    async def _finish_acknowledgements(
        self, client: aioimaplib.IMAP4, record: dict[str, Any]
    ) -> None:
        """Flag or move what an earlier poll spooled but could not mark (a crash, a lost
        connection in between); a UID the server no longer has is dropped."""
        wanted = record["unacknowledged"]
        found = _check(
            await client.uid_search("UID " + ",".join(map(str, wanted)), charset=None),
            "UID SEARCH",
        )
        present = {int(u) for line in found.lines[:-1] for u in bytes(line).split() if u.isdigit()}
        still = [u for u in wanted if u in present]
        if still:
            uid_set = ",".join(map(str, still))
            try:
                await self._acknowledge(client, uid_set)
            except ServerClosed:
                raise
            except ImapError as exc:  # the server refuses: kept for later, new mail goes on
                log.warning("%s: UID %s spooled, still not marked: %s", self.source, uid_set, exc)
            else:
                log.info("%s: marked UID %s, spooled before an interruption", self.source,
                         uid_set)  # fmt: skip
                still = []
        gone = [u for u in wanted if u not in present]
        if gone:
            log.info("%s: UID %s spooled before an interruption, no longer on the server",
                     self.source, ",".join(map(str, gone)))  # fmt: skip
        record["unacknowledged"] = still
        await asyncio.to_thread(self.state.save, record)

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
        spool_id = await self.spool.off_loop(
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

    async def _acknowledge(self, client: aioimaplib.IMAP4, uid: str) -> None:
        """Only after the spool rename: \\Seen, or move to the configured folder (`uid`: one
        UID or a comma-separated set)."""
        target = self.account.config.move_to
        if not target:
            _check(await client.uid("store", uid, "+FLAGS.SILENT (\\Seen)"), "STORE \\Seen")
        elif "MOVE" in client.protocol.capabilities:
            _check(await client.uid("move", uid, mailbox_argument(target)), f"MOVE to {target}")
        else:
            _check(await client.uid("copy", uid, mailbox_argument(target)), f"COPY to {target}")
            _check(await client.uid("store", uid, "+FLAGS.SILENT (\\Deleted)"), "STORE")
            _check(await client.expunge(), "EXPUNGE")

    async def _logout(self, client: aioimaplib.IMAP4) -> None:
        done = False
        try:
            await asyncio.wait_for(client.logout(), timeout=5)
            done = True
        except Exception:
            log.debug("%s: logout failed", self.source, exc_info=True)
        finally:  # the server hangs up after LOGOUT; when it did not answer, we do
            _disconnect(client, abort=not done)

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

    async def _idle(self, client: Connection, stopping: asyncio.Event) -> None:
        """Wait in IDLE for the server's news, our stop, or the end of the connection."""
        if self.on_idle is not None:
            self.on_idle(True)
        try:
            await self._idle_once(client, stopping)
        finally:
            if self.on_idle is not None:
                self.on_idle(False)

    async def _idle_once(self, client: Connection, stopping: asyncio.Event) -> None:
        idle = await client.idle_start(timeout=IDLE_MAX)
        push = asyncio.ensure_future(client.wait_server_push(timeout=IDLE_MAX + 5))
        stop = asyncio.ensure_future(stopping.wait())
        lost = asyncio.ensure_future(client.lost.wait())
        try:
            await asyncio.wait({push, stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (push, stop, lost):
                task.cancel()
            if not client.lost.is_set():
                client.idle_done()
                await asyncio.wait_for(idle, timeout=self.timeout)
        news = push.result() if push.done() and not push.cancelled() else []
        if isinstance(news, list) and any(bytes(line).startswith(b"BYE") for line in news):
            raise ServerClosed(f"the server said {bytes(news[0]).decode(errors='replace')}")
        _alive(client)
