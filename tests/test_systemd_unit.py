"""The systemd unit verifies, is hardened to "OK", and its sysusers/tmpfiles files apply."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
INSTALLED_AT = "/usr/local/bin/mailgated"


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        missing(f"{name} is not installed (Debian package systemd; tests/run.sh installs it)")
    assert found is not None
    return found


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's script (verify checks it exists)."""
    script = Path(sys.executable).parent / "mailgated"
    assert script.exists()
    text = (SYSTEMD / "mailgated.service").read_text()
    assert INSTALLED_AT in text
    copy = tmp_path / "mailgated.service"
    copy.write_text(text.replace(INSTALLED_AT, str(script)))
    return copy


def test_unit_verifies(unit: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit."""
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_unit_is_hardened(unit: Path) -> None:
    """`systemd-analyze security` rates the unit OK (exposure 2.0 at most), the easy ones set."""
    done = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout.splitlines()[-1] or "OK" in done.stdout
    failing = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("✗")}
    for wanted in (
        "ProtectClock=",
        "ProtectKernelLogs=",
        "ProtectHostname=",
        "ProtectProc=",
        "RestrictRealtime=",
        "RestrictSUIDSGID=",
        "RemoveIPC=",
        "PrivateMounts=",
        "SystemCallFilter=~@privileged",
        "SystemCallFilter=~@mount",
    ):
        assert wanted not in failing, wanted
    text = unit.read_text()
    assert "RuntimeDirectory=mailgated" in text and "Type=notify" in text


def test_sysusers_and_tmpfiles_make_the_user_and_directories(tmp_path: Path) -> None:
    """systemd-sysusers makes the mailgated user and group; systemd-tmpfiles its directories."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        [tool("systemd-sysusers"), f"--root={root}", str(SYSTEMD / "mailgated.sysusers")],
        check=True,
        capture_output=True,
    )
    passwd = (root / "etc" / "passwd").read_text()
    assert any(line.startswith("mailgated:") for line in passwd.splitlines())
    assert "mailgated:" in (root / "etc" / "group").read_text()
    done = subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={root}", "--create"]
        + [str(SYSTEMD / "mailgated.tmpfiles")],
        capture_output=True,
        text=True,
    )
    if os.geteuid() != 0:  # chown needs root: only the syntax is checked then
        assert "Failed to parse" not in done.stderr and "Unknown" not in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    spool = root / "var" / "lib" / "mailgated" / "spool"
    assert spool.is_dir() and spool.stat().st_mode & 0o7777 == 0o2770
    assert (root / "etc" / "mailgated").stat().st_mode & 0o777 == 0o750
