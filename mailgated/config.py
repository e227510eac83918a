"""Configuration: one TOML file plus environment overrides, read into frozen dataclasses.

Every key is declared here with its type and default, so a typo in the file or
a value of the wrong type is reported as one line naming the key, instead of
being silently ignored and surprising the admin at 3 a.m.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, worded for the admin (one line, names the key)."""


def path_field(default: str = "") -> Any:
    """A key naming a file or directory: relative to the config file's directory when set
    there (so every command finds the same files whatever its working directory)."""
    return field(default=default, metadata={"path": True})


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///mailgated.db"


@dataclass(frozen=True)
class ListenConfig:
    smtp: str = "127.0.0.1:2525"
    lmtp: str = ""
    http: str = ""
    tls_cert: str = path_field()
    tls_key: str = path_field()
    max_message_size: int = 25 * 1024 * 1024
    hostname: str = ""


@dataclass(frozen=True)
class OutboundConfig:
    relay: str = "127.0.0.1:25"
    username: str = ""
    password_file: str = path_field()
    password_env: str = ""
    starttls: bool = False
    tls: bool = False
    ca_file: str = path_field()
    timeout: float = 30.0
    connections: int = 4
    max_age: int = 2 * 24 * 3600
    first_retry: float = 60.0
    claim_lease: float = 300.0  # seconds a message being sent is reserved for its sender
    auto_reply_limit: int = 10
    auto_reply_window: int = 3600
    loop_case_limit: int = 10
    loop_case_window: int = 600
    loop_case_hourly_limit: int = 20
    loop_address_limit: int = 1000
    loop_sender_limit: int = 100
    loop_window: int = 3600
    templates_dir: str = path_field()
    domain: str = ""
    site_id: str = ""
    max_attachment: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class SpoolConfig:
    path: str = path_field("spool")
    max_failures: int = 5
    keep_duplicates_days: int = 14


@dataclass(frozen=True)
class SecurityConfig:
    secret_file: str = path_field("secret.key")
    trusted_authserv_id: str = ""
    trusted_authres_sources: tuple[str, ...] = ("lmtp", "deliver", "imap", "pop3")
    internal_domains: tuple[str, ...] = ()
    public_domains: tuple[str, ...] = ()  # mail providers besides roles.PUBLIC_DOMAINS


@dataclass(frozen=True)
class RulesConfig:
    sweep_interval: int = 60
    max_depth: int = 3


@dataclass(frozen=True)
class ProcessingConfig:
    default_section: str = ""
    workers: int | None = None  # None: 1 on SQLite, one per core on PostgreSQL (App.workers)
    poll_interval: float = 1.0
    max_attachment_size: int = 20 * 1024 * 1024
    batch_size: int = 100
    batch_bytes: int = 32 * 1024 * 1024  # a batch stops growing once its messages hold this
    nice: int = 10  # workers run this much nicer than the daemon: intake and sending first


@dataclass(frozen=True)
class AutomaticConfig:
    """What else counts as automatic mail (added to the built-in lists of classify.py)."""

    subject_prefixes: tuple[str, ...] = ()  # out-of-office subjects: "Urlaubsnotiz:"
    body_patterns: tuple[str, ...] = ()  # regular expressions, searched near the top
    builtin: bool = True  # false: only the lists above (the headers are always read)


@dataclass(frozen=True)
class MailboxConfig:
    section: str = ""
    url: str = ""
    password_file: str = path_field()
    password_env: str = ""
    interval: int = 60
    move_to: str = ""
    keep: bool = False
    idle: bool = True
    starttls: bool = False
    ca_file: str = path_field()
    lease: float = 60.0  # seconds before another instance takes over a dead poller's mailbox


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "text"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    automatic: AutomaticConfig = field(default_factory=AutomaticConfig)
    mailbox: tuple[MailboxConfig, ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    path: str = ""


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _build(cls: type, data: Any, where: str) -> Any:
    """Turn a TOML table into dataclass `cls`, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not (cls is Config and f.name == "path")}
    values: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown configuration key '{full}'")
        values[key] = _convert(hints[key], value, full)
    return cls(**values)


def _convert(tp: Any, value: Any, key: str) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"configuration key '{key}' must be a list")
        return tuple(_convert(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"configuration key '{key}' must be {_type_name(tp)}, not {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"configuration key '{key}' must be {_type_name(tp)}, not {value!r}")
    return value


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config file (argument, else $MAILGATED_CONFIG, else none) and apply overrides.

    With no file at all the embedded defaults apply: SQLite in the working
    directory and an SMTP listener on 127.0.0.1:2525.
    """
    chosen = path or os.environ.get("MAILGATED_CONFIG") or ""
    data: dict[str, Any] = {}
    if chosen:
        p = Path(chosen)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {p} does not exist") from None
        except PermissionError:
            raise ConfigError(f"configuration file {p} is not readable") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None
    config: Config = _build(Config, data, "")
    _check_logging(config.logging)
    _check_patterns(config.automatic)
    nice = config.processing.nice
    if not 0 <= nice <= 19:
        raise ConfigError(f"configuration key 'processing.nice' must be from 0 to 19, not {nice}")
    _check_database_url(config.database.url, "database.url")
    if chosen:
        base = Path(chosen).absolute().parent
        config = _relative_to(config, base)
        config = dataclasses.replace(
            config, database=DatabaseConfig(url=sqlite_relative_to(config.database.url, base))
        )
    config = dataclasses.replace(config, path=str(Path(chosen).absolute()) if chosen else "")
    env_url = os.environ.get("MAILGATED_DATABASE_URL")
    if env_url:
        _check_database_url(env_url, "$MAILGATED_DATABASE_URL")
        config = dataclasses.replace(config, database=DatabaseConfig(url=env_url))
    return config


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def _check_patterns(automatic: AutomaticConfig) -> None:
    for pattern in automatic.body_patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"configuration key 'automatic.body_patterns': {pattern!r} is not a regular"
                f" expression ({exc})"
            ) from None


def _check_database_url(url: str, key: str) -> None:
    """SQLite or PostgreSQL (psycopg 3), else one line saying what to write instead."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{key}: {url!r} is not a database URL; use {example}") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite" and driver in ("pysqlite", "sqlite"):
        return
    if backend == "postgresql" and parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return
    raise ConfigError(
        f"{key}: {parsed.drivername}:// is not supported (mailgated runs on SQLite and on"
        f" PostgreSQL with psycopg 3); use {example}"
    )


def _check_logging(logging: LoggingConfig) -> None:
    if logging.level.lower() not in LOG_LEVELS:
        raise ConfigError(
            f"configuration key 'logging.level' must be one of {', '.join(LOG_LEVELS)},"
            f" not {logging.level!r}"
        )
    if logging.format not in LOG_FORMATS:
        raise ConfigError(
            f'configuration key \'logging.format\' must be "text" or "json", not {logging.format!r}'
        )


def _relative_to(value: Any, base: Path) -> Any:
    """`value` (a config dataclass) with every non-empty relative path_field made absolute."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        if f.metadata.get("path") and current and not Path(current).expanduser().is_absolute():
            changes[f.name] = str(base / current)
        elif dataclasses.is_dataclass(current):
            changes[f.name] = _relative_to(current, base)
        elif isinstance(current, tuple):
            changes[f.name] = tuple(
                _relative_to(v, base) if dataclasses.is_dataclass(v) else v for v in current
            )
    return dataclasses.replace(value, **changes) if changes else value


def sqlite_relative_to(url: str, base: Path) -> str:
    """A SQLite URL whose relative file name is made relative to `base`; others unchanged."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL at all: reported when the database is opened
        return url
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return url
    if name.startswith("file:") or Path(name).expanduser().is_absolute():
        return url
    return str(parsed.set(database=str(base / name)).render_as_string(hide_password=False))


def host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """ "host:port" or "[::1]:port" → (host, port); with a default, the port may be left out."""
    if default_port is not None and ":" not in value.rpartition("]")[2]:
        return value.strip("[]"), default_port
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {value!r} must be host:port")
    return host.strip("[]"), int(port)


def parse_listen(value: str) -> tuple[str, str | int]:
    """ "host:port" or "[::1]:port" → (host, port); "unix:/path" → ("unix", path)."""
    if value.startswith("unix:"):
        return "unix", value[5:]
    try:
        host, port = host_port(value)
    except ConfigError:
        raise ConfigError(f"listen address {value!r} must be host:port or unix:/path") from None
    return host or "0.0.0.0", port


def read_secret_value(file: str, env: str, what: str) -> str:
    """A password from a file or an environment variable; never logged."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return value
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read password file {file}: {exc.strerror}") from None
    return ""


def tls_client_context(ca_file: str, what: str) -> ssl.SSLContext:
    """The SSL context for connecting to a server: certificate and host name verified.

    With `ca_file` (PEM) only the CAs in that file are trusted — a private CA or a
    self-signed server certificate; without it, the system's trust store.
    """
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError as exc:  # before OSError, of which it is a subclass
        raise ConfigError(f"{what}: ca_file {ca_file} holds no usable certificate: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read ca_file {ca_file}: {exc.strerror}") from None
