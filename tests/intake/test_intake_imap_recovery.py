"""The IMAP poller against a real Dovecot when things break in between (issue 12): a crash
after spooling but before \\Seen/move is finished on the next poll, and a server that closes
the connection (a Dovecot restart during IDLE) is noticed at once and reconnected."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from dovecot import Dovecot

from mailgated.config import MailboxConfig
from mailgated.intake.imap import ImapPoller
from mailgated.intake.mailbox import PollerService, parse_account
from mailgated.intake.spool import Spool


def mail(n: int) -> bytes:
    return (
        f"From: Customer {n} <c{n}@example.org>\r\nTo: support@example.com\r\n"
        f"Subject: Problem {n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nBody {n}\r\n"
    ).encode()


def poller(dovecot: Dovecot, tmp_path: Path, **options: object) -> ImapPoller:
    config = MailboxConfig(
        section="Support",
        url=f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX",
        password_file=str(dovecot.password_file(tmp_path)),
        **options,  # type: ignore[arg-type]
    )
    return ImapPoller(parse_account(config), Spool(tmp_path / "spool"))


class Killed(Exception):
    """The daemon dies right here."""


def killed_before_acknowledging(imap: ImapPoller, monkeypatch: pytest.MonkeyPatch) -> None:
    async def die(client: object, uid: str) -> None:
        raise Killed(f"killed before marking UID {uid}")

    monkeypatch.setattr(imap, "_acknowledge", die)


async def test_a_crash_between_spooling_and_seen_is_finished_on_the_next_start(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the spool rename, before \\Seen: the next start marks it, spools nothing."""
    dovecot.append(mail(1), mail(2))
    first = poller(dovecot, tmp_path)
    killed_before_acknowledging(first, monkeypatch)
    with pytest.raises(Killed):
        await first.poll_once()
    assert [flags for _, flags in dovecot.inbox()] == ["", ""]

    restarted = poller(dovecot, tmp_path)
    assert await restarted.poll_once() == 1  # message 2; message 1 is only marked
    assert ["\\Seen" in flags for _, flags in dovecot.inbox()] == [True, True]
    spool = Spool(tmp_path / "spool")
    assert sorted(e.envelope.message_id for e in spool.entries()) == [
        "<m1@example.org>",
        "<m2@example.org>",
    ]
    assert restarted.state.load()["unacknowledged"] == []


async def test_a_crash_before_the_move_is_finished_and_a_vanished_uid_dropped(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With move_to: the move is done on the next poll; a UID gone meanwhile is dropped."""
    dovecot.create("Done")
    dovecot.append(mail(1))
    first = poller(dovecot, tmp_path, move_to="Done")
    killed_before_acknowledging(first, monkeypatch)
    with pytest.raises(Killed):
        await first.poll_once()
    assert len(dovecot.inbox()) == 1

    assert await poller(dovecot, tmp_path, move_to="Done").poll_once() == 0
    assert dovecot.inbox() == [] and len(dovecot.inbox("Done")) == 1

    dovecot.append(mail(2))
    second = poller(dovecot, tmp_path, move_to="Done")
    killed_before_acknowledging(second, monkeypatch)
    with pytest.raises(Killed):
        await second.poll_once()
    client = dovecot.imap()  # someone deletes it by hand before our next poll
    client.select("INBOX")
    client.uid("store", "1:*", "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.logout()
    again = poller(dovecot, tmp_path, move_to="Done")
    assert await again.poll_once() == 0
    assert again.state.load()["unacknowledged"] == []
    assert len(dovecot.inbox("Done")) == 1


async def test_a_dovecot_restart_during_idle_is_noticed_at_once(
    dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """BYE/EOF ends the session at once (not an IDLE timeout); mail after the restart is
    taken after the 1 s reconnect."""
    imap = poller(dovecot, tmp_path)
    imap.timeout = 120.0  # a command timeout could not be what notices the restart
    spool = Spool(tmp_path / "spool")
    service = PollerService("IMAP poller test", imap.session)
    caplog.set_level(logging.INFO, logger="mailgated.intake")
    await service.start()
    try:
        await asyncio.to_thread(dovecot.append, mail(1))
        await wait_for_spooled(spool, 1)
        await asyncio.sleep(0.3)  # back in IDLE
        await asyncio.to_thread(dovecot.restart)
        await asyncio.to_thread(dovecot.append, mail(2))
        await wait_for_spooled(spool, 2)
    finally:
        await service.stop()
    warnings = [r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert warnings and "ServerClosed" in warnings[0], warnings
    assert "reconnecting in 1 s" in warnings[0]
    assert not any("Timeout" in w for w in warnings), warnings


async def wait_for_spooled(spool: Spool, count: int) -> None:
    """Until `count` messages are spooled; gives up after far longer than any reconnect
    should take (the old behaviour took about a minute, the IDLE command's timeout)."""
    for _ in range(600):
        if len(spool.entries()) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(spool.entries())} of {count} messages spooled after 30 s")


KILLED_IN_THE_GAP = """
import asyncio, os, signal, sys
from mailgated.config import MailboxConfig
from mailgated.intake.imap import ImapPoller
from mailgated.intake.mailbox import parse_account
from mailgated.intake.spool import Spool

url, password_file, spool_path = sys.argv[1:4]
imap = ImapPoller(parse_account(MailboxConfig(section="Support", url=url,
                  password_file=password_file)), Spool(spool_path))

async def killed(client, uid):
    os.kill(os.getpid(), signal.SIGKILL)  # the daemon dies between the spool and the flag

imap._acknowledge = killed
asyncio.run(imap.poll_once())
"""


async def test_sigkill_between_spooling_and_seen(dovecot: Dovecot, tmp_path: Path) -> None:
    """A poller process SIGKILLed right after the spool rename: the next start marks it."""
    import subprocess
    import sys

    dovecot.append(mail(1))
    url = f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX"
    args = [url, str(dovecot.password_file(tmp_path)), str(tmp_path / "spool")]
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", KILLED_IN_THE_GAP, *args], timeout=60
    )
    assert done.returncode == -9
    assert [flags for _, flags in dovecot.inbox()] == [""]
    assert len(Spool(tmp_path / "spool").entries()) == 1

    assert await poller(dovecot, tmp_path).poll_once() == 0
    assert ["\\Seen" in flags for _, flags in dovecot.inbox()] == [True]
    assert len(Spool(tmp_path / "spool").entries()) == 1  # not spooled twice
