"""`mailgated run` starts on the embedded default, says it is ready, and stops on a signal."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from daemon_process import run_daemon


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
