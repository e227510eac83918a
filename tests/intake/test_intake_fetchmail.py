"""The real fetchmail with etc/fetchmailrc.example against a real Dovecot, delivering with
`mailgated deliver`: every message spooled exactly once, removed from the server only after."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import missing
from dovecot import Dovecot
from intake_helpers import break_spool, env_with, message, repair_spool, spool_config

from mailgated.intake.identity import content_hash
from mailgated.intake.spool import Spool

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "etc" / "fetchmailrc.example"
FETCHMAIL = shutil.which("fetchmail")


def rc_for(
    dovecot: Dovecot, tmp_path: Path, protocol: str, *, port: int | None = None, plain: bool = False
) -> Path:
    """The example rc with only one poll kept and host, port, user, password, config changed."""
    text = EXAMPLE.read_text()
    head, _, polls = text.partition("\npoll ")
    blocks = ["poll " + b for b in polls.split("\npoll ")]
    block = next(b for b in blocks if f"protocol {protocol}" in b.splitlines()[0])
    default_port = {"pop3": dovecot.pop3s_port, "imap": dovecot.imaps_port}[protocol]
    block = re.sub(r"port \d+", f"port {port or default_port}", block, count=1)
    block = block.replace("mail.example.com", "127.0.0.1")
    block = re.sub(r'user "[^"]*"', f'user "{dovecot.user}"', block)
    block = block.replace('"CHANGE-ME"', f'"{dovecot.password}"')
    block = block.replace("/etc/mailgated/mailgated.toml", str(tmp_path / "mailgated.toml"))
    if plain:  # behind the test's POP3 proxy, which must read the commands
        block = block.replace("ssl sslcertck", "sslproto ''")
    else:
        block = block.replace("sslcertck", f"sslcertck sslcertfile {dovecot.cert}")
    rc = tmp_path / "fetchmailrc"
    rc.write_text(head + "\n" + block.split("\n# ")[0].rstrip() + "\n")
    rc.chmod(0o600)
    return rc


def fetchmail(rc: Path, tmp_path: Path, **popen: object) -> subprocess.Popen[bytes]:
    home = tmp_path / "fetchmail-home"
    home.mkdir(exist_ok=True)
    env = env_with(tmp_path / "mailgated.toml") | {"FETCHMAILHOME": str(home), "HOME": str(home)}
    assert FETCHMAIL
    return subprocess.Popen(
        [FETCHMAIL, "-f", str(rc), "-d0", "--nosyslog", "-v", "--pidfile", str(home / "pid")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,  # type: ignore[call-overload]
    )


def run_fetchmail(rc: Path, tmp_path: Path) -> tuple[int, str]:
    proc = fetchmail(rc, tmp_path)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture(autouse=True)
def _need_fetchmail(dovecot: Dovecot) -> None:
    if FETCHMAIL is None:
        missing("fetchmail is not installed")
    if dovecot.cert is None:
        missing("openssl is not installed (needed for the TLS of the example rc)")


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_example_rc_spools_each_message_once(
    dovecot: Dovecot, tmp_path: Path, protocol: str
) -> None:
    """The example fetchmailrc with deliver spools each message once, read or unread."""
    spool_config(tmp_path)
    sent = [message(n) for n in (1, 2, 3)] + [message(4, message_id=False)]
    dovecot.append(*sent[:2])
    dovecot.append(*sent[2:], flags="(\\Seen)")
    rc = rc_for(dovecot, tmp_path, protocol)

    break_spool(tmp_path / "spool")  # first poll: mailgated cannot spool (exit 75)
    code, out = run_fetchmail(rc, tmp_path)
    assert "75" in out, out
    assert len(dovecot.inbox()) == 4  # nothing removed from the server
    repair_spool(tmp_path / "spool")

    code, out = run_fetchmail(rc, tmp_path)
    assert code == 0, out
    spool = Spool(tmp_path / "spool")
    entries = spool.entries()
    assert sorted(spool.read(e.id).split(b"Subject: ")[1][:9] for e in entries) == [
        b"Problem 1",
        b"Problem 2",
        b"Problem 3",
        b"Problem 4",
    ]
    assert {e.envelope.section for e in entries} == {"Support" if protocol == "pop3" else "Sales"}
    assert dovecot.inbox() == []  # gone from the server, after

    code, out = run_fetchmail(rc, tmp_path)  # nothing new: fetchmail exits 1 ("no mail")
    assert code == 1, out
    assert len(spool.entries()) == 4


class QuitKiller:
    """A POP3 proxy that kills fetchmail when it sends QUIT, before the server sees it."""

    def __init__(self, upstream: int, on_quit: Callable[[], None]) -> None:
        self.upstream = upstream
        self.on_quit = on_quit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.commands: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            self._client_to_server(client, server)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        buffer = b""
        try:
            while data := client.recv(65536):
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    self.commands.append(line.split(b" ")[0].upper())
                    if line.upper().startswith(b"QUIT"):
                        self.on_quit()
                        server.close()  # the server never sees QUIT: no UPDATE state
                        client.close()
                        return
                    server.sendall(line + b"\r\n")
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_fetchmail_killed_after_dele_before_quit(dovecot: Dovecot, tmp_path: Path) -> None:
    """fetchmail killed between DELE and QUIT loses nothing and spools nothing twice."""
    spool_config(tmp_path)
    dovecot.append(message(1), message(2, message_id=False))
    proc: list[subprocess.Popen[bytes]] = []
    proxy = QuitKiller(dovecot.pop3_port, lambda: os.kill(proc[0].pid, signal.SIGKILL))
    rc = rc_for(dovecot, tmp_path, "pop3", port=proxy.port, plain=True)
    try:
        proc.append(fetchmail(rc, tmp_path))
        try:
            proc[0].communicate(timeout=60)
        finally:
            proc[0].kill()
        assert proc[0].returncode == -signal.SIGKILL
        assert b"DELE" in proxy.commands
    finally:
        proxy.close()
    assert len(dovecot.inbox()) == 2  # DELE never committed

    code, out = run_fetchmail(rc_for(dovecot, tmp_path, "pop3"), tmp_path)
    assert code == 0, out
    assert dovecot.inbox() == []
    spool = Spool(tmp_path / "spool")
    entries = spool.entries()
    assert len(entries) == 4  # handed twice, each copy with its own Received: line
    by_id: dict[str, set[str]] = {}
    for entry in entries:
        raw = spool.read(entry.id)
        assert b"Received: " in raw
        by_id.setdefault(entry.envelope.message_id, set()).add(content_hash(raw))
    # the processing step dedupes on (Message-ID, content hash): two keys, one per message
    assert len(by_id) == 2
    assert all(len(hashes) == 1 for hashes in by_id.values())
    assert "<m1@example.org>" in by_id


def test_a_too_large_message_is_recorded_once_not_fetched_forever(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    """Over max_message_size: deliver records its header and exits 0, so fetchmail removes it
    and does not fetch it again on every poll (it would on any non-zero exit)."""
    spool_config(tmp_path, "[listen]\nmax_message_size = 4000\n")
    dovecot.append(message(1), message(2, body="x" * 70 + "\r\n" * 100 + "y" * 7000))
    rc = rc_for(dovecot, tmp_path, "pop3")
    code, out = run_fetchmail(rc, tmp_path)
    assert code == 0, out
    spool = Spool(tmp_path / "spool")
    assert [e.subject for e in spool.entries()] == ["Problem 1"]
    [kept] = spool.entries(quarantined=True)
    assert kept.subject == "Problem 2" and kept.envelope.reason.startswith("too large")
    assert dovecot.inbox() == []

    code, out = run_fetchmail(rc, tmp_path)  # nothing left to fetch
    assert code == 1, out
    assert len(spool.entries(quarantined=True)) == 1
