"""A whole mailgated for conversation tests: `mailgated run` in a thread, a relay sink, the CLI.

The daemon is the real one (SMTP listener, processing, outbox sender) on an
ephemeral port; the relay is an aiosmtpd sink; mail goes in with smtplib, like
any MTA's. Tests read as conversations: send a mail, wait for the mails that
come out of the relay, look at the case with `mailgated case show --json`.
"""

from __future__ import annotations

import asyncio
import email
import re
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import default
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from conftest import MG, engine_url
from smtp_sink import Received, SinkHandler, free_port, smtp_sink

from mailgated.app import App
from mailgated.config import (
    Config,
    ListenConfig,
    MailboxConfig,
    OutboundConfig,
    ProcessingConfig,
    RulesConfig,
    SecurityConfig,
    SpoolConfig,
)
from mailgated.daemon import Daemon
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.intake.smtp import Listener
from mailgated.intake.spool import Envelope, Spool

DOMAIN = "mycompany.example"
SUPPORT = f"support@{DOMAIN}"
STAFF = {"demo": f"demo@{DOMAIN}", "boss": f"boss@{DOMAIN}"}
WAIT = 30.0


def mail(
    frm: str,
    to: str,
    subject: str,
    body: str = "Hello.",
    *,
    cc: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = frm
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=frm.rpartition("@")[2].strip(">") or "x.example")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


def reply(to_message: EmailMessage, frm: str, body: str, *, quote: bool = True) -> EmailMessage:
    """What a mail client's "Reply" makes: to Reply-To, "Re:", threaded, the original quoted."""
    target = str(to_message["Reply-To"] or to_message["From"])
    original = to_message.get_body(("plain",))
    text = body
    if quote and original is not None:
        quoted = "\n".join("> " + line for line in original.get_content().splitlines())
        text += f"\n\nOn Monday, {to_message['From']} wrote:\n{quoted}\n"
    refs = f"{to_message['References'] or ''} {to_message['Message-ID']}".strip()
    return mail(
        frm,
        target,
        f"Re: {to_message['Subject']}",
        text,
        headers={"In-Reply-To": str(to_message["Message-ID"]), "References": refs},
    )


def case_id_of(message: EmailMessage) -> int:
    found = re.search(r"\[(\d+)\]", str(message["Subject"]))
    assert found, message["Subject"]
    return int(found.group(1))


class World:
    """mailgated running on one database, with a relay sink; see the module docstring."""

    def __init__(self, db_url: str, tmp: Path, **config: Any) -> None:
        self.db_url = db_url
        self.tmp = tmp
        self.db = Database(db_url)
        self.mg = MG(tmp, db_url)
        self.relay_port = free_port()
        self.config = Config(
            listen=ListenConfig(smtp="127.0.0.1:0", hostname="mx.test"),
            outbound=OutboundConfig(
                relay=f"127.0.0.1:{self.relay_port}", site_id="test-site", first_retry=0.2
            ),
            spool=SpoolConfig(path=str(tmp / "spool"), max_failures=2),
            security=SecurityConfig(
                secret_file=str(tmp / "secret.key"), trusted_authserv_id="mx.mycompany.example"
            ),
            processing=ProcessingConfig(poll_interval=0.05),
            rules=RulesConfig(sweep_interval=0),
            **config,
        )
        self.sink: SinkHandler | None = None
        self.daemon: Daemon | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------
    def directory(self) -> None:
        with self.db.session() as session:
            d = Directory(session)
            d.add_user("demo", "Demo User", STAFF["demo"])
            d.add_user("boss", "Big Boss", STAFF["boss"])
            d.add_section("Support", email=SUPPORT, manager="boss")
            partner = d.add_partner("Agrolait")
            d.add_contact(partner, "Sylvie Lelitre", "s.l@agrolait.example")

    @contextmanager
    def running(self, relay: bool = True) -> Iterator[World]:
        with smtp_sink(self.relay_port) if relay else _no_sink() as (sink, _):
            self.sink = sink
            self.start()
            try:
                yield self
            finally:
                self.stop()

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self.daemon = Daemon(App(self.config, db=self.db))
            task = asyncio.create_task(self.daemon.run())
            await self.daemon.ready.wait()
            ready.set()
            await task

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(WAIT), "mailgated run did not become ready"

    def stop(self) -> None:
        if self._loop is not None and self.daemon is not None:
            self._loop.call_soon_threadsafe(self.daemon.request_stop)
        if self._thread is not None:
            self._thread.join(WAIT)
        self._thread = None

    @property
    def smtp_port(self) -> int:
        assert self.daemon is not None
        listener = next(s for s in self.daemon.services if isinstance(s, Listener))
        assert listener.port
        return listener.port

    # -- the conversation ---------------------------------------------------
    def send(
        self, message: EmailMessage | bytes, rcpt: list[str] | None = None, sender: str = ""
    ) -> None:
        raw = message if isinstance(message, bytes) else message.as_bytes()
        if rcpt is None:
            assert isinstance(message, EmailMessage)
            rcpt = [a.addr_spec for a in message["To"].addresses]
        if not sender and isinstance(message, EmailMessage):
            sender = message["From"].addresses[0].addr_spec
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.sendmail(sender, rcpt, raw)

    def deliver(self, message: EmailMessage, source: str = "lmtp") -> None:
        """Hand `message` in as our own MTA would (LMTP, `deliver`, a poller): the spool."""
        sender = message["From"].addresses[0].addr_spec
        rcpt = [a.addr_spec for a in message["To"].addresses]
        Spool(self.tmp / "spool").put(message.as_bytes(), Envelope(source, sender, rcpt))

    def received(self, to: str | None = None) -> list[Received]:
        assert self.sink is not None
        return [m for m in list(self.sink.messages) if to is None or to in m.rcpt_tos]

    def wait_for(
        self, to: str, count: int = 1, where: Callable[[EmailMessage], bool] | None = None
    ) -> list[EmailMessage]:
        """The first `count` messages delivered to `to` (and matching `where`)."""
        deadline = time.monotonic() + WAIT
        while True:
            found = [r.message for r in self.received(to)]
            found = [m for m in found if where is None or where(m)]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                got = [(r.rcpt_tos, r.message["Subject"]) for r in self.received()]
                raise AssertionError(f"no {count} mail(s) for {to} after {WAIT}s; relay got {got}")
            time.sleep(0.02)

    def settle(self) -> None:
        """Wait until the spool is empty and nothing is queued (the daemon is idle)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            spooled = any(
                p.is_file() for d in ("new", "cur") for p in (self.tmp / "spool" / d).rglob("*")
            )
            if not spooled and not [r for r in self.outbox() if r["state"] == "queued"]:
                return
            time.sleep(0.02)
        left = [r for r in self.outbox() if r["state"] == "queued"]
        raise AssertionError(f"mailgated did not settle: queued {left}")

    def case(self, case_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.mg("case", "show", str(case_id), "--json").json()
        return data

    def cases(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.mg("case", "list", "--json").json()
        return found

    def outbox(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.mg("outbox", "list", "--json").json()
        return found


@contextmanager
def _no_sink() -> Iterator[tuple[SinkHandler, int]]:
    yield SinkHandler(), 0


def serve_module(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    prepare: Callable[[World], None] | None = None,
) -> Iterator[World]:
    """A module-scoped `world` fixture's body: one daemon on the engine of request.param with
    the directory (and what `prepare` adds to it), stopped and disposed after the module."""
    tmp = tmp_path_factory.mktemp(name)
    running = World(engine_url(request, tmp), tmp)
    running.directory()
    if prepare is not None:
        prepare(running)
    with running.running():
        yield running
    running.db.dispose()


def parsed(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=default)  # type: ignore[return-value]


__all__ = ["MailboxConfig", "World", "case_id_of", "mail", "parsed", "reply", "serve_module"]
