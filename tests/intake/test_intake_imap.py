"""The IMAP poller against a real Dovecot: new mail taken once, flags only after spooling."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from dovecot import Dovecot
from intake_helpers import break_spool, repair_spool

from mailgated.config import MailboxConfig
from mailgated.intake.identity import content_hash
from mailgated.intake.imap import ImapError, ImapPoller, mailbox_argument
from mailgated.intake.mailbox import PollerService, StateFile, parse_account
from mailgated.intake.spool import Spool


def mail(n: int, seen_by: str = "") -> bytes:
    return (
        f"From: Customer {n} <c{n}@example.org>\r\nTo: support@example.com\r\n"
        f"Subject: Problem {n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nBody {n}\r\n"
    ).encode()


def poller(
    dovecot: Dovecot, tmp_path: Path, spool: Spool, folder: str = "INBOX", **options: object
) -> ImapPoller:
    config = dovecot.mailbox(tmp_path, "imap", folder, section="Support", **options)
    return ImapPoller(parse_account(config), spool)


async def test_new_mail_spooled_once_then_seen(dovecot: Dovecot, tmp_path: Path) -> None:
    """New IMAP mail is spooled once and then flagged Seen; mail already read is left alone."""
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
    """When the spool cannot take it, the IMAP message stays unseen for the next poll."""
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
    """With a move folder, spooled messages are moved there."""
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


async def test_non_ascii_folders(dovecot: Dovecot, tmp_path: Path) -> None:
    """Polled from Входящие (percent-encoded in the url), moved to "Обработано 2024"."""
    spool = Spool(tmp_path / "spool")
    dovecot.create("Входящие", "Обработано 2024")
    dovecot.append(mail(1), mail(2), folder="Входящие")
    dovecot.append(mail(3))  # INBOX is another folder: not taken
    imap = poller(dovecot, tmp_path, spool, folder=quote("Входящие"), move_to="Обработано 2024")
    assert imap.account.folder == "Входящие"

    assert await imap.poll_once() == 2
    assert sorted(e.envelope.message_id for e in spool.entries()) == [
        "<m1@example.org>",
        "<m2@example.org>",
    ]
    assert all(e.envelope.source == "imap:support@127.0.0.1/Входящие" for e in spool.entries())
    assert dovecot.inbox("Входящие") == []
    assert len(dovecot.inbox("Обработано 2024")) == 2
    assert len(dovecot.inbox("INBOX")) == 1
    assert dovecot.folders() == {"INBOX", "Входящие", "Обработано 2024"}  # no stray folder

    dovecot.append(mail(4), folder="Входящие")
    assert await imap.poll_once() == 1  # state kept per folder: only the new one
    assert len(dovecot.inbox("Обработано 2024")) == 3


def test_folder_names_on_the_wire() -> None:
    """Folder names go on the wire in modified UTF-7, quoted."""
    assert mailbox_argument("INBOX") == '"INBOX"'
    rfc_example = "~peter/mail/台北/日本語"  # RFC 3501 §5.1.3
    assert mailbox_argument(rfc_example) == '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'
    assert mailbox_argument("Входящие") == '"&BBIERQQ+BDQETwRJBDgENQ-"'
    assert mailbox_argument('R&D "old"') == '"R&-D \\"old\\""'


def test_folder_url_spellings_and_state_files(tmp_path: Path) -> None:
    """A folder spelled plain or percent-encoded in the URL is the same account and state file."""
    plain = parse_account(MailboxConfig(url="imaps://support@mail.example.com/Входящие"))
    encoded = parse_account(
        MailboxConfig(
            url="imaps://support@mail.example.com/%D0%92%D1%85%D0%BE%D0%B4%D1%8F%D1%89%D0%B8%D0%B5"
        )
    )
    assert plain.folder == encoded.folder == "Входящие"
    other = parse_account(MailboxConfig(url="imaps://support@mail.example.com/Отправленные"))
    assert StateFile(tmp_path, "imap", plain).path != StateFile(tmp_path, "imap", other).path


async def test_idle_session_takes_mail_as_it_arrives(dovecot: Dovecot, tmp_path: Path) -> None:
    """An IDLE session spools mail as soon as it arrives."""
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
    """imaps:// polls over TLS, verified against ca_file."""
    if dovecot.cert is None:
        pytest.skip("openssl is not installed: no certificate for imaps")
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    config = MailboxConfig(
        section="Support",
        url=f"imaps://{dovecot.user}@127.0.0.1:{dovecot.imaps_port}/INBOX",
        password_env="TEST_IMAP_PASSWORD",
        ca_file=str(dovecot.cert),  # the server's self-signed certificate is trusted
    )
    imap = ImapPoller(parse_account(config), spool)
    os.environ["TEST_IMAP_PASSWORD"] = dovecot.password
    try:
        assert await imap.poll_once() == 1
    finally:
        del os.environ["TEST_IMAP_PASSWORD"]


async def test_imap_starttls(dovecot: Dovecot, tmp_path: Path) -> None:
    """imap:// with starttls upgrades the connection before logging in."""
    if dovecot.cert is None:
        pytest.skip("openssl is not installed: no certificate for STARTTLS")
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    imap = poller(dovecot, tmp_path, spool, starttls=True, ca_file=str(dovecot.cert))
    assert await imap.poll_once() == 1


async def test_untrusted_certificate_refused_and_said_why(
    dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No ca_file: the self-signed certificate is not in the system store → no login, no loss."""
    if dovecot.cert is None:
        pytest.skip("openssl is not installed: no certificate for imaps")
    spool = Spool(tmp_path / "spool")
    dovecot.append(mail(1))
    config = dovecot.mailbox(tmp_path, "imaps", "INBOX")
    service = PollerService("IMAP poller test", ImapPoller(parse_account(config), spool).session)
    await service.start()
    for _ in range(100):
        if "reconnecting in" in caplog.text:
            break
        await asyncio.sleep(0.05)
    await service.stop()
    failure = next(r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage())
    assert "certificate verify failed" in failure and "self-signed" in failure
    assert spool.entries() == []
    assert ["\\Seen" in flags for _, flags in dovecot.inbox()] == [False]  # untouched

    trusted = dataclasses.replace(config, ca_file=str(dovecot.cert))
    assert await ImapPoller(parse_account(trusted), spool).poll_once() == 1  # nothing lost


async def test_password_never_logged(
    dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The IMAP password never appears in the log, even at DEBUG."""
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
