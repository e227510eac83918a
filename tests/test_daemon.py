"""`mailgated run` starts on the embedded default, says it is ready, and stops on a signal."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import pytest
from daemon_helpers import run_daemon

from mailgated.daemon import Notifier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_starts_and_stops_cleanly(tmp_path: Path) -> None:
    """mailgated run starts, listens, and stops cleanly on SIGTERM."""
    config = tmp_path / "mailgated.toml"
    config.write_text(f'[listen]\nsmtp = "127.0.0.1:{free_port()}"\n')
    proc = run_daemon(tmp_path, config)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "mailgated ready" in line:
            break
    assert any("mailgated ready" in line for line in lines), "".join(lines)
    assert (tmp_path / "mailgated.db").exists()  # the embedded SQLite default
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "mailgated stopped" in rest
    assert "Traceback" not in "".join(lines) + rest


def test_run_tells_systemd_ready_and_stopping(tmp_path: Path) -> None:
    """Under systemd (Type=notify) the daemon sends READY=1, then STOPPING=1 on SIGTERM."""
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(60)
    config = tmp_path / "mailgated.toml"
    config.write_text(f'[listen]\nsmtp = "127.0.0.1:{free_port()}"\n')
    proc = run_daemon(tmp_path, config, output=subprocess.DEVNULL, NOTIFY_SOCKET=str(sock_path))
    try:
        assert b"READY=1" in listener.recv(4096)
        proc.send_signal(signal.SIGTERM)
        while b"STOPPING=1" not in listener.recv(4096):  # STATUS= updates may come first
            pass
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        listener.close()


def test_sd_notify_reaches_an_abstract_socket_and_leaves_none_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$NOTIFY_SOCKET as "@name" (systemd's abstract namespace) gets the datagrams; one that
    nobody listens on loses them quietly; neither leaves a socket open after close()."""
    name = f"mailgated-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(10)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
            notify = Notifier()
            notify("READY=1", "STATUS=1 queued, 0 failed, spool 0")
            assert listener.recv(4096) == b"READY=1\nSTATUS=1 queued, 0 failed, spool 0"
            notify.close()
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
            gone = Notifier()
            gone("STOPPING=1")  # no error
            gone.close()
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
