"""Helpers shared by the intake tests: messages, a broken spool, running the CLI as a process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def message(
    n: int,
    *,
    message_id: bool = True,
    body: str = "",
    to: str = "support@example.com",
    eol: str = "\r\n",
) -> bytes:
    lines = [
        f"From: Customer {n} <c{n}@example.org>",
        f"To: {to}",
        f"Subject: Problem {n}",
        "Date: Sat, 28 Nov 2026 10:00:00 +0000",
    ]
    if message_id:
        lines.append(f"Message-ID: <m{n}@example.org>")
    text = eol.join(lines) + eol + eol + (body or f"Body of message {n}") + eol
    return text.encode()


def break_spool(spool_path: Path) -> None:
    """Make every write fail, for root too: tmp/ becomes a plain file (ENOTDIR / EEXIST)."""
    tmp = spool_path / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("not a directory\n")


def repair_spool(spool_path: Path) -> None:
    (spool_path / "tmp").unlink()
    (spool_path / "tmp").mkdir()


def env_with(config: Path) -> dict[str, str]:
    env = dict(os.environ, MAILGATED_CONFIG=str(config))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MAILGATED_DATABASE_URL", None)
    return env


def deliver(config: Path, raw: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the installed `mailgated deliver` exactly as fetchmail or Postfix would."""
    return subprocess.run(
        [str(BIN / "mailgated"), "deliver", *args],
        input=raw,
        env=env_with(config),
        capture_output=True,
        timeout=60,
    )


def spool_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "mailgated.toml"
    config.write_text(f'[spool]\npath = "{tmp_path / "spool"}"\n{extra}')
    return config
