"""The site secret is made once, private, and then kept."""

from __future__ import annotations

import dataclasses
import stat
import threading
from pathlib import Path

import pytest

from mailgated.config import Config, ConfigError, SecurityConfig
from mailgated.secret import load_secret


def test_secret_made_private_and_stable(tmp_path: Path) -> None:
    """The secret is made once, private (0600), and read back the same."""
    config = Config(security=SecurityConfig(secret_file=str(tmp_path / "k" / "secret.key")))
    first = load_secret(config)
    assert len(first) == 64
    mode = stat.S_IMODE((tmp_path / "k" / "secret.key").stat().st_mode)
    assert mode == 0o600
    assert load_secret(config) == first


def test_short_secret_refused(tmp_path: Path) -> None:
    """A secret shorter than 32 bytes is refused."""
    (tmp_path / "s").write_text("short\n")
    config = dataclasses.replace(Config(), security=SecurityConfig(secret_file=str(tmp_path / "s")))
    with pytest.raises(ConfigError, match="fewer than 32"):
        load_secret(config)


def _load_at_once(config: Config, count: int) -> list[bytes | Exception]:
    """`count` threads calling load_secret(config) together; what each got."""
    start = threading.Barrier(count)
    got: list[bytes | Exception] = []

    def load() -> None:
        start.wait()
        try:
            got.append(load_secret(config))
        except ConfigError as exc:
            got.append(exc)

    threads = [threading.Thread(target=load) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got


def test_processes_starting_at_once_on_a_fresh_install_share_one_secret(tmp_path: Path) -> None:
    """Many starting at once with no secret file yet (two workers of a first start) all
    get the same secret; none reads the file before it is written."""
    for round_ in range(20):
        path = tmp_path / str(round_) / "secret.key"
        got = _load_at_once(Config(security=SecurityConfig(secret_file=str(path))), 8)
        assert got == [path.read_text().strip().encode()] * 8
        assert sorted(p.name for p in path.parent.iterdir()) == ["secret.key"]
