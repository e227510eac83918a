"""An aiosmtpd server that stands in for the outbound relay, on an ephemeral port."""

from __future__ import annotations

import email
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
            )
        )
        return "250 queued"


@contextmanager
def smtp_sink(
    port: int | None = None, ssl_context: ssl.SSLContext | None = None
) -> Iterator[tuple[SinkHandler, int]]:
    """Run a sink (implicit TLS with `ssl_context`); yields its handler and port."""
    handler = SinkHandler()
    port = port or free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, decode_data=False, ssl_context=ssl_context
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
