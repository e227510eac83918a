"""`mailgated status`, /health and /metrics tell an operator what a running daemon does."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from intake_helpers import deliver
from smtp_sink import free_port, smtp_sink

from mailgated.config import Config, ListenConfig
from mailgated.db import Database
from mailgated.monitor import Monitor
from mailgated.web import HttpServer

SECRET = b"s" * 32


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def env_for(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATED_", "JOURNAL"))}
    env["MAILGATED_CONFIG"] = str(config)
    return env


def mailgated(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailgated", *args],
        env=env_for(config),
        capture_output=True,
        text=True,
        timeout=120,
    )


def status(config: Path) -> tuple[int, dict[str, Any]]:
    done = mailgated(config, "status", "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@contextmanager
def running(config: Path) -> Iterator[list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgated", "run"],
        env=env_for(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        while not any("mailgated ready" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        yield lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        proc.stderr.close()


def until(check: Any, what: str) -> Any:
    """Poll `check` until it returns something true (the daemon works in the background)."""
    for _ in range(900):
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def test_status_health_and_metrics_of_a_running_daemon(tmp_path: Path) -> None:
    """A failed mail, a quarantined message and a failing mailbox make `status` exit 1 and
    name them; /health is 200; /metrics counts what happened; a stopped daemon shows down."""
    smtp, http, dead_imap = free_port(), free_port(), free_port()
    with smtp_sink() as (sink, relay):
        sink.refuse.add("s.l@agrolait.com")  # the acknowledgement fails for good (550)
        config = tmp_path / "mailgated.toml"
        config.write_text(
            f'[listen]\nsmtp = "127.0.0.1:{smtp}"\nhttp = "127.0.0.1:{http}"\n'
            f'[outbound]\nrelay = "127.0.0.1:{relay}"\n'
            f'[[mailbox]]\nsection = "Sales"\nurl = "imap://sales@127.0.0.1:{dead_imap}/INBOX"\n'
            f'password_env = "HOME"\ninterval = 1\n'
        )
        assert mailgated(config, "init").returncode == 0
        made = mailgated(config, "section", "add", "Sales", "--email", "sales@example.com")
        assert made.returncode == 0, made.stderr

        code, report = status(config)
        assert code == 1 and "no daemon is running (mailgated run)" in report["attention"]
        text = mailgated(config, "status")
        assert text.returncode == 1 and "daemon: not running" in text.stdout

        with running(config):
            with smtplib.SMTP("127.0.0.1", smtp) as client:
                client.sendmail(
                    "s.l@agrolait.com",
                    ["sales@example.com"],
                    b"From: Sylvie <s.l@agrolait.com>\r\nTo: sales@example.com\r\n"
                    b"Subject: Install 20 posts\r\nMessage-ID: <m1@agrolait.com>\r\n\r\nHi\r\n",
                )
            assert (
                deliver(config, b"Subject: lost\r\n\r\nx\r\n", "--section", "Nope").returncode == 0
            )

            def troubled() -> Any:
                code, report = status(config)
                m = report["mailboxes"][0]
                if (
                    report["outbox"]["failed"]
                    and report["spool"]["quarantined"]
                    and m["last_error"]
                ):
                    return code, report
                return None

            code, report = until(troubled, "failed mail, quarantine and mailbox error in status")
            assert code == 1
            [daemon] = [d for d in report["daemons"] if d["up"]]
            assert daemon["pid"] and daemon["started_at"] and daemon["listeners"]["smtp"]
            assert report["outbox"]["failed"] == 1 and report["outbox"]["queued"] == 0
            attention = "\n".join(report["attention"])
            assert "1 outbound mail(s) failed" in attention
            assert "1 message(s) in quarantine" in attention
            assert f"mailbox {report['mailboxes'][0]['name']} failing since" in attention
            assert report["mailboxes"][0]["section"] == "Sales"
            shown = mailgated(config, "status")
            assert shown.returncode == 1 and "daemon: up since" in shown.stdout
            assert "attention: 1 message(s) in quarantine" in shown.stdout

            code, body = get(f"http://127.0.0.1:{http}/health")
            assert code == 200 and json.loads(body)["status"] == "ok"
            code, metrics = get(f"http://127.0.0.1:{http}/metrics")
            assert code == 200
            samples = {
                line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line and not line.startswith("#")
            }
            assert samples['mailgated_messages_received_total{way="smtp"}'] == 1
            assert samples['mailgated_messages_received_total{way="deliver"}'] == 1
            assert samples['mailgated_messages_processed_total{outcome="done"}'] == 1
            assert samples['mailgated_messages_processed_total{outcome="quarantine"}'] == 1
            assert samples["mailgated_processing_seconds_count"] == 2
            assert samples['mailgated_spool_messages{state="quarantined"}'] == 1
            assert samples['mailgated_outbox_messages{state="failed"}'] == 1
            assert samples['mailgated_outbound_attempts_total{result="failed"}'] == 1
            assert samples["mailgated_relay_seconds_count"] >= 1
            assert any(k.startswith("mailgated_poll_errors_total{") for k in samples)
            assert samples["mailgated_database_up"] == 1
            assert samples["mailgated_rule_firings_total"] == 0

    code, report = status(config)
    assert code == 1 and not any(d["up"] for d in report["daemons"])
    assert report["daemons"][0]["stopped_at"]  # a clean stop is recorded


async def test_health_answers_503_when_the_database_hangs(tmp_path: Path) -> None:
    """A database that accepts connections but never answers gives 503, not a hung probe."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does) and never says a word
    port = silent.getsockname()[1]
    config = Config(listen=ListenConfig(smtp="", http="127.0.0.1:0"))
    hung = Database(f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing")
    server = HttpServer(hung, config, SECRET)
    await server.start()
    try:
        code, body = await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/health")
        assert code == 503 and "no answer" in json.loads(body)["database"]
        again = await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/health")
        assert again[0] == 503  # the hanging check is awaited again, not stacked
    finally:
        await server.stop()
        silent.close()

    good = Database(f"sqlite:///{tmp_path / 'ok.db'}")
    server = HttpServer(good, config, SECRET)
    await server.start()
    try:
        code, body = await asyncio.to_thread(get, f"http://127.0.0.1:{server.port}/health")
        assert code == 200 and json.loads(body) == {
            "status": "ok",
            "database": "ok",
            "daemon": "running",
        }
    finally:
        await server.stop()
        good.dispose()


def test_systemd_status_tells_of_the_mailboxes() -> None:
    """STATUS= names a failing mailbox first, then one not polled yet, else the oldest last
    poll of the mailboxes not waiting in IDLE (an IDLE mailbox is told of new mail)."""
    now = dt.datetime.now(dt.UTC)
    monitor = Monitor()
    assert monitor.polls(now) == ""
    sales, support = monitor.mailbox("sales"), monitor.mailbox("support")
    assert monitor.polls(now) == "mailbox sales not polled yet (+1 more)"
    sales.last_poll = now - dt.timedelta(seconds=12)
    support.last_poll = now - dt.timedelta(minutes=5)
    assert monitor.polls(now) == "last poll 5 min ago"
    support.idling(True)
    assert monitor.polls(now) == "last poll 12 s ago, 1 in IDLE"
    sales.idling(True)
    assert monitor.polls(now) == "mailboxes in IDLE"
    support.idling(False)  # its connection broke
    support.failed(ConnectionRefusedError("[Errno 111] Connection refused"))
    assert monitor.polls(now) == "mailbox support failing: [Errno 111] Connection refused"
    support.polled()  # the next connection polled
    assert support.last_poll is not None
    assert (
        monitor.polls(support.last_poll + dt.timedelta(seconds=3)) == "last poll 3 s ago, 1 in IDLE"
    )
