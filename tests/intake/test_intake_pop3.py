"""The POP3 poller against a real Dovecot: UIDL tracking, DELE only after the spool rename."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dovecot import Dovecot
from intake_helpers import break_spool, message, repair_spool

from mailgated.config import MailboxConfig
from mailgated.intake.mailbox import parse_account
from mailgated.intake.pop3 import Pop3Poller
from mailgated.intake.spool import Spool


def poller(dovecot: Dovecot, tmp_path: Path, spool: Spool, keep: bool = False) -> Pop3Poller:
    config = dovecot.mailbox(tmp_path, "pop3", section="Support", keep=keep)
    return Pop3Poller(parse_account(config), spool)


def test_new_mail_spooled_then_deleted(dovecot: Dovecot, tmp_path: Path) -> None:
    """POP3 mail is spooled, then deleted on the server."""
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1), message(2))
    dovecot.append(message(3), flags="(\\Seen)")  # read elsewhere: still taken
    pop3 = poller(dovecot, tmp_path, spool)

    assert pop3.poll_once() == 3
    assert sorted(e.envelope.message_id for e in spool.entries()) == [
        "<m1@example.org>",
        "<m2@example.org>",
        "<m3@example.org>",
    ]
    assert {e.envelope.source for e in spool.entries()} == {"pop3:support@127.0.0.1"}
    assert dovecot.inbox() == []  # DELE + QUIT after spooling
    assert spool.read(spool.entries()[0].id) == message(1)

    assert pop3.poll_once() == 0
    dovecot.append(message(4))
    assert pop3.poll_once() == 1
    assert len(spool.entries()) == 4


def test_keep_relies_on_uidl(dovecot: Dovecot, tmp_path: Path) -> None:
    """With keep, messages stay on the server and UIDL keeps them from being spooled twice."""
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1), message(2))
    pop3 = poller(dovecot, tmp_path, spool, keep=True)

    assert pop3.poll_once() == 2
    assert pop3.poll_once() == 0  # still on the server, known by UIDL
    assert len(dovecot.inbox()) == 2
    dovecot.append(message(3))
    assert pop3.poll_once() == 1
    assert len(spool.entries()) == 3


def test_unwritable_spool_no_dele(dovecot: Dovecot, tmp_path: Path) -> None:
    """When the spool cannot take it, nothing is deleted on the server."""
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1), message(2))
    pop3 = poller(dovecot, tmp_path, spool)
    break_spool(spool.path)

    with pytest.raises(OSError):
        pop3.poll_once()
    assert len(dovecot.inbox()) == 2  # nothing deleted

    repair_spool(spool.path)
    assert pop3.poll_once() == 2
    assert dovecot.inbox() == []
    assert len(spool.entries()) == 2


def test_spooled_but_not_deleted_is_not_spooled_again(dovecot: Dovecot, tmp_path: Path) -> None:
    """Spooled, then the connection died before QUIT: next poll deletes it without a copy."""
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1))
    pop3 = poller(dovecot, tmp_path, spool)
    client = pop3.connect()
    pop3._take_new(client)  # spooled and DELE sent …
    client.close()  # … but no QUIT: the server keeps the message
    assert len(dovecot.inbox()) == 1

    assert pop3.poll_once() == 0
    assert dovecot.inbox() == []
    assert len(spool.entries()) == 1


def test_pop3s(dovecot: Dovecot, tmp_path: Path) -> None:
    """pop3s:// polls over TLS."""
    if dovecot.cert is None:
        pytest.skip("openssl is not installed: no certificate for pop3s")
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1))
    config = dovecot.mailbox(tmp_path, "pop3s", ca_file=str(dovecot.cert))
    assert Pop3Poller(parse_account(config), spool).poll_once() == 1
    assert spool.entries()[0].envelope.section is None  # no section: processing routes it


async def test_poller_reconnects_with_backoff_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A poller that cannot connect retries with backoff and logs why."""
    from dovecot import free_port

    from mailgated.intake.mailbox import PollerService

    spool = Spool(tmp_path / "spool")
    (tmp_path / "pass").write_text("secret-never-logged")
    config = MailboxConfig(
        url=f"pop3://x@127.0.0.1:{free_port()}", password_file=str(tmp_path / "pass")
    )
    poller = Pop3Poller(parse_account(config), spool, timeout=2)
    service = PollerService("POP3 poller test", poller.session)
    await service.start()
    await asyncio.sleep(1.5)  # first try, then a retry after 1 s
    await service.stop()
    failures = [r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert len(failures) >= 2
    assert "ConnectionRefusedError" in failures[0]
    assert "reconnecting in 1 s" in failures[0] and "reconnecting in 2 s" in failures[1]
    assert "secret-never-logged" not in caplog.text


async def test_stop_cuts_a_poll_stuck_on_a_silent_server(tmp_path: Path) -> None:
    """A server that accepts and never greets: stopping the daemon frees the poller's
    thread at once (it would sit in its read until the 60 s timeout)."""
    import socket

    from mailgated.intake.mailbox import PollerService

    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    password = tmp_path / "pw"
    password.write_text("x\n")
    config = MailboxConfig(url=f"pop3://u@127.0.0.1:{port}", password_file=str(password))
    pop3 = Pop3Poller(parse_account(config), Spool(tmp_path / "spool"))
    service = PollerService("POP3 poller test", pop3.session)
    try:
        await service.start()
        for _ in range(200):  # until the poll is waiting for the greeting
            if pop3._sockets:
                break
            await asyncio.sleep(0.05)
        assert pop3._sockets
        await service.stop()
        for _ in range(100):
            if not pop3._sockets:
                break
            await asyncio.sleep(0.05)
        assert not pop3._sockets, "the poll thread still waits on the silent server"
    finally:
        silent.close()
