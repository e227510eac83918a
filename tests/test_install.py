"""A wheel installed into a fresh venv (not editable) creates its database and runs a mail through.

The wheel is built from this checkout (`pip wheel`, pip's cache and index as usual) and
installed with `--no-deps` into a new venv; the dependencies are borrowed from the running
venv through a `.pth` line (their `.pth` hooks are not run there, so this checkout's
editable install stays invisible): the test checks what the package ships, quickly.
"""

from __future__ import annotations

import email.message
import json
import os
import shutil
import site
import smtplib
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from conftest import Result
from smtp_sink import SinkHandler, free_port, smtp_sink
from test_walkthrough import build_directory

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built the way `pip install .` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    # from a clean copy: setuptools reuses build/ in the tree, stale files and all
    source = tmp_path_factory.mktemp("source") / "mailgated"
    junk = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*junk))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("mailgated-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable); returns its bin directory."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    ours.update(p for p in site.getsitepackages() if os.path.isdir(p))
    (Path(purelib) / "borrowed_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return root / "bin"


def clean_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATED_")}
    env.pop("PYTHONPATH", None)
    env["MAILGATED_CONFIG"] = str(config)
    return env


class Installed:
    """Runs the installed `mailgated` script, as the MG fixture runs the in-process CLI."""

    def __init__(self, bin_dir: Path, config: Path, cwd: Path) -> None:
        self.script = bin_dir / "mailgated"
        self.config = config
        self.cwd = cwd

    def __call__(
        self, *args: str, as_user: str | None = None, ok: bool = True, stdin: bytes | None = None
    ) -> Result:
        argv = [str(self.script)] + (["--as", as_user] if as_user else []) + list(args)
        done = subprocess.run(
            argv, cwd=self.cwd, env=clean_env(self.config), capture_output=True, input=stdin
        )
        result = Result(done.returncode, done.stdout.decode(), done.stderr.decode())
        if ok and done.returncode != 0:
            raise AssertionError(f"mailgated {' '.join(args)} exited {result.code}: {result.err}")
        return result


def test_wheel_ships_the_migrations_and_declares_matplotlib(wheel: Path) -> None:
    """The wheel holds every migration script, and matplotlib (for --chart) is a dependency."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line for line in zf.read(metadata).decode().splitlines() if line.startswith("Requires")
        ]
    shipped = {Path(n).name for n in names if n.startswith("mailgated/migrations/versions/")}
    in_repo = {p.name for p in (REPO / "mailgated/migrations/versions").glob("*.py")}
    assert in_repo and in_repo <= shipped
    assert any(r.startswith("Requires-Dist: matplotlib") and "extra" not in r for r in requires)


def write_config(etc: Path, smtp: int, relay: int) -> Path:
    config = etc / "mailgated.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///state/mailgated.db"\n'
        f'[listen]\nsmtp = "127.0.0.1:{smtp}"\n'
        f'[outbound]\nrelay = "127.0.0.1:{relay}"\n'
        f'[spool]\npath = "state/spool"\n[security]\nsecret_file = "state/secret.key"\n'
    )
    return config


def test_installed_wheel_runs_the_walkthrough_and_one_mail(venv: Path, tmp_path: Path) -> None:
    """`init`, the seed's directory and one mail through `mailgated run`, all from the wheel."""
    etc, work = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    work.mkdir()
    smtp = free_port()
    with smtp_sink() as (sink, relay):
        mg = Installed(venv, write_config(etc, smtp, relay), work)
        walk_and_mail(mg, etc, smtp, venv, sink)
    acknowledged = [r.message for r in sink.messages]
    assert [m["To"] for m in acknowledged] == ["s.l@agrolait.com"]  # the acknowledgement
    assert "Install 20 posts" in str(acknowledged[0]["Subject"])


def walk_and_mail(mg: Installed, etc: Path, smtp: int, venv: Path, sink: SinkHandler) -> None:
    located = subprocess.run(
        [str(venv / "python"), "-c", "import mailgated; print(mailgated.__file__)"],
        cwd=mg.cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert located.startswith(str(venv.parent)), located  # the wheel, not this checkout

    refused = mg("section", "list", ok=False)
    assert refused.code == 1 and "mailgated init" in refused.err
    assert not (etc / "state").exists()  # nothing made for a database that is not there
    failed = mg("init", ok=False)  # the directory of the configured file does not exist
    assert failed.code == 1 and "does not exist" in failed.err
    (etc / "state").mkdir()
    out = mg("init").out
    assert "database ready at revision 0" in out and str(etc / "state" / "mailgated.db") in out
    build_directory(mg)
    assert {s["name"] for s in mg("section", "list", "--json").json()} >= {"Sales", "Quality"}
    assert not any(mg.cwd.iterdir())  # relative paths followed the config file, not the cwd

    daemon = subprocess.Popen(
        [str(venv / "mailgated"), "run"],
        cwd=mg.cwd,
        env=clean_env(mg.config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        first = daemon.stdout.readline()
        assert str(etc / "state" / "mailgated.db") in first
        assert "Traceback" not in first
        for line in daemon.stdout:
            if "mailgated ready" in line:
                break
        msg = email.message.EmailMessage()
        msg["From"] = "Sylvie Lelitre <s.l@agrolait.com>"
        msg["To"] = "sales@example.com"
        msg["Subject"] = "Install 20 posts"
        msg.set_content("Can you install 20 posts next week?")
        with smtplib.SMTP("127.0.0.1", smtp) as client:
            client.send_message(msg)
        cases: list[dict[str, object]] = []
        for _ in range(300):
            cases = json.loads(mg("case", "list", "--json").out)
            if cases:
                break
            time.sleep(0.1)
        assert [c["subject"] for c in cases] == ["Install 20 posts"]
        for _ in range(300):
            if sink.messages:
                break
            time.sleep(0.1)
    finally:
        daemon.terminate()
        rest, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, rest
    assert "Traceback" not in rest
