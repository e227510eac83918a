"""`mailgated run` as a child process, the way systemd starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_daemon(
    cwd: Path, config: Path, *, output: int = subprocess.PIPE, **env: str
) -> subprocess.Popen[str]:
    """`mailgated run` in `cwd` with `config` and `env`, none of our own $MAILGATED_*; its log
    (stdout and stderr) goes to `output`: a pipe to read, or DEVNULL."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATED_")}
    environment.update(MAILGATED_CONFIG=str(config), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "mailgated", "run"],
        cwd=cwd,
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )
