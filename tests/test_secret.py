"""The site secret is made once, private, and then kept."""

from __future__ import annotations

import dataclasses
import stat
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
