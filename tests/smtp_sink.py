"""An aiosmtpd server that stands in for the outbound relay, on an ephemeral port.

Like a real relay it refuses a line over 998 octets (RFC 5321 4.5.3.1.6; it
stores nothing then), offers SMTPUTF8 only when asked to, and can be scripted
to answer any stage with the reply a test needs: the greeting, MAIL, RCPT per
recipient, the end of DATA; and to drop the connection after N mails in one
session, as relays with a per-connection limit do.
"""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

MAX_LINE = 998  # octets without CRLF
WAIT = 10.0  # seconds the sink waits for its clients to be hung up on when it stops


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=default)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class SinkHandler:
    """What the relay received, and what it is told to answer.

    `greeting`, `mail` and `data` replace the 220/250 of their stage while set;
    `rcpt` maps a recipient (lower case) to its reply; `refuse` is the old
    shorthand for a 550 at RCPT. `drop_after` closes the connection at the MAIL
    of the (N+1)th mail of a session. `on_data` runs after a mail is stored and
    before its 250; `on_command` runs on every MAIL/RSET/QUIT (name, session).
    """

    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    greeting: str | None = None
    mail: str | None = None
    rcpt: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    drop_after: int | None = None
    too_long: int = 0  # mails refused for a long line
    sessions: int = 0  # sessions that said EHLO
    on_data: Callable[[Received], None] | None = None
    on_command: Callable[[str, Any], None] | None = None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.sessions += 1  # counted here: aiosmtpd's Controller connects once itself at start
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        self._command("MAIL", session)
        count = getattr(session, "mails", 0)
        if self.drop_after is not None and count >= self.drop_after:
            server.transport.close()
            return "421 4.3.2 closing"  # never read: the connection is gone
        if self.mail:
            return self.mail
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 no such user here"
        scripted = self.rcpt.get(address.lower())
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self._command("RSET", session)
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self._command("QUIT", session)
        return "221 Bye"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if any(len(line.rstrip(b"\r")) > MAX_LINE for line in data.split(b"\n")):
            self.too_long += 1
            return "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
        if self.data:
            return self.data
        received = Received(
            envelope.mail_from, list(envelope.rcpt_tos), data, list(envelope.mail_options)
        )
        self.messages.append(received)
        session.mails = getattr(session, "mails", 0) + 1
        if self.on_data is not None:
            self.on_data(received)
        return "250 2.0.0 queued"

    def _command(self, name: str, session: Any) -> None:
        if self.on_command is not None:
            self.on_command(name, session)


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with a scripted greeting (e.g. `421 4.3.2 busy`, then it hangs up)."""

    async def _handle_client(self) -> None:
        handler: SinkHandler = self.event_handler
        if handler.greeting:
            await self.push(handler.greeting)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


class _SinkController(Controller):
    def __init__(self, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.connections: list[SMTP] = []

    def factory(self) -> SMTP:
        session = _ScriptedSMTP(self.handler, **self.SMTP_kwargs)
        self.connections.append(session)
        return session

    def stop(self, no_assert: bool = False) -> None:
        """Hang up on the clients still connected, then stop: aiosmtpd's stop only closes
        the listening socket and cancels its tasks, leaving their sockets open."""
        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._hang_up(), self.loop).result(WAIT)
        super().stop(no_assert)

    async def _hang_up(self) -> None:
        for session in self.connections:
            if session.transport is not None:
                session.transport.abort()  # type: ignore[attr-defined]
        deadline = asyncio.get_running_loop().time() + WAIT
        # connection_lost (which clears .transport) runs on a later turn of the loop
        while any(s.transport is not None for s in self.connections):
            assert asyncio.get_running_loop().time() < deadline, "sink sessions did not close"
            await asyncio.sleep(0.001)


@contextmanager
def smtp_sink(
    port: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    smtputf8: bool = False,
) -> Iterator[tuple[SinkHandler, int]]:
    """Run a sink (implicit TLS with `ssl_context`); yields its handler and port."""
    handler = SinkHandler()
    port = port or free_port()
    controller = _SinkController(
        handler,
        hostname="127.0.0.1",
        port=port,
        decode_data=False,
        ssl_context=ssl_context,
        enable_SMTPUTF8=smtputf8,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
