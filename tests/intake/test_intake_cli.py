"""`mailgated deliver`, `import` and `spool` as an operator and an MTA use them."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest
from conftest import MG
from intake_helpers import break_spool, deliver, message, spool_config

from mailgated.intake.identity import content_hash
from mailgated.intake.spool import Spool


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return spool_config(tmp_path)


@pytest.fixture
def cli(tmp_path: Path, config: Path) -> MG:
    """The CLI in-process; spool commands never touch this (absent) database."""
    return MG(tmp_path, f"sqlite:///{tmp_path / 'never-opened.db'}", config=config)


def spooled(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def test_deliver_spools_and_exits_0(tmp_path: Path, config: Path) -> None:
    """deliver spools the message with its envelope and exits 0 quietly."""
    done = deliver(config, message(1), "--section", "Support", "--recipient", "support@x.org")
    assert (done.returncode, done.stderr) == (0, b"")
    [entry] = spooled(tmp_path).entries()
    assert entry.envelope.source == "deliver"
    assert entry.envelope.section == "Support"
    assert entry.envelope.recipients == ["support@x.org"]
    assert entry.envelope.message_id == "<m1@example.org>"
    assert spooled(tmp_path).read(entry.id) == message(1)
    assert not (tmp_path / "never-opened.db").exists()


def test_spool_is_group_writable(tmp_path: Path, config: Path) -> None:
    """Spool folders are group-writable with setgid, so the MTA's user can deliver."""
    deliver(config, message(1))
    for sub in ("", "tmp", "new", "cur", "quarantine"):
        mode = os.stat(tmp_path / "spool" / sub).st_mode
        assert mode & 0o2070 == 0o2070, f"{sub or 'spool'} is {oct(mode)}"
    [entry] = spooled(tmp_path).entries()
    assert os.stat(entry.path).st_mode & 0o040  # the daemon (same group) can read it


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00garbage \xff\xfe", id="garbage"),
        pytest.param(b"Subject: nul\r\n\r\nbefore\x00after\x00\r\n", id="nul-bytes"),
        pytest.param(b"no headers at all, just a line\n", id="no-headers"),
    ],
)
def test_deliver_spools_any_bytes(tmp_path: Path, config: Path, raw: bytes) -> None:
    """deliver spools any bytes exactly as given."""
    done = deliver(config, raw)
    assert done.returncode == 0, done.stderr
    [entry] = spooled(tmp_path).entries()
    stored = spooled(tmp_path).read(entry.id)
    assert stored.endswith(raw)  # kept as is, behind a made-up Message-ID
    assert entry.envelope.message_id.endswith("@mailgated.invalid>")


def test_deliver_30_mb(tmp_path: Path) -> None:
    """A 30 MB message under a 40 MiB max_message_size is spooled whole."""
    config = spool_config(tmp_path, "[listen]\nmax_message_size = 41943040\n")
    line = b"0123456789abcdef" * 4 + b"\r\n"
    raw = message(1) + line * (30 * 1024 * 1024 // len(line))
    done = deliver(config, raw)
    assert done.returncode == 0, done.stderr
    [entry] = spooled(tmp_path).entries()
    assert spooled(tmp_path).read(entry.id) == raw


@pytest.mark.parametrize("raw", [b"", b"\r\n \n"], ids=["empty", "blank"])
def test_deliver_empty_input_is_65(tmp_path: Path, config: Path, raw: bytes) -> None:
    """Empty input is exit 65 with one line on stderr."""
    done = deliver(config, raw)
    assert done.returncode == 65
    assert done.stderr.decode().count("\n") == 1
    assert "empty input" in done.stderr.decode()
    assert spooled(tmp_path).entries() == []


def test_deliver_unwritable_spool_is_75(tmp_path: Path, config: Path) -> None:
    """An unwritable spool is exit 75 (try again later), never a traceback."""
    break_spool(tmp_path / "spool")
    done = deliver(config, message(1))
    assert done.returncode == 75
    assert b"Traceback" not in done.stderr
    assert done.stderr.decode().startswith("mailgated deliver: not spooled, retry later")


def test_deliver_bad_config_is_75(tmp_path: Path) -> None:
    """A broken config file makes deliver exit 75, so the MTA keeps the mail."""
    broken = tmp_path / "broken.toml"
    broken.write_text("[spool\npath = ")
    done = deliver(broken, message(1))
    assert done.returncode == 75
    assert b"Traceback" not in done.stderr


def test_deliver_retry_of_same_bytes_gets_same_message_id(tmp_path: Path, config: Path) -> None:
    """A retried delivery of a message without Message-ID gets the same made-up one."""
    raw = message(1, message_id=False)
    deliver(config, raw)
    deliver(config, b"Received: from relay by mx; Sat, 28 Nov 2026 10:00:01 +0000\r\n" + raw)
    first, second = spooled(tmp_path).entries()
    assert first.envelope.message_id == second.envelope.message_id
    spool = spooled(tmp_path)
    assert content_hash(spool.read(first.id)) == content_hash(spool.read(second.id))


def test_deliver_in_process_through_click(cli: MG, tmp_path: Path) -> None:
    """deliver is also a click command (its --help works in process)."""
    result = cli("deliver", "--help")
    assert "--section" in result.out


def test_spool_list_show_retry(cli: MG, tmp_path: Path, config: Path) -> None:
    """spool list, show and retry show and replay what is spooled or quarantined."""
    deliver(config, message(1), "--section", "Support")
    deliver(config, message(2, message_id=False))
    rows = cli("spool", "list", "--json").json()
    assert [set(r) for r in rows] == [
        {"id", "source", "received_at", "message_id", "subject", "state", "reason"}
    ] * 2
    assert [(r["subject"], r["state"], r["source"]) for r in rows] == [
        ("Problem 1", "new", "deliver"),
        ("Problem 2", "new", "deliver"),
    ]
    assert "Problem 1" in cli("spool", "list").out

    shown = cli("spool", "show", rows[0]["id"]).out
    assert "section:        Support" in shown
    assert "Body of message 1" in shown

    spool = spooled(tmp_path)
    [claimed] = spool.claim_batch(1)
    assert cli("spool", "list", "--json").json()[0]["state"] == "processing"
    spool.quarantine(claimed, "unknown section 'Support'")
    [quarantined] = cli("spool", "list", "--quarantined", "--json").json()
    assert (quarantined["state"], quarantined["reason"]) == (
        "quarantined",
        "unknown section 'Support'",
    )

    assert cli("spool", "retry", quarantined["id"]).code == 0
    assert cli("spool", "list", "--quarantined", "--json").json() == []
    assert [r["state"] for r in cli("spool", "list", "--json").json()] == ["new", "new"]

    missing = cli("spool", "show", "nope", ok=False)
    assert (missing.code, missing.err.strip()) == (
        1,
        "mailgated: error: no spooled message 'nope' (see `mailgated spool list`)",
    )


def test_spool_claim_fail_recover(tmp_path: Path) -> None:
    """A claim fails back to new/, is recovered after a crash, and quarantines at max_failures."""
    spool = spooled(tmp_path)
    spool.put(message(1), _env())
    [claimed] = spool.claim_batch(1)
    assert spool.claim_batch(1) == []
    assert spool.fail(claimed, "database down", max_failures=2) is False
    [again] = spool.claim_batch(1)
    assert again.envelope.failures == 1
    assert spool.recover() == 1  # a crash while holding the claim
    [again] = spool.claim_batch(1)
    assert spool.fail(again, "still broken", max_failures=2) is True
    [entry] = spool.entries(quarantined=True)
    assert (entry.envelope.failures, entry.envelope.reason) == (2, "still broken")
    spool.retry(entry.id)
    [done] = spool.claim_batch(1)
    assert done.envelope.failures == 0
    spool.done(done)
    assert spool.entries() == [] and spool.entries(quarantined=True) == []


def _env() -> object:
    from mailgated.intake.spool import Envelope

    return Envelope(source="test", envelope_from=None)


def make_mbox(path: Path) -> None:
    box = mailbox.mbox(path)
    box.add(message(1))
    box.add(message(2, message_id=False, body="From the start\nof a line"))
    box.add(message(3))
    box.flush()
    box.close()


def test_import_mbox_twice_same_ids_and_bytes(cli: MG, tmp_path: Path) -> None:
    """Importing an mbox twice spools the same bytes under the same Message-IDs."""
    mbox = tmp_path / "old.mbox"
    make_mbox(mbox)
    first = cli("import", "mbox", str(mbox), "--section", "Support")
    assert "spooled 3 messages" in first.out
    cli("import", "mbox", str(mbox), "--section", "Support", "--quiet")
    spool = spooled(tmp_path)
    entries = spool.entries()
    assert len(entries) == 6
    runs = [entries[:3], entries[3:]]
    ids = [[e.envelope.message_id for e in run] for run in runs]
    assert ids[0] == ids[1]
    assert ids[0][1].endswith("@mailgated.invalid>")
    hashes = [[content_hash(spool.read(e.id)) for e in run] for run in runs]
    assert hashes[0] == hashes[1]
    assert b"\nFrom the start\n" in spool.read(runs[0][1].id)  # mboxrd quoting undone
    assert {e.envelope.section for e in entries} == {"Support"}
    assert {e.envelope.source for e in entries} == {f"import:{mbox.resolve()}"}


def test_import_maildir(cli: MG, tmp_path: Path) -> None:
    """import maildir spools every message of a Maildir."""
    box = mailbox.Maildir(tmp_path / "Maildir")
    for n in (1, 2):
        box.add(message(n))
    result = cli("import", "maildir", str(tmp_path / "Maildir"), "--section", "Sales")
    assert "spooled 2 messages" in result.out
    assert sorted(e.subject for e in spooled(tmp_path).entries()) == ["Problem 1", "Problem 2"]


def test_import_errors_are_one_line(cli: MG, tmp_path: Path) -> None:
    """A missing mbox or a folder that is no Maildir is one error line."""
    gone = cli("import", "mbox", str(tmp_path / "nope.mbox"), "--section", "S", ok=False)
    assert gone.code == 1 and gone.err.startswith("mailgated: error: ")
    (tmp_path / "notmaildir").mkdir()
    bad = cli("import", "maildir", str(tmp_path / "notmaildir"), "--section", "S", ok=False)
    assert bad.err.strip().endswith("is not a Maildir (it needs cur/ and new/)")


def test_example_config_mailboxes_parse() -> None:
    """The commented [[mailbox]] examples of etc/mailgated.toml.example are valid as written."""
    import re
    import tomllib

    from mailgated.config import Config, _build
    from mailgated.intake.mailbox import parse_account

    example = Path(__file__).resolve().parent.parent.parent / "etc" / "mailgated.toml.example"
    text = example.read_text()
    start = text.index("# [[mailbox]]")
    uncommented = re.sub(r"(?m)^# ?", "", text[start:])
    config: Config = _build(Config, tomllib.loads(text[:start] + uncommented), "")
    accounts = [parse_account(m) for m in config.mailbox]
    assert [(a.scheme, a.user, a.host, a.port, a.folder) for a in accounts] == [
        ("imaps", "support", "mail.example.com", 993, "INBOX"),
        ("pop3s", "sales@example.com", "mail.example.com", 995, ""),
    ]


def test_deliver_imports_nothing_heavy(tmp_path: Path, config: Path) -> None:
    """`mailgated deliver` runs once per message: no click, SQLAlchemy, Jinja2, email,
    tomllib, typing — through the console script, and from the source without `site` (a
    development install's path finder imports typing itself)."""
    import subprocess
    import sys

    from intake_helpers import env_with

    import mailgated

    source = str(Path(mailgated.__file__).resolve().parent.parent)
    runs = {
        "script": ([str(Path(sys.executable).parent / "mailgated")], env_with(config)),
        "no site": (
            ["-S", "-c", "from mailgated.launch import main; main()"],
            {**env_with(config), "PYTHONPATH": source},
        ),
    }
    for how, (argv, env) in runs.items():
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *argv, "deliver"],
            input=message(1),
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        imported = {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines()}
        heavy = {"click", "sqlalchemy", "jinja2", "email", "dataclasses", "mailgated.cli"}
        heavy |= {"tomllib"} | ({"typing"} if how == "no site" else set())
        assert not heavy & imported, f"deliver ({how}) imports {heavy & imported}"
        assert "mailgated.intake.durable" in imported  # the importtime lines were read


def test_deliver_bad_option_keeps_the_mail(tmp_path: Path, config: Path) -> None:
    """A mistyped deliver option is exit 75 (the mail is kept), and good forms are accepted."""
    done = deliver(config, message(1), "--sectoin", "Support")
    assert done.returncode == 75  # the sender keeps it until the mda line is fixed
    assert "unexpected argument '--sectoin'" in done.stderr.decode()
    ok = deliver(config, message(1), "-v", "--section=Support", "--recipient=a@x.org")
    assert ok.returncode == 0 and b"spooled" in ok.stderr
    [entry] = spooled(tmp_path).entries()
    assert (entry.envelope.section, entry.envelope.recipients) == ("Support", ["a@x.org"])
