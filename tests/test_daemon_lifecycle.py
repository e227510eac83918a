"""`mailgated run` under systemd: sd_notify, SIGHUP reload, a database down at start."""

from __future__ import annotations

import logging
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import engine_url
from conversation import SUPPORT, WAIT, World, mail
from daemon_helpers import run_daemon
from dovecot import Dovecot
from outage import FlakyDatabase
from smtp_sink import free_port, smtp_sink

from mailgated.daemon import STATUS_EVERY
from mailgated.intake.spool import Spool
from mailgated.monitor import HEARTBEAT_SECONDS


class NotifySocket:
    """A fake $NOTIFY_SOCKET: the datagrams systemd would get."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(WAIT)
        self.seen: list[str] = []

    def next(self) -> str:
        """The next datagram (kept in `seen` too)."""
        message = self.sock.recv(65536).decode()
        self.seen.append(message)
        return message

    def wait_for(self, field: str) -> str:
        """The next datagram holding `field` (e.g. READY=1); the others are kept in `seen`."""
        while True:
            message = self.sock.recv(65536).decode()
            self.seen.append(message)
            if field in message.split("\n"):
                return message


def start(tmp_path: Path, config: str, notify: NotifySocket, **env: str) -> subprocess.Popen[str]:
    path = tmp_path / "mailgated.toml"
    path.write_text(config)
    return run_daemon(tmp_path, path, NOTIFY_SOCKET=str(notify.path), **env)


def config_text(smtp: int, relay: int, extra: str = "") -> str:
    return (
        f'[listen]\nsmtp = "127.0.0.1:{smtp}"\n[outbound]\nrelay = "127.0.0.1:{relay}"\n'
        f"[processing]\nworkers = 1\npoll_interval = 0.1\n{extra}"
    )


def test_systemd_status_says_a_mailbox_waits_in_idle(tmp_path: Path, dovecot: Dovecot) -> None:
    """STATUS= tells of the mailboxes: one that has polled Dovecot and waits in IMAP IDLE
    for news is said to (not "last poll 20 min ago" while it is fine)."""
    notify = NotifySocket(tmp_path / "notify.sock")
    imap = f"imap://support@127.0.0.1:{dovecot.imap_port}/INBOX"
    extra = (
        f'[[mailbox]]\nsection = "Support"\nurl = "{imap}"\n'
        f'password_file = "{dovecot.password_file(tmp_path)}"\n'
    )
    proc = start(tmp_path, config_text(free_port(), free_port(), extra), notify)
    try:
        notify.wait_for("READY=1")
        deadline = time.monotonic() + 3 * STATUS_EVERY
        while time.monotonic() < deadline:  # the first poll comes after READY=1
            status = [f for f in notify.next().split("\n") if f.startswith("STATUS=")]
            if status and status[0].endswith("; mailbox in IDLE"):
                break
        else:
            raise AssertionError(f"no STATUS= with the mailbox in IDLE: {notify.seen[-3:]}")
        assert status[0].startswith("STATUS=0 queued, 0 failed, spool 0")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATED_")}
        env["MAILGATED_CONFIG"] = str(tmp_path / "mailgated.toml")
        deadline = time.monotonic() + 3 * HEARTBEAT_SECONDS  # `status` reads the heartbeat
        while True:
            shown = subprocess.run(
                [sys.executable, "-m", "mailgated", "status"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
            ).stdout
            if "waiting in IDLE" in shown or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "mailbox support@127.0.0.1/INBOX (Support): last poll" in shown
        assert "waiting in IDLE" in shown, shown
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=WAIT)
        assert proc.returncode == 0
    finally:
        proc.kill()
        notify.sock.close()


def test_systemd_hears_ready_status_watchdog_reloading_and_stopping(tmp_path: Path) -> None:
    """READY=1 with a STATUS summary, WATCHDOG=1 from the loop, RELOADING=1 then READY=1
    on SIGHUP, STOPPING=1 on SIGTERM, and a clean exit."""
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start(tmp_path, config_text(free_port(), free_port()), notify, WATCHDOG_USEC="400000")
    try:
        ready = notify.wait_for("READY=1")
        assert any(line.startswith("STATUS=") and "queued" in line for line in ready.split("\n"))
        notify.wait_for("WATCHDOG=1")
        notify.wait_for("WATCHDOG=1")  # again: it keeps coming from the running loop
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        notify.sock.close()
    assert proc.returncode == 0, out
    assert "reloaded" in out and "Traceback" not in out


def test_sighup_reloads_the_config_keeping_open_sessions_and_refusing_a_broken_file(
    tmp_path: Path,
) -> None:
    """A broken file is logged and changes nothing; a good one takes effect (the new relay
    gets the next mail) while an SMTP session opened before the reload goes on."""
    smtp, first_relay, second_relay = free_port(), free_port(), free_port()
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start(tmp_path, config_text(smtp, first_relay), notify)
    config = tmp_path / "mailgated.toml"
    try:
        notify.wait_for("READY=1")
        subprocess.run(
            [sys.executable, "-m", "mailgated", "section", "add", "Support", "--email", SUPPORT],
            cwd=tmp_path,
            env={**os.environ, "MAILGATED_CONFIG": str(config)},
            check=True,
            capture_output=True,
        )
        config.write_text("[listen\nthis is not TOML")
        proc.send_signal(signal.SIGHUP)
        failed = notify.wait_for("READY=1")
        assert "STATUS=reload failed" in failed
        with smtp_sink(second_relay) as (sink, _), smtplib.SMTP("127.0.0.1", smtp) as session:
            session.ehlo()
            config.write_text(config_text(smtp, second_relay))
            proc.send_signal(signal.SIGHUP)
            notify.wait_for("READY=1")
            partner = "p@partner.example"
            session.sendmail(partner, [SUPPORT], mail(partner, SUPPORT, "After", "Hi").as_bytes())
            deadline = time.monotonic() + WAIT
            while not any(partner in m.rcpt_tos for m in list(sink.messages)):
                assert time.monotonic() < deadline, "the new relay got nothing"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        notify.sock.close()
    assert "reload failed, the running configuration is kept" in out
    assert "Traceback" not in out


@pytest.fixture(params=["postgresql"])
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return engine_url(request, tmp_path)


def test_a_database_down_at_start_is_waited_for_while_smtp_takes_mail(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon starts with the database down: SMTP accepts mail for the sections of the
    last run into the spool, and once the database answers the mail becomes a case."""
    caplog.set_level(logging.INFO)
    flaky = FlakyDatabase(pg_url, tmp_path)
    world = World(flaky.url, tmp_path)
    world.db.dispose()
    world.db = flaky.db
    world.directory()
    with world.running():  # a first run knows the sections (kept under spool/state/)
        pass
    flaky.cut()
    with world.running():
        assert "database unavailable at start" in caplog.text
        world.send(mail("early@partner.example", SUPPORT, "Early", "Database down."))
        assert any((tmp_path / "spool" / "new").iterdir())
        flaky.restore()
        world.wait_for("early@partner.example")
    assert "database available after" in caplog.text
    assert [c["subject"] for c in world.cases()] == ["Early"]
    flaky.db.dispose()


def test_a_stop_answers_421_to_new_work_and_finishes_a_message_in_data(
    db_url: str, tmp_path: Path
) -> None:
    """On stop, a new session and a new MAIL get 421 4.3.2, while the message a client was
    sending is still spooled and answered 250."""
    world = World(db_url, tmp_path)
    world.directory()
    world.start()
    port = world.smtp_port
    sending = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    idle = smtplib.SMTP("127.0.0.1", port, timeout=WAIT)
    idle.ehlo()
    reader = sending.makefile("rb")

    def say(line: bytes) -> bytes:
        sending.sendall(line + b"\r\n")
        return reader.readline()

    try:
        assert reader.readline().startswith(b"220")
        say(b"EHLO client.example")
        while not reader.readline().startswith(b"250 "):
            pass
        assert say(b"MAIL FROM:<p@partner.example>").startswith(b"250")
        assert say(b"RCPT TO:<" + SUPPORT.encode() + b">").startswith(b"250")
        assert say(b"DATA").startswith(b"354")
        body = mail("p@partner.example", SUPPORT, "In flight", "Sent while stopping.")
        raw = body.as_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
        sending.sendall(raw[:40])
        assert world._loop is not None and world.daemon is not None
        world._loop.call_soon_threadsafe(world.daemon.request_stop)
        time.sleep(0.5)
        with smtplib.SMTP(timeout=WAIT) as late:
            code, _ = late.connect("127.0.0.1", port)
        assert code == 421
        code, _ = idle.mail("q@partner.example")
        assert code == 421
        sending.sendall(raw[40:] + b"\r\n.\r\n")
        assert reader.readline().startswith(b"250 2.0.0 OK queued as")
    finally:
        sending.close()
        idle.close()
        world.stop()
    spooled = len(Spool(tmp_path / "spool").entries())
    assert spooled == 1 or [c["subject"] for c in world.cases()] == ["In flight"]
    world.db.dispose()
