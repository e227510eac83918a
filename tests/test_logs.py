"""Logs for journald and for people: priority prefixes, one key per message, escaped mail bytes."""

from __future__ import annotations

import json
import logging
import os
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from intake_helpers import deliver
from smtp_sink import free_port

from mailgated import logs

EVIL = "Problem \x1b[2J\x07 here"  # a terminal escape and a bell in the Subject


def evil_message(n: int) -> bytes:
    return (
        f"From: Customer <c{n}@example.org>\r\nTo: support@example.com\r\n"
        f"Subject: {EVIL}\r\nMessage-ID: <evil{n}\x1b[31m@example.org>\r\n\r\nHello\r\n"
    ).encode()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "mailgated.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///mailgated.db"\n'
        f'[listen]\nsmtp = "127.0.0.1:{free_port()}"\n'
        f'[outbound]\nrelay = "127.0.0.1:{free_port()}"\n{extra}'
    )
    return config


@contextmanager
def daemon(tmp_path: Path, config: Path, journal: bool) -> Iterator[list[str]]:
    """`mailgated run` with stderr on a pipe (announced as the journal stream when `journal`);
    yields the lines read so far, which grows until the daemon stops."""
    read_fd, write_fd = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATED_", "JOURNAL"))}
    env["MAILGATED_CONFIG"] = str(config)
    if journal:
        st = os.fstat(write_fd)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    subprocess.run(
        [sys.executable, "-m", "mailgated", "init"], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [sys.executable, "-m", "mailgated", "section", "add", "Support"]
        + ["--email", "support@example.com"],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgated", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=write_fd,
    )
    os.close(write_fd)
    lines: list[str] = []
    reader = os.fdopen(read_fd, encoding="utf-8", errors="surrogateescape")

    def read() -> None:
        for line in reader:
            lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        wait_for(lines, "mailgated ready")
        yield lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        thread.join(timeout=30)
        reader.close()


def wait_for(lines: list[str], text: str, count: int = 1) -> None:
    # the lines arrive through the pipe: read until enough are there (or give up after 60 s)
    deadline = time.monotonic() + 60
    while sum(text in line for line in lines) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_journald_lines_follow_one_message(tmp_path: Path) -> None:
    """Under journald: priority prefixes, no timestamps, one spool id from intake to
    processing, quarantine as a warning, the startup line first, escaped mail bytes."""
    config = write_config(tmp_path)
    smtp_port = int(config.read_text().split("127.0.0.1:")[1].split('"')[0])
    with daemon(tmp_path, config, journal=True) as lines:
        with smtplib.SMTP("127.0.0.1", smtp_port) as client:
            client.sendmail("c1@example.org", ["support@example.com"], evil_message(1))
        bad = deliver(config, evil_message(2), "--section", "No Such Section")
        assert bad.returncode == 0, bad.stderr
        wait_for(lines, "case 1")
        wait_for(lines, "quarantined")
    text = "\n".join(lines)
    assert all(line[:3] in {"<7>", "<6>", "<5>", "<4>", "<3>", "<2>"} for line in lines), text
    assert not any(line[3:7].isdigit() for line in lines), text  # no timestamp of our own
    first = lines[0]
    assert first.startswith("<6>") and "mailgated " in first and "starting" in first
    assert f"config {config}" in first and f"database sqlite:///{tmp_path}/mailgated.db" in first
    assert f"spool {tmp_path}/spool" in first and "smtp 127.0.0.1:" in first
    processed = [line for line in lines if "case 1" in line]
    assert processed and processed[0].startswith("<6>"), text
    spool_id = processed[0].split("mailgated.process: ")[1].split(":")[0]
    spooled = [line for line in lines if f"spooled {spool_id}" in line]
    assert spooled and spooled[0].startswith("<6>"), text  # the intake line, same key
    quarantined = [line for line in lines if "quarantined" in line]
    assert quarantined and quarantined[0].startswith("<4>"), text
    assert "\x1b" not in text and "\x07" not in text  # no terminal escapes from mail


def test_plain_and_json_formats(tmp_path: Path) -> None:
    """Outside systemd a line has its timestamp; `format = "json"` gives objects with spool_id."""
    plain = logs.Formatter()
    record = logging.LogRecord("mailgated.x", logging.WARNING, "", 0, "from <%s>", ("a\nb",), None)
    line = plain.format(record)
    assert line[:4].isdigit() and "WARNING mailgated.x: from <a\\nb>" in line
    journal = logs.Formatter(journal=True)
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "mailgated.x", logging.ERROR, "", 0, "failed", (), sys.exc_info()
        )
    assert all(part.startswith("<3>") for part in journal.format(record).split("\n"))

    config = write_config(tmp_path, '[logging]\nformat = "json"\n')
    with daemon(tmp_path, config, journal=False) as lines:
        assert deliver(config, evil_message(3)).returncode == 0
        wait_for(lines, "case 1")
    objects = [json.loads(line) for line in lines]
    assert objects[0]["message"].startswith("mailgated ") and objects[0]["level"] == "info"
    with_id = [o for o in objects if "case 1" in o["message"]]
    assert with_id and with_id[0]["spool_id"] and with_id[0]["spool_id"] in with_id[0]["message"]
