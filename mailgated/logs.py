"""How mailgated logs: for journald under systemd, for people elsewhere, JSON on request.

Under systemd (stderr is the stream named by $JOURNAL_STREAM) every line starts with
the syslog priority (`<4>` for a warning, sd-daemon(3)) and carries no timestamp of
our own — the journal has one — so `journalctl -p warning -u mailgated` works; a
traceback gets the prefix on each of its lines. Elsewhere a line is today's
`time LEVEL logger: message`. `[logging] format = "json"` writes one JSON object a
line (time, level, logger, message, and `spool_id` when the record has one).

Values from mail (addresses, subjects, Message-IDs: the arguments of a log call) are
escaped: a control character or a byte that is not text shows as `\\x1b`, `\\n`,
`\\udcff`, so a message cannot forge log lines or drive a terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailgated.config import Config

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR
# syslog priorities (RFC 5424) for Python's levels
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
PRIORITIES[logging.CRITICAL] = 2
QUIET_LIBRARIES = ("alembic", "aiosmtpd", "mail.log", "aiohttp.access", "asyncio")


def escape(value: str) -> str:
    """`value` with every non-printable character written as a Python escape."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value)


def _safe_arg(value: Any) -> Any:
    if isinstance(value, bytes):
        return escape(value.decode("utf-8", "backslashreplace"))
    if isinstance(value, str | BaseException):
        return escape(str(value))
    return value


def message_of(record: logging.LogRecord) -> str:
    """The record's message with its arguments escaped (our own format strings are trusted)."""
    msg = str(record.msg)
    args = record.args
    if not args:
        return msg
    if isinstance(args, dict):
        return msg % {k: _safe_arg(v) for k, v in args.items()}
    return msg % tuple(_safe_arg(a) for a in args)


def priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return PRIORITIES[level]
    return PRIORITIES[logging.DEBUG]


class Formatter(logging.Formatter):
    """Text or JSON lines, with or without journald's priority prefix (see the module)."""

    def __init__(self, json_lines: bool = False, journal: bool = False) -> None:
        super().__init__(TEXT_FORMAT)
        self.json_lines = json_lines
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        record.message = message_of(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if self.json_lines:
            line = json.dumps(self._fields(record), ensure_ascii=False)
        elif self.journal:
            line = f"{record.levelname} {record.name}: {record.message}"
        else:
            record.asctime = self.formatTime(record)
            line = self.formatMessage(record)
        if record.exc_text and not self.json_lines:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info and not self.json_lines:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        if self.journal:
            prefix = f"<{priority(record.levelno)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))
        return line

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.message,
        }
        spool_id = getattr(record, "spool_id", None)
        if spool_id:
            fields["spool_id"] = spool_id
        if record.exc_text:
            fields["exception"] = record.exc_text
        return fields


class MessageOnly(logging.Formatter):
    """For a worker process's queue handler: the escaped message (and traceback) only;
    the daemon's own handler then adds time, level and prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = message_of(record)
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


def under_journald(stream: IO[str] | None = None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd gave us ($JOURNAL_STREAM)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class _Ours(logging.StreamHandler):  # type: ignore[type-arg]
    """Our stderr handler, told apart from handlers a host program installed."""


def setup(level: int = logging.WARNING, json_lines: bool = False) -> None:
    """Send every log record to stderr, formatted for where stderr goes. Like
    logging.basicConfig, handlers installed by someone else (pytest, an embedding
    program) are left alone and none of ours is added next to them."""
    root = logging.getLogger()
    if any(not isinstance(h, _Ours) for h in root.handlers):
        set_level(level)
        return
    handler = _Ours(sys.stderr)
    handler.setFormatter(Formatter(json_lines=json_lines, journal=under_journald(sys.stderr)))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: int) -> None:
    """The root level; the chatty libraries say only warnings unless we are at DEBUG."""
    logging.getLogger().setLevel(level)
    quiet = logging.NOTSET if level <= logging.DEBUG else max(level, logging.WARNING)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)


def level_named(name: str) -> int:
    return LEVELS[name.lower()]


def startup_line(config: Config) -> str:
    """The daemon's first line: what runs, on which files, listening where."""
    from importlib.metadata import PackageNotFoundError, version

    from mailgated.db import display_url

    try:
        ours = version("mailgated")
    except PackageNotFoundError:
        ours = "(not installed)"
    listeners = [
        f"{kind} {where}"
        for kind, where in (
            ("smtp", config.listen.smtp),
            ("lmtp", config.listen.lmtp),
            ("http", config.listen.http),
        )
        if where
    ]
    listeners += [f"{m.url.split('://')[0]} mailbox for {m.section}" for m in config.mailbox]
    return (
        f"mailgated {ours} starting: config {config.path or '(none: built-in defaults)'},"
        f" database {display_url(config.database.url)},"
        f" spool {os.path.abspath(config.spool.path)},"
        f" secret {os.path.abspath(config.security.secret_file)},"
        f" listeners {', '.join(listeners) or 'none'}"
    )
