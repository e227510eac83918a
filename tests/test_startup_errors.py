"""Start-up problems are one line naming the key and what to do, never a traceback."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailgated.config import Config, ConfigError, SecurityConfig, load
from mailgated.secret import load_secret


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATED_", "JOURNAL"))}
    env["MAILGATED_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "mailgated", *args],
        env=env,
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    """`run` with [listen] smtp on a taken port says which key, why and what to do."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "mailgated.toml"
        config.write_text(f'[listen]\nsmtp = "127.0.0.1:{port}"\n')
        done = run(config, "run")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        f"mailgated: error: listen.smtp: cannot listen on 127.0.0.1:{port}: Address already in"
        " use; another program listens there (`ss -ltnp` names it): stop it or choose another"
        " port"
    ], done.stderr
    assert "Traceback" not in done.stderr


def test_unsupported_database_url_is_one_line(tmp_path: Path) -> None:
    """A mysql:// URL is refused by name, before anything tries to import a MySQL driver."""
    config = tmp_path / "mailgated.toml"
    config.write_text('[database]\nurl = "mysql://mailgated@db.example.com/mailgated"\n')
    done = run(config, "run")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "mailgated: error: database.url: mysql:// is not supported (mailgated runs on SQLite"
        " and on PostgreSQL with psycopg 3); use sqlite:///PATH or"
        " postgresql+psycopg://USER@HOST/DATABASE"
    )
    with pytest.raises(ConfigError, match="not a database URL"):
        config.write_text('[database]\nurl = "mailgated.db"\n')
        load(config)


def test_secret_readable_by_others_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A secret file readable by everyone gets mode 0640 and a WARNING saying so."""
    secret = tmp_path / "secret.key"
    secret.write_text("a" * 64 + "\n")
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_secret(Config(security=SecurityConfig(secret_file=str(secret)))) == b"a" * 64
    assert secret.stat().st_mode & 0o777 == 0o640
    assert [r.getMessage() for r in caplog.records] == [
        f"security.secret_file: {secret} was readable by others (mode 0644); mode set to 0640"
    ]
