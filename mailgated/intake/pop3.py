"""POP3 poller (stdlib poplib, in a worker thread) for each pop3:// or pop3s:// `[[mailbox]]`.

UIDL tracking: the UIDLs already spooled are kept in a state file under the
spool directory. Each new message is retrieved, spooled, its UIDL recorded,
and only then marked for deletion with DELE; the deletions take effect at
QUIT (RFC 1939 UPDATE state), so a connection lost before QUIT leaves the
mail on the server and the UIDL record keeps it from being spooled twice.
With `keep = true` nothing is deleted and UIDL alone decides what is new.
A message over `[listen] max_message_size` (by LIST, before it is retrieved)
is recorded instead: its header (TOP n 0) goes to the quarantine with the
reason, its UIDL is remembered so it is not taken again, and it is left on
the server for a person to deal with (logged at WARNING).
`pop3s://` is implicit TLS; `starttls = true` sends STLS on `pop3://`; `ca_file`
names the CAs to trust instead of the system store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import poplib
import socket
from collections.abc import Callable
from typing import Any

from mailgated.intake.mailbox import Poller

log = logging.getLogger("mailgated.intake")


class _Tracking:
    """poplib's client telling its owner about its socket as soon as it exists (before the
    greeting is read), so that a stopping daemon can cut a connection stuck in a read."""

    def __init__(self, *args: Any, on_socket: Callable[[socket.socket], None], **kw: Any):
        self._on_socket = on_socket
        super().__init__(*args, **kw)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        self._on_socket(sock)
        return sock


class _TrackedPOP3(_Tracking, poplib.POP3):
    pass


class _TrackedPOP3_SSL(_Tracking, poplib.POP3_SSL):  # noqa: N801 (after poplib.POP3_SSL)
    pass


class Pop3Poller(Poller):
    kind = "pop3"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._sockets: set[socket.socket] = set()  # of the poll in progress (a worker thread)

    def abort(self) -> None:
        """Cut the connection of a poll in progress (from any thread): its blocked read
        ends at once, without QUIT, so nothing marked for deletion is deleted."""
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def connect(self) -> poplib.POP3:
        acc = self.account
        client: poplib.POP3
        if acc.tls:
            client = _TrackedPOP3_SSL(
                acc.host,
                acc.port,
                timeout=self.timeout,
                context=self.ssl_context,
                on_socket=self._sockets.add,
            )
        else:
            client = _TrackedPOP3(
                acc.host, acc.port, timeout=self.timeout, on_socket=self._sockets.add
            )
        try:
            if not acc.tls and acc.config.starttls:
                client.stls(self.ssl_context)
            client.user(acc.user)
            client.pass_(acc.password())
        except BaseException:  # a refused login: no QUIT, the socket closed all the same
            client.close()
            raise
        return client

    def poll_once(self) -> int:
        """One connection: spool what is new, DELE what is spooled, QUIT. Blocking."""
        try:
            client = self.connect()
            try:
                count = self._take_new(client)
            except BaseException:
                client.close()  # no QUIT: nothing marked for deletion is deleted
                raise
            client.quit()
        finally:
            for sock in self._sockets:  # poplib closes nothing when the greeting never came
                sock.close()
            self._sockets.clear()
        if self.on_poll is not None:
            self.on_poll()
        return count

    def _take_new(self, client: poplib.POP3) -> int:
        listing: dict[int, str] = {}
        for line in client.uidl()[1]:
            index, _, uidl = line.decode("ascii", "replace").partition(" ")
            listing[int(index)] = uidl.strip()
        state = self.state.load()
        done = set(state.get("uidls", []))
        done &= set(listing.values())  # forget what is gone from the server
        too_large = set(state.get("too_large", [])) & set(listing.values())
        sizes = self._sizes(client) if self.max_size else {}
        count = 0
        for number, uidl in sorted(listing.items()):
            if uidl in too_large:
                continue  # recorded once, left on the server
            if sizes.get(number, 0) > self.max_size:
                self._record_too_large(client, number, uidl, sizes[number])
                too_large.add(uidl)
                self.state.save({"uidls": sorted(done), "too_large": sorted(too_large)})
                continue
            if uidl not in done:
                raw = b"\r\n".join(client.retr(number)[1]) + b"\r\n"
                spool_id = self.spool.put(raw, self._envelope())
                done.add(uidl)
                self.state.save({"uidls": sorted(done), "too_large": sorted(too_large)})
                count += 1
                log.info(
                    "%s: spooled %s (UIDL %s, %d bytes)",
                    self.source,
                    spool_id,
                    uidl,
                    len(raw),
                    extra={"spool_id": spool_id},
                )
            if not self.account.config.keep:
                client.dele(number)  # already spooled (now or by an earlier poll)
        self.state.save({"uidls": sorted(done), "too_large": sorted(too_large)})
        return count

    def _sizes(self, client: poplib.POP3) -> dict[int, int]:
        """Message number -> size in octets, from LIST (RFC 1939 scan listings)."""
        sizes = {}
        for line in client.list()[1]:
            number, _, size = line.decode("ascii", "replace").partition(" ")
            if number.isdigit() and size.strip().isdigit():
                sizes[int(number)] = int(size.strip())
        return sizes

    def _record_too_large(self, client: poplib.POP3, number: int, uidl: str, size: int) -> None:
        head = b"\r\n".join(client.top(number, 0)[1]) + b"\r\n"
        spool_id = self.spool.put_too_large(head, size, self.max_size, self._envelope())
        log.warning(
            "%s: message UIDL %s is too large (%d bytes, max_message_size %d): left on the "
            "server, its header recorded as %s in the quarantine",
            self.source, uidl, size, self.max_size, spool_id,
        )  # fmt: skip

    async def session(self, stopping: asyncio.Event) -> None:
        """Poll every `interval` seconds until stopped; an error ends the session (backoff)."""
        while not stopping.is_set():
            try:
                await asyncio.to_thread(self.poll_once)
            except asyncio.CancelledError:  # the daemon stops: free the worker thread too
                self.abort()
                raise
            try:
                await asyncio.wait_for(stopping.wait(), self.account.config.interval)
            except TimeoutError:
                pass
