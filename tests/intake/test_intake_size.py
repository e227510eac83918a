"""The size limit on every way in (issue 12 item 15): `deliver`, `import` and the IMAP and
POP3 pollers record or skip a message over `[listen] max_message_size`, never in a loop."""

from __future__ import annotations

import mailbox
from pathlib import Path

from conftest import MG
from dovecot import Dovecot
from intake_helpers import deliver, message, spool_config

from mailgated.config import MailboxConfig
from mailgated.intake.imap import ImapPoller
from mailgated.intake.mailbox import parse_account
from mailgated.intake.pop3 import Pop3Poller
from mailgated.intake.spool import Spool

LIMIT = 4000
BIG = "x" * 70 + "\r\n"  # one line of a big body


def big(n: int) -> bytes:
    return message(n, body=BIG * 100)  # ~7 kB


def limited(tmp_path: Path) -> Path:
    return spool_config(tmp_path, f"[listen]\nmax_message_size = {LIMIT}\n")


def test_deliver_records_the_header_of_a_too_large_message_and_exits_0(tmp_path: Path) -> None:
    """fetchmail must not fetch it again: exit 0, the header and the reason in the quarantine."""
    config = limited(tmp_path)
    done = deliver(config, big(1), "--recipient", "support@example.com")
    assert done.returncode == 0, done.stderr
    assert b"too large" in done.stderr
    spool = Spool(tmp_path / "spool")
    assert spool.entries() == []
    [kept] = spool.entries(quarantined=True)
    assert kept.subject == "Problem 1"
    assert kept.envelope.message_id == "<m1@example.org>"
    assert kept.envelope.recipients == ["support@example.com"]
    assert kept.envelope.reason.startswith(f"too large: {len(big(1))} bytes, over max_message_size")
    assert BIG.encode() not in spool.read(kept.id)
    assert spool.counts()["quarantined"] == 1

    assert deliver(config, message(2)).returncode == 0  # under the limit: spooled as ever
    assert [e.subject for e in spool.entries()] == ["Problem 2"]


def test_deliver_bounce_too_large_exits_65_for_postfix(tmp_path: Path) -> None:
    """With --bounce-too-large the MTA bounces it (EX_DATAERR) and nothing is kept."""
    done = deliver(limited(tmp_path), big(1), "--bounce-too-large")
    assert done.returncode == 65
    assert b"too large" in done.stderr
    assert Spool(tmp_path / "spool").counts() == {
        "new": 0,
        "processing": 0,
        "quarantined": 0,
        "duplicate": 0,
    }


def test_import_reports_and_skips_a_too_large_message(tmp_path: Path) -> None:
    """The others are spooled; the big one is named on stderr and counted."""
    box = mailbox.mbox(tmp_path / "old.mbox")
    for raw in (message(1), big(2), message(3)):
        box.add(raw)
    box.close()
    cli = MG(tmp_path, "sqlite:///unused.db", config=limited(tmp_path))
    done = cli("import", "mbox", str(tmp_path / "old.mbox"), "--section", "Support", "--quiet")
    assert "spooled 2 messages" in done.out
    assert "skipped 1 message(s) over max_message_size 4000" in done.out
    assert "message 2 <m2@example.org> 'Problem 2': too large" in done.err
    assert sorted(e.subject for e in Spool(tmp_path / "spool").entries()) == [
        "Problem 1",
        "Problem 3",
    ]


def mailbox_config(dovecot: Dovecot, tmp_path: Path, url: str) -> MailboxConfig:
    return MailboxConfig(
        section="Support", url=url, password_file=str(dovecot.password_file(tmp_path))
    )


async def test_imap_records_a_too_large_message_once_and_leaves_it(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    """Its header is recorded, it stays unread on the server, the next poll does not retake it."""
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1), big(2), message(3))
    url = f"imap://{dovecot.user}@127.0.0.1:{dovecot.imap_port}/INBOX"
    imap = ImapPoller(parse_account(mailbox_config(dovecot, tmp_path, url)), spool, max_size=LIMIT)
    assert await imap.poll_once() == 2
    assert sorted(e.subject for e in spool.entries()) == ["Problem 1", "Problem 3"]
    [kept] = spool.entries(quarantined=True)
    assert kept.subject == "Problem 2" and kept.envelope.reason.startswith("too large")
    assert BIG.encode() not in spool.read(kept.id)
    assert [("\\Seen" in flags) for _, flags in dovecot.inbox()] == [True, False, True]

    assert await imap.poll_once() == 0
    assert len(spool.entries(quarantined=True)) == 1


def test_pop3_records_a_too_large_message_once_and_leaves_it(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    """Skipped by its LIST size: header recorded, left on the server, not recorded again."""
    spool = Spool(tmp_path / "spool")
    dovecot.append(message(1), big(2))
    url = f"pop3://{dovecot.user}@127.0.0.1:{dovecot.pop3_port}"
    pop3 = Pop3Poller(parse_account(mailbox_config(dovecot, tmp_path, url)), spool, max_size=LIMIT)
    assert pop3.poll_once() == 1
    assert [e.subject for e in spool.entries()] == ["Problem 1"]
    [kept] = spool.entries(quarantined=True)
    assert kept.subject == "Problem 2" and kept.envelope.reason.startswith("too large")
    assert len(dovecot.inbox()) == 1  # the big one is still there

    assert pop3.poll_once() == 0
    assert len(spool.entries(quarantined=True)) == 1
    assert len(dovecot.inbox()) == 1


def test_a_too_large_record_is_not_replayed_as_a_message(tmp_path: Path) -> None:
    """`spool retry` refuses a header-only record (it would make a case without its text)."""
    config = limited(tmp_path)
    deliver(config, big(1))
    cli = MG(tmp_path, "sqlite:///unused.db", config=config)
    [kept] = Spool(tmp_path / "spool").entries(quarantined=True)
    refused = cli("spool", "retry", kept.id, ok=False)
    assert refused.code == 1 and "only the header of a message over max_message_size" in refused.err
    done = cli("spool", "retry", "--all")
    assert "1 too-large record(s) left as they are" in done.out
    assert Spool(tmp_path / "spool").entries() == []
