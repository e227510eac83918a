"""SMTP and LMTP listeners inside `mailgated run` (aiosmtpd on the daemon's own loop).

What a sending MTA sees:
  RCPT   250 for a section address (plus-addressing: `support+x@` is support),
         550 5.1.1 for any other address, 451 while the address list has never
         been loaded (database down since start-up);
  MAIL   552 when the declared SIZE is over `[listen] max_message_size`,
         452 4.3.1 when the spool's disk cannot hold it;
  DATA   250 only after the spool rename, 451 4.3.0 on a spool failure,
         552 for a message over the limit; LMTP answers once per recipient
         (RFC 2033). One spool file per message with all accepted recipients
         (per-recipient copies would look like duplicates to processing, which
         dedupes on Message-ID and content hash, and routes by recipient).
An exception inside a handler never reaches aiosmtpd (which would answer 500
with our internal text and make the sender bounce): it is logged and
answered 451, so the sender retries. Spool writes run in a worker thread so a
slow disk never stalls other connections; the messages spooled at the same time
share one fsync of `new/` (see `Spool.put`). STARTTLS is offered when
`[listen] tls_cert` is set.

Per message the listener's own work is kept small (issue 15; `QuickSMTP`): a plain
`<local@domain>` in MAIL and RCPT is read with one regular expression (aiosmtpd parses
every address with the `email` package's header parser, a tenth of a millisecond each;
anything else still goes that way), the DATA section is read in chunks up to each
`.<CR><LF>` instead of one awaited line at a time (same bytes, same 500 and 552), and
the free space MAIL's SIZE is checked against is looked up at most once a second (the
spool write itself still fails with 451 on a full disk).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, Session, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mailgated.config import parse_listen
from mailgated.intake.addresses import SectionAddresses
from mailgated.intake.spool import Envelope, Spool
from mailgated.message.headers import DOT_ATOM, HOST

if TYPE_CHECKING:
    from mailgated.config import ListenConfig

log = logging.getLogger("mailgated.intake")

OK_RCPT = "250 2.1.5 OK"
ERR_451_SPOOL = "451 4.3.0 Cannot store the message now, try again later"
ERR_451_INTERNAL = "451 4.3.0 Temporary local problem, try again later"
ERR_451_NO_LIST = "451 4.3.0 Recipient list not available yet, try again later"
LONGEST_LINE = 1024 * 1024
ERR_452_STORAGE = "452 4.3.1 Insufficient system storage, try again later"
ERR_421_STOPPING = "421 4.3.2 Service shutting down, try again later"
FREE_SPACE_TTL = 1.0  # seconds the spool's free space, looked up for MAIL's SIZE, is reused
# `<local@domain>` with a dot-atom local part and an ASCII host name: what nearly every
# MAIL and RCPT carries, and what aiosmtpd's parser returns unchanged (RFC 5321 4.1.2)
PLAIN_PATH = re.compile(rf"<({DOT_ATOM})@({HOST})>")


def _size_option(mail_options: list[str]) -> int | None:
    for option in mail_options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class IntakeHandler:
    """aiosmtpd handler: checks recipients against the section list, spools on DATA."""

    def __init__(
        self,
        spool: Spool,
        book: SectionAddresses,
        protocol: str,
        on_spooled: Callable[[], None] | None = None,
    ) -> None:
        self.spool = spool
        self.book = book
        self.protocol = protocol  # "smtp" | "lmtp"
        self.on_spooled = on_spooled  # processing is told at once, rather than at its next look
        self.draining = False  # the daemon is stopping: no new work (421 4.3.2)
        self.in_data = 0  # sessions receiving or spooling a message now
        self._free: tuple[float, int] | None = None  # (when, bytes) of the last look

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.draining:
            return ERR_421_STOPPING
        try:
            size = _size_option(mail_options)
            if size is not None and size * 2 > await self._free_space():
                return ERR_452_STORAGE
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 2.1.0 OK"
        except Exception:
            log.exception("%s: error in MAIL FROM", self.protocol)
            return ERR_451_INTERNAL

    async def _free_space(self) -> int:
        """The spool's free bytes, looked up (in a thread) at most every FREE_SPACE_TTL s."""
        now = asyncio.get_running_loop().time()
        if self._free is None or now - self._free[0] >= FREE_SPACE_TTL:
            self._free = (now, await self.spool.off_loop(self._free_bytes))
        return self._free[1]

    def _free_bytes(self) -> int:
        stat = os.statvfs(self.spool.path)
        return stat.f_bavail * stat.f_frsize

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.draining:
            return ERR_421_STOPPING
        try:
            if await self.book.lookup(address) is None:
                if not self.book.loaded:
                    return ERR_451_NO_LIST
                log.info(
                    "%s: refused recipient <%s> (not a section address)", self.protocol, address
                )
                return f"550 5.1.1 <{address}>: no such address here (not a section address)"
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return OK_RCPT
        except Exception:
            log.exception("%s: error in RCPT TO", self.protocol)
            return ERR_451_INTERNAL

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        try:
            raw = envelope.original_content or b""
            status = await self._spool(raw, envelope, list(envelope.rcpt_tos))
        except Exception:
            log.exception("%s: error in DATA", self.protocol)
            status = ERR_451_INTERNAL
        if self.protocol == "lmtp":  # RFC 2033 4.2: one reply per accepted recipient
            return "\r\n".join([status] * len(envelope.rcpt_tos))
        return status

    async def _spool(self, raw: bytes, smtp_env: SmtpEnvelope, recipients: list[str]) -> str:
        sections = {self.book.section_for(r) for r in recipients}
        sender = smtp_env.mail_from or ""
        envelope = Envelope(
            source=self.protocol,
            envelope_from="" if sender.strip() in ("", "<>") else sender,
            recipients=recipients,
            section=sections.pop() if len(sections) == 1 else None,
        )
        try:
            spool_id = await self.spool.off_loop(self.spool.put, raw, envelope)
        except OSError as exc:
            log.error(
                "%s: cannot spool message from <%s>: %s", self.protocol, smtp_env.mail_from, exc
            )
            return ERR_451_SPOOL
        if self.on_spooled is not None:
            self.on_spooled()
        log.info(
            "%s: spooled %s from <%s> to %s (%d bytes)",
            self.protocol,
            spool_id,
            smtp_env.mail_from,
            ", ".join(recipients),
            len(raw),
            extra={"spool_id": spool_id},
        )
        return f"250 2.0.0 OK queued as {spool_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("%s: unexpected error: %r", self.protocol, error)
        return ERR_451_INTERNAL


def tls_context(listen: ListenConfig) -> ssl.SSLContext | None:
    if not listen.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(listen.tls_cert, listen.tls_key or None)
    return context


class QuickSMTP(SMTP):
    """aiosmtpd's server with its two busiest paths done in bulk, the replies the same (the
    listeners' base): the common address in MAIL and RCPT read by a regular expression,
    and the DATA section read in chunks up to each `.<CR><LF>` rather than one awaited
    line at a time (aiosmtpd's way costs a few microseconds a line: 50 µs for a 2 KB
    message, milliseconds for a large one)."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        found = PLAIN_PATH.match(arg)
        if found is not None:
            rest = arg[found.end() :].lstrip(" \t")
            odd = rest.startswith("(") or not rest.isprintable()  # a comment, other spaces
            if not odd and not (self.local_part_limit and len(found[1]) > self.local_part_limit):
                return f"{found[1]}@{found[2]}", rest
        return super()._getaddr(arg)  # <>, quoted, UTF-8, literals, comments; over the limit

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)  # what aiosmtpd does besides (not used here)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            error, content = await self._read_data()
        except asyncio.CancelledError:  # the connection was lost (as aiosmtpd does)
            self._writer.close()
            raise
        if error:
            await self.push(error)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[str, bytes]:
        """The DATA section up to the line `.`, dot-unstuffed (RFC 5321 4.5.2), or aiosmtpd's
        refusal: 500 for a line longer than `line_length_limit`, 552 for data over
        `data_size_limit`, whichever came first (a line that overruns the limit in the same
        chunk as the size goes over: 500, as aiosmtpd notices it while reading the line)."""
        limit, longest = self.data_size_limit, self.line_length_limit
        chunks: list[bytes] = []
        size = 0  # bytes read, the terminator not counted
        run = 0  # bytes of the line being read so far (since the last CRLF, which ends it)
        before = b"\r\n"  # the two bytes before the chunk: the data starts a line
        error = ""
        while True:
            try:
                chunk = await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:  # no `.<CR><LF>` within the stream limit
                chunk = await self._reader.readexactly(exc.consumed)
            tail = (before + chunk[-5:])[-5:]
            end = tail.endswith(b".\r\n") and tail[:2] == b"\r\n"  # the line `.`
            body = chunk[:-3] if end else chunk
            first = body.find(b"\r\n")
            if first < 0:
                run += len(body)
                widest = run
            else:
                inner = body[first + 2 : body.rfind(b"\r\n")] if len(body) > longest else b""
                widest = max(run + first, *map(len, inner.split(b"\r\n")))
                run = len(body) - body.rfind(b"\r\n") - 2
                widest = max(widest, run)
            size += len(body)
            if not error and max(widest, run) + 2 > longest:  # aiosmtpd counts the CRLF
                error = "500 Line too long (see RFC5321 4.5.3.1.6)"
            elif not error and limit and size > limit:
                error = "552 Error: Too much mail data"
            if not error:
                chunks.append(body)
            elif chunks:
                chunks = []  # not kept: refused in the end
            if end:
                break
            before = tail[-2:]
        if error:
            return error, b""
        content = b"".join(chunks)
        if content.startswith(b".") or b"\r\n." in content:  # a line began with a dot
            content = content[1:] if content.startswith(b".") else content
            content = content.replace(b"\r\n.", b"\r\n")
        return "", content


class _Draining(SMTP):
    """The stop of `Listener.drain`: a session that opens while the daemon stops is told
    421 4.3.2 at once (RFC 5321 3.8); a DATA in progress is counted until it is answered."""

    async def _handle_client(self) -> None:
        handler = self.event_handler
        if getattr(handler, "draining", False):
            await self.push(ERR_421_STOPPING)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        handler.in_data += 1
        try:
            await super().smtp_DATA(arg)
        finally:
            handler.in_data -= 1


class Listener:
    """One SMTP or LMTP server socket on the running loop; a daemon service."""

    def __init__(
        self, protocol: str, address: str, handler: IntakeHandler, listen: ListenConfig
    ) -> None:
        self.name = f"{protocol} listener {address}"
        self.protocol = protocol
        self.address = address
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self.port: int | None = None
        self.reconfigure(listen)

    def reconfigure(self, listen: ListenConfig) -> None:
        """Settings for the sessions that start from now on (a renewed TLS certificate, the
        size limit, the hostname); sessions already open go on as they began (SIGHUP)."""
        self.listen = listen
        self.options: dict[str, Any] = dict(
            data_size_limit=listen.max_message_size or None,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=listen.hostname or socket.gethostname(),
            ident="mailgated",
        )
        context = tls_context(listen)
        if context is not None:
            self.options["tls_context"] = context
        # A client sending bare LF line ends delivers one huge "line"; aiosmtpd's
        # 1001-byte default would answer 500 and make the sender bounce it.
        base = LMTP if self.protocol == "lmtp" else SMTP
        longest = max(LONGEST_LINE, listen.max_message_size + 2)
        self.server_class = type(
            f"Intake{base.__name__}", (_Draining, QuickSMTP, base), {"line_length_limit": longest}
        )

    def _protocol_factory(self) -> SMTP:
        server: SMTP = self.server_class(self.handler, **self.options)
        return server

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, where = parse_listen(self.address)
        if host == "unix":
            self.server = await loop.create_unix_server(self._protocol_factory, str(where))
        else:
            self.server = await loop.create_server(self._protocol_factory, host, int(where))
            self.port = self.server.sockets[0].getsockname()[1]
        log.info("%s listening on %s", self.protocol.upper(), self.bound())

    def bound(self) -> str:
        return self.address if self.port is None else f"{parse_listen(self.address)[0]}:{self.port}"

    def drain(self) -> None:
        """Stop taking new work: new sessions and new transactions get 421 4.3.2; a message
        being received is still spooled and answered 250."""
        self.handler.draining = True

    async def drained(self, grace: float) -> None:
        """Wait (at most `grace` seconds) until no message is being received or spooled."""
        deadline = asyncio.get_running_loop().time() + grace
        while self.handler.in_data and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
