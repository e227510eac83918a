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
    """The example config loads and documents every configuration key."""
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
    """With no config file the embedded defaults apply."""
    monkeypatch.delenv("MAILGATED_CONFIG", raising=False)
    monkeypatch.delenv("MAILGATED_DATABASE_URL", raising=False)
    loaded = cfg.load()
    assert loaded.database.url == "sqlite:///mailgated.db"
    assert loaded.listen.smtp == "127.0.0.1:2525"


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILGATED_CONFIG names the file and MAILGATED_DATABASE_URL overrides its database."""
    path = tmp_path / "m.toml"
    path.write_text('[database]\nurl = "sqlite:///file.db"\n[rules]\nsweep_interval = 5\n')
    monkeypatch.setenv("MAILGATED_CONFIG", str(path))
    monkeypatch.setenv("MAILGATED_DATABASE_URL", "sqlite:///env.db")
    loaded = cfg.load()
    assert loaded.rules.sweep_interval == 5
    assert loaded.database.url == "sqlite:///env.db"


def test_ca_file_checked(tmp_path: Path) -> None:
    """A ca_file of the wrong type, missing or without a certificate is a one-line error."""
    path = tmp_path / "m.toml"
    path.write_text('[[mailbox]]\nurl = "imaps://u@h/INBOX"\nca_file = 5\n')
    with pytest.raises(cfg.ConfigError, match=r"'mailbox\[0\]\.ca_file' must be a string"):
        cfg.load(path)
    with pytest.raises(cfg.ConfigError, match=r"outbound relay: cannot read ca_file .*missing"):
        cfg.tls_client_context(str(tmp_path / "missing.pem"), "outbound relay")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(cfg.ConfigError, match="holds no usable certificate"):
        cfg.tls_client_context(str(tmp_path / "junk.pem"), "mailbox u@h/INBOX")


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    """Relative paths in the file are taken from the file's directory, not the caller's cwd."""
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "mailgated.toml"
    path.write_text(
        '[database]\nurl = "sqlite:///state/m.db"\n[spool]\npath = "spool"\n'
        '[listen]\ntls_cert = "/abs/cert.pem"\n'
        '[[mailbox]]\nsection = "S"\nurl = "imap://x"\npassword_file = "pw"\n'
    )
    loaded = cfg.load(path)
    assert loaded.database.url == f"sqlite:///{etc}/state/m.db"
    assert loaded.spool.path == str(etc / "spool")
    from mailgated.intake.mda import spool_path

    assert spool_path(str(path)) == loaded.spool.path  # `deliver` reads the same spool
    assert loaded.security.secret_file == str(etc / "secret.key")
    assert loaded.mailbox[0].password_file == str(etc / "pw")
    assert loaded.listen.tls_cert == "/abs/cert.pem" and loaded.listen.tls_key == ""


def test_command_refuses_to_create_a_database_outside_init(tmp_path: Path) -> None:
    """`case list` with no database says to run init and leaves nothing behind; init then works."""
    from conftest import MG

    config = tmp_path / "mailgated.toml"
    config.write_text('[database]\nurl = "sqlite:///typo/m.db"\n')
    mg = MG(tmp_path, "", config)
    refused = mg("case", "list", ok=False)
    assert refused.code == 1 and "mailgated init" in refused.err
    failed = mg("init", ok=False)
    assert failed.code == 1 and f"directory {tmp_path / 'typo'} does not exist" in failed.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mailgated.toml"]
    (tmp_path / "typo").mkdir()
    assert "database ready at revision" in mg("init").out
    assert mg("case", "list").code == 0


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("relay.example.com", 25, ("relay.example.com", 25)),
        ("relay.example.com:2525", 25, ("relay.example.com", 2525)),
        ("[::1]:587", None, ("::1", 587)),
        ("[::1]", 465, ("::1", 465)),
    ],
)
def test_host_port_reads_every_address_form(
    value: str, default: int | None, expected: tuple[str, int]
) -> None:
    """One parser for relay and listener addresses: host:port, [IPv6]:port, a default port."""
    assert cfg.host_port(value, default) == expected


def test_listen_addresses_and_their_one_line_errors() -> None:
    """A listener takes host:port (any host when empty) or unix:/path; anything else is named."""
    assert cfg.parse_listen(":2525") == ("0.0.0.0", 2525)
    assert cfg.parse_listen("unix:/run/mailgated/lmtp") == ("unix", "/run/mailgated/lmtp")
    with pytest.raises(cfg.ConfigError, match="listen address 'localhost' must be host:port"):
        cfg.parse_listen("localhost")
    with pytest.raises(cfg.ConfigError, match="address 'relay:smtp' must be host:port"):
        cfg.host_port("relay:smtp", 25)


def test_automatic_lists_are_read_and_a_bad_pattern_is_one_line(tmp_path: Path) -> None:
    """[automatic] adds subject prefixes and body patterns; a pattern that is no regular
    expression is a configuration error naming the key."""
    from mailgated.process import automatic_patterns

    path = tmp_path / "mailgated.toml"
    path.write_text('[automatic]\nsubject_prefixes = ["Urlaubsnotiz:"]\nbody_patterns = ["(x"]\n')
    with pytest.raises(cfg.ConfigError, match=r"automatic.body_patterns': '\(x' is not"):
        cfg.load(path)
    path.write_text('[automatic]\nsubject_prefixes = ["Urlaubsnotiz:"]\n')
    patterns = automatic_patterns(cfg.load(path))
    assert patterns.out_of_office_subject("Urlaubsnotiz: Re: [12] Pumpe") == "Urlaubsnotiz:"


def test_worker_niceness_is_read_and_out_of_range_is_one_line(tmp_path: Path) -> None:
    """[processing] nice: 10 steps by default, what the file says, and a value the kernel
    would not take (beyond 0-19) refused with the key named."""
    path = tmp_path / "mailgated.toml"
    path.write_text("[processing]\nworkers = 1\n")
    assert cfg.load(path).processing.nice == 10
    path.write_text("[processing]\nnice = 3\n")
    assert cfg.load(path).processing.nice == 3
    path.write_text("[processing]\nnice = 25\n")
    with pytest.raises(cfg.ConfigError, match="'processing.nice' must be from 0 to 19, not 25"):
        cfg.load(path)


def test_public_mail_domains_are_read_and_join_the_built_in_list(tmp_path: Path) -> None:
    """[security] public_domains adds mail providers to the built-in list: two addresses
    there are no colleagues, while an organisation's own domain still makes them so."""
    from mailgated.threading.apply import public_domains
    from mailgated.threading.roles import same_organisation

    path = tmp_path / "mailgated.toml"
    path.write_text('[security]\npublic_domains = ["Mail.Example"]\n')
    public = public_domains(cfg.load(path))
    assert public == frozenset({"mail.example"})
    assert not same_organisation("a@mail.example", "b@MAIL.example", public)
    assert not same_organisation("a@gmail.com", "b@gmail.com", public)
    assert same_organisation("a@acme.example", "b@ACME.example", public)
    assert not same_organisation("a@acme.example", "b@other.example", public)
