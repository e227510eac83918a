"""The IMAP poller against a real Dovecot: new mail taken once, flags only after spooling."""

from __future__ import annotations

from pathlib import Path

from dovecot import Dovecot

from mailgated.config import MailboxConfig
from mailgated.intake.identity import content_hash
from mailgated.intake.imap import ImapPoller
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
    assert sorted(e.envelope.message_id for e in entries) == ["<m1@example.org>",
                                                              "<m2@example.org>",
                                                              "<m3@example.org>"]
    assert {e.envelope.section for e in entries} == {"Support"}
    assert all(e.envelope.source.startswith("imap:support@127.0.0.1") for e in entries)
    assert all("\\Seen" in flags for _, flags in dovecot.inbox())
    assert content_hash(spool.read(entries[0].id)) == content_hash(mail(1))

    assert await imap.poll_once() == 0  # second poll: nothing new
    dovecot.append(mail(4))
    assert await imap.poll_once() == 1
    assert len(spool.entries()) == 4
