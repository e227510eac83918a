"""The IMAP poller against a real Dovecot: new mail taken once, flags only after spooling."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

import pytest
from dovecot import Dovecot
from intake_helpers import break_spool, repair_spool

from mailgated.config import MailboxConfig
from mailgated.intake.identity import content_hash
from mailgated.intake.imap import ImapError, ImapPoller
from mailgated.intake.mailbox import parse_account
from mailgated.intake.spool import Spool


def mail(n: int, seen_by: str = "") -> bytes:
    return (
        f"From: Customer {n} <c{n}@example.org>\r\nTo: support@example.com\r\n"
        f"Subject: Problem {n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nBody {n}\r\n"
    ).encode()


def poller(dovecot: Dovecot, tmp_path: Path, spool: Spool, **options: object) -> ImapPoller:
    config = MailboxConfig(
        section="Support",
        url=f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX",
        password_file=str(dovecot.password_file(tmp_path)),
        **options,  # type: ignore[arg-type]
    )
    return ImapPoller(parse_account(config), spool)


async def test_new_mail_spooled_once_then_seen(dovecot: Dovecot, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1), mail(2))
    dovecot.append(mail(3), flags="(\\Seen)")  # read in another client before we poll
    imap = poller(dovecot, tmp_path, spool)

    assert await imap.poll_once() == 3
    entries = spool.entries()
    assert sorted(e.envelope.message_id for e in entries) == [
        "<m1@example.org>",
        "<m2@example.org>",
        "<m3@example.org>",
    ]
    assert {e.envelope.section for e in entries} == {"Support"}
    assert all(e.envelope.source.startswith("imap:support@127.0.0.1") for e in entries)
    assert all("\\Seen" in flags for _, flags in dovecot.inbox())
    assert content_hash(spool.read(entries[0].id)) == content_hash(mail(1))

    assert await imap.poll_once() == 0  # second poll: nothing new
    dovecot.append(mail(4))
    assert await imap.poll_once() == 1
    assert len(spool.entries()) == 4


async def test_unwritable_spool_leaves_message_unflagged(dovecot: Dovecot, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    imap = poller(dovecot, tmp_path, spool)
    break_spool(spool.path)

    with pytest.raises(OSError):
        await imap.poll_once()
    assert [flags for _, flags in dovecot.inbox()] == [""]  # not \\Seen: taken next time

    repair_spool(spool.path)
    assert await imap.poll_once() == 1
    assert ["\\Seen" in flags for _, flags in dovecot.inbox()] == [True]


async def test_move_to_folder_after_spooling(dovecot: Dovecot, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    client = dovecot.imap()
    client.create("Done")
    client.logout()
    dovecot.append(mail(1), mail(2))
    imap = poller(dovecot, tmp_path, spool, move_to="Done")

    assert await imap.poll_once() == 2
    assert dovecot.inbox() == []
    client = dovecot.imap()
    assert client.select("Done")[1] == [b"2"]
    client.logout()


async def test_idle_session_takes_mail_as_it_arrives(dovecot: Dovecot, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    imap = poller(dovecot, tmp_path, spool)
    stopping = asyncio.Event()
    session = asyncio.create_task(imap.session(stopping))
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(dovecot.append, mail(1))
        for _ in range(100):
            if spool.entries():
                break
            await asyncio.sleep(0.05)
        assert [e.envelope.message_id for e in spool.entries()] == ["<m1@example.org>"]
    finally:
        stopping.set()
        await asyncio.wait_for(session, timeout=10)


async def test_imaps_with_tls(dovecot: Dovecot, tmp_path: Path) -> None:
    if dovecot.cert is None:
        pytest.skip("openssl is not installed: no certificate for imaps")
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    config = MailboxConfig(
        section="Support",
        url=f"imaps://{dovecot.user}@127.0.0.1:{dovecot.imaps_port}/INBOX",
        password_env="TEST_IMAP_PASSWORD",
    )
    context = ssl.create_default_context(cafile=str(dovecot.cert))
    imap = ImapPoller(parse_account(config), spool, ssl_context=context)
    os.environ["TEST_IMAP_PASSWORD"] = dovecot.password
    try:
        assert await imap.poll_once() == 1
    finally:
        del os.environ["TEST_IMAP_PASSWORD"]


async def test_imap_starttls(dovecot: Dovecot, tmp_path: Path) -> None:
    if dovecot.cert is None:
        pytest.skip("openssl is not installed: no certificate for STARTTLS")
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    imap = poller(dovecot, tmp_path, spool, starttls=True)
    imap.ssl_context = ssl.create_default_context(cafile=str(dovecot.cert))
    assert await imap.poll_once() == 1


async def test_password_never_logged(
    dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    await poller(dovecot, tmp_path, spool).poll_once()
    bad = ImapPoller(
        parse_account(
            MailboxConfig(
                url=f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX",
                password_env="TEST_WRONG_PASSWORD",
            )
        ),
        spool,
    )
    os.environ["TEST_WRONG_PASSWORD"] = "wrong-" + dovecot.password
    try:
        with pytest.raises(ImapError):
            await bad.poll_once()
    finally:
        del os.environ["TEST_WRONG_PASSWORD"]
    assert dovecot.password not in caplog.text
