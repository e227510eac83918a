"""Configuration: the example documents every key, and the environment overrides the file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from mailgated import config as cfg

EXAMPLE = Path(__file__).parent.parent / "etc" / "mailgated.toml.example"


def uncommented_example() -> str:
    """The example with its commented [[mailbox]] block switched on."""
    text = EXAMPLE.read_text()
    head, sep, block = text.partition("# [[mailbox]]")
    assert sep, "the example documents [[mailbox]]"
    return (
        head
        + "[[mailbox]]"
        + "\n".join(line[2:] if line.startswith("# ") else line for line in block.splitlines())
    )


def test_example_loads_and_documents_every_key(tmp_path: Path) -> None:
    path = tmp_path / "example.toml"
    path.write_text(uncommented_example())
    loaded = cfg.load(path)
    data = tomllib.loads(path.read_text())
    for section in dataclasses.fields(cfg.Config):
        if section.name in ("path",):
            continue
        if section.name == "mailbox":
            assert loaded.mailbox, "the example shows a [[mailbox]]"
            documented = set(data["mailbox"][0])
            expected = {f.name for f in dataclasses.fields(cfg.MailboxConfig)}
        else:
            documented = set(data[section.name])
            expected = {f.name for f in dataclasses.fields(getattr(loaded, section.name))}
        assert documented == expected, section.name
    # the example's values are the defaults
    assert loaded.listen == cfg.ListenConfig()
    assert loaded.outbound == cfg.OutboundConfig()


def test_defaults_without_any_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILGATED_CONFIG", raising=False)
    monkeypatch.delenv("MAILGATED_DATABASE_URL", raising=False)
    loaded = cfg.load()
    assert loaded.database.url == "sqlite:///mailgated.db"
    assert loaded.listen.smtp == "127.0.0.1:2525"


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[database]\nurl = "sqlite:///file.db"\n[rules]\nsweep_interval = 5\n')
    monkeypatch.setenv("MAILGATED_CONFIG", str(path))
    monkeypatch.setenv("MAILGATED_DATABASE_URL", "sqlite:///env.db")
    loaded = cfg.load()
    assert loaded.rules.sweep_interval == 5
    assert loaded.database.url == "sqlite:///env.db"


def test_ca_file_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[mailbox]]\nurl = "imaps://u@h/INBOX"\nca_file = 5\n')
    with pytest.raises(cfg.ConfigError, match=r"'mailbox\[0\]\.ca_file' must be a string"):
        cfg.load(path)
    with pytest.raises(cfg.ConfigError, match=r"outbound relay: cannot read ca_file .*missing"):
        cfg.tls_client_context(str(tmp_path / "missing.pem"), "outbound relay")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(cfg.ConfigError, match="holds no usable certificate"):
        cfg.tls_client_context(str(tmp_path / "junk.pem"), "mailbox u@h/INBOX")
