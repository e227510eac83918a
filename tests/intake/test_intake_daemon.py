"""`mailgated run` with the SMTP listener: section addresses from the database, STARTTLS."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import missing
from dovecot import self_signed_cert
from intake_helpers import message

from mailgated.app import App
from mailgated.config import Config, ListenConfig, ProcessingConfig, SpoolConfig
from mailgated.daemon import Daemon
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.intake.addresses import SectionAddresses
from mailgated.intake.smtp import Listener
from mailgated.intake.spool import Spool


@pytest.fixture
async def daemon(db: Database, tmp_path: Path) -> AsyncIterator[Daemon]:
    with db.session() as session:
        Directory(session).add_section("Support", email="support@example.com")
    cert = self_signed_cert(tmp_path)
    listen = ListenConfig(smtp="127.0.0.1:0", hostname="mx.test")
    if cert:
        listen = dataclasses.replace(listen, tls_cert=str(cert[0]), tls_key=str(cert[1]))
    config = Config(
        listen=listen,
        spool=SpoolConfig(path=str(tmp_path / "spool")),
        processing=ProcessingConfig(workers=0),  # these tests look at the spool itself
    )
    running = Daemon(App(config, db=db))
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(running.ready.wait(), 10)
    yield running
    running.request_stop()
    await asyncio.wait_for(task, 10)


def smtp_port(daemon: Daemon) -> int:
    listener = next(s for s in daemon.services if isinstance(s, Listener))
    assert listener.port
    return listener.port


async def test_daemon_accepts_mail_for_database_sections(
    daemon: Daemon, db: Database, tmp_path: Path
) -> None:
    """The daemon's SMTP listener takes mail for sections in the database and refuses others."""
    port = smtp_port(daemon)

    def send(rcpt: str) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            return smtp.sendmail("a@example.org", [rcpt, "support@example.com"], message(1))

    refused = await asyncio.to_thread(send, "sales@example.com")
    assert refused["sales@example.com"][0] == 550

    with db.session() as session:  # a section added now takes mail now, not after a refresh
        Directory(session).add_section("Sales", email="sales@example.com")
    book = next(s for s in daemon.services if isinstance(s, SectionAddresses))
    book.recheck = 0  # the refusal above just reloaded: allow the next miss to reload again
    assert await asyncio.to_thread(send, "sales+vip@example.com") == {}
    assert len(Spool(tmp_path / "spool").entries()) == 2


async def test_starttls_when_certificate_configured(daemon: Daemon, tmp_path: Path) -> None:
    """With a certificate configured the listener offers STARTTLS and accepts mail over it."""
    if not daemon.config.listen.tls_cert:
        pytest.skip("openssl is not installed: no certificate")
    port = smtp_port(daemon)
    context = ssl.create_default_context(cafile=daemon.config.listen.tls_cert)

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            smtp.starttls(context=context)
            smtp.sendmail("a@example.org", ["support@example.com"], message(1))

    await asyncio.to_thread(send)
    assert len(Spool(tmp_path / "spool").entries()) == 1


async def test_swaks_pipelining_client(daemon: Daemon, tmp_path: Path) -> None:
    """A second real client (swaks, with PIPELINING when offered) through the daemon."""
    swaks = shutil.which("swaks")
    if swaks is None:
        missing("swaks is not installed")
    port = smtp_port(daemon)
    done = await asyncio.create_subprocess_exec(
        swaks,
        "--server",
        f"127.0.0.1:{port}",
        "--from",
        "partner@example.org",
        "--to",
        "support+42@example.com",
        "--header",
        "Subject: from swaks",
        "--body",
        "Grüße\n",
        "--pipeline",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(done.communicate(), 30)
    assert done.returncode == 0, out.decode()
    assert b"250 2.0.0 OK queued as" in out
    [entry] = Spool(tmp_path / "spool").entries()
    assert (entry.subject, entry.envelope.envelope_from) == ("from swaks", "partner@example.org")
