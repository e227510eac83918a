"""`mailgated deliver`: the MDA for fetchmail (`mda "mailgated deliver --section Support"`)
and for Postfix/Exim pipes. One message on stdin.

Exit status is the whole interface (sysexits.h):
  0   the message is safe in the spool (after the rename), or it was larger
      than `[listen] max_message_size` and its header is recorded in the
      quarantine with the reason (fetchmail re-fetches a message on *every*
      non-zero exit, so refusing it would fetch it again forever);
  75  EX_TEMPFAIL: it is not (unwritable or full spool, bad config, any
      unexpected error) — fetchmail keeps it on the server and Postfix defers,
      so nothing is lost and the delivery is retried;
  65  EX_DATAERR: the input was empty, or too large with `--bounce-too-large`
      (Postfix's pipe(8) then bounces it); one line on stderr says so.
Any other bytes, however broken, are spooled: processing quarantines what it
cannot read. Every error is caught: an uncaught traceback exits 1, which
Postfix turns into a bounce.

This runs once per message, so it starts fast: no click, no SQLAlchemy, no
database, no `email` package; the config file is read only for `[spool] path`
and `[listen] max_message_size` (the `--section` is recorded in the envelope and
checked later by processing). At most max_message_size + 1 bytes are held: the
rest of a larger message is read and counted, not kept.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `from typing import …`: importing typing costs the MDA ~10 ms
if TYPE_CHECKING:
    from typing import IO

EX_OK = 0
EX_DATAERR = 65
EX_TEMPFAIL = 75
DEFAULT_SPOOL = "spool"  # the default of [spool] path in mailgated/config.py
DEFAULT_MAX_SIZE = 25 * 1024 * 1024  # the default of [listen] max_message_size
CHUNK = 1024 * 1024

USAGE = """\
usage: mailgated [--config PATH] deliver [--section NAME] [--recipient ADDR]...
                                         [--bounce-too-large]

Spool one message read from stdin. Exit 0 when it is safe on disk (or too large
and recorded in the quarantine), 75 to make the sender retry later, 65 for empty
input (and, with --bounce-too-large, for a message over max_message_size)."""


class UsageError(Exception):
    pass


def wants_deliver(argv: list[str]) -> bool:
    """Is `deliver` the command of this command line (after the global options)?"""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "--as"):
            i += 2
        elif arg.startswith(("--config=", "--as=", "-v", "--verbose")):
            i += 1
        else:
            return arg == "deliver"
    return False


class Options:
    """The command line of one `mailgated … deliver …` run (a plain class: no dataclasses)."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.section: str | None = None
        self.recipients: list[str] = []
        self.verbose = 0
        self.help = False
        self.bounce_too_large = False


def parse_args(argv: list[str]) -> Options:
    """The global options and deliver's own, from a full `mailgated …` argv."""
    opts = Options()
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            opts.help = True
        elif arg == "deliver":
            continue
        elif arg == "--bounce-too-large":
            opts.bounce_too_large = True
        elif arg == "--verbose" or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            opts.verbose += 1 if arg == "--verbose" else len(arg) - 1
        elif name in ("--config", "--as", "--section", "--recipient"):
            if not eq:
                value = next(args, "")
                if not value:
                    raise UsageError(f"option {name} needs a value")
            if name == "--config":
                opts.config = value
            elif name == "--section":
                opts.section = value
            elif name == "--recipient":
                opts.recipients.append(value)
        else:
            raise UsageError(f"unexpected argument {arg!r}")
    return opts


def read_config(config_path: str | None) -> tuple[str, int]:
    """([spool] path, [listen] max_message_size) from the config file (or
    $MAILGATED_CONFIG), else the defaults; a size of 0 means no limit. A relative
    spool path in the file is relative to the file's directory (as in config.py)."""
    chosen = config_path or os.environ.get("MAILGATED_CONFIG") or ""
    if not chosen:
        return DEFAULT_SPOOL, DEFAULT_MAX_SIZE
    with open(chosen, "rb") as fh:
        raw = fh.read()
    data = quick_toml(raw)
    if data is None:  # beyond the plain subset: the real parser (and its errors)
        import tomllib

        data = tomllib.loads(raw.decode())
    path = data.get("spool", {}).get("path", DEFAULT_SPOOL)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{chosen}: [spool] path must be a non-empty string")
    size = data.get("listen", {}).get("max_message_size", DEFAULT_MAX_SIZE)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{chosen}: [listen] max_message_size must be a whole number >= 0")
    return os.path.join(os.path.dirname(os.path.abspath(chosen)), os.path.expanduser(path)), size


CONTROL = bytes(c for c in range(32) if c not in b"\t\n\r") + b"\x7f"  # UTF-8 keeps them single
BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def quick_toml(raw: bytes) -> dict[str, dict[str, object]] | None:
    """The tables of a config file written in the plain subset of TOML that mailgated's
    files use, without importing tomllib (its import is a third of deliver's start-up:
    `typing`, `datetime` and three large regular expressions compiled).

    The subset: comments, `[table]` and `[[table]]` headers, `key = value` lines with
    bare keys, and one-line values — strings without a backslash, decimal integers,
    floats, booleans, arrays of those. Any other line (a dotted or quoted key, a
    multi-line string or array, an inline table, a date, an escape, a key outside a
    table, a duplicate) returns None, and tomllib reads the file: its answer, or its
    error, is then the one. Every line is checked, so a file tomllib refuses is never
    read here. Array-of-tables entries are checked, not returned."""
    if len(raw.translate(None, CONTROL)) != len(raw) or b"\r" in raw.replace(b"\r\n", b""):
        return None  # control characters (tomllib refuses them) or a lone CR
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    tables: dict[str, dict[str, object]] = {}
    arrays: set[str] = set()
    current: dict[str, object] | None = None
    for line in text.split("\n"):
        line = line.strip(" \t\r")
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            many = line.startswith("[[")
            close = line.find("]]" if many else "]")
            name = line[2 if many else 1 : close].strip(" \t")
            rest = line[close + (2 if many else 1) :].strip(" \t")
            if close < 0 or not name or not BARE_KEY.issuperset(name) or rest[:1] not in "#":
                return None
            if many:
                if name in tables:
                    return None
                arrays.add(name)
                current = {}
            elif name in tables or name in arrays:
                return None
            else:
                current = tables[name] = {}
            continue
        key, eq, value = line.partition("=")
        key = key.strip(" \t")
        if current is None or not eq or not key or not BARE_KEY.issuperset(key) or key in current:
            return None
        parsed = _value(value.strip(" \t"))
        if parsed is None or parsed[1].strip(" \t")[:1] not in "#":
            return None
        current[key] = parsed[0]
    return tables


def _value(text: str) -> tuple[object, str] | None:
    """(a one-line TOML value of the subset, the text after it), or None."""
    first = text[:1]
    if first in ('"', "'"):
        end = text.find(first, 1)
        if end < 0 or text.startswith(first * 3) or "\\" in text[:end]:
            return None
        return text[1:end], text[end + 1 :]
    if first == "[":
        items: list[object] = []
        rest = text[1:].lstrip(" \t")
        while not rest.startswith("]"):
            item = _value(rest)
            if item is None:
                return None
            items.append(item[0])
            rest = item[1].lstrip(" \t")
            if rest[:1] == ",":
                rest = rest[1:].lstrip(" \t")
            elif rest[:1] != "]":
                return None
        return items, rest[1:]
    size = len(text)
    for stop in (" ", "\t", ",", "]", "#"):
        found = text.find(stop)
        if 0 <= found < size:
            size = found
    word, rest = text[:size], text[size:]
    if word in ("true", "false"):
        return word == "true", rest
    number = _number(word)
    return None if number is None else (number, rest)


def _number(word: str) -> int | float | None:
    """A decimal integer or float as TOML writes them (underscores only between digits,
    no leading zero), or None (hex, octal, binary, inf, nan, dates: not in the subset)."""
    sign = word[:1] in ("+", "-")
    mantissa, e, exponent = word[sign:].lower().partition("e")
    whole, dot, fraction = mantissa.partition(".")
    digits = whole.replace("_", "")
    if not _digit_groups(whole) or (len(digits) > 1 and digits[0] == "0"):
        return None
    if dot and not _digit_groups(fraction):
        return None
    if e and not _digit_groups(exponent[exponent[:1] in ("+", "-") :]):
        return None
    if not (dot or e):
        return int(word.replace("_", ""))
    return float(word.replace("_", ""))


def _digit_groups(text: str) -> bool:
    """ASCII digits, in groups joined by single underscores."""
    return all(group.isascii() and group.isdigit() for group in text.split("_"))


def read_limited(stream: IO[bytes], limit: int) -> tuple[bytes, int]:
    """(the message, its size); past `limit` bytes only the first limit + 1 are kept."""
    if not limit:
        data = stream.read()
        return data, len(data)
    data = stream.read(limit + 1)
    size = len(data)
    while size > limit and (chunk := stream.read(CHUNK)):
        size += len(chunk)
    return data, size


def spool_path(config_path: str | None) -> str:
    """[spool] path from the config file (or $MAILGATED_CONFIG), else the default."""
    return read_config(config_path)[0]


def _envelope(raw: bytes, section: str | None, recipients: list[str] | None) -> dict[str, object]:
    """The envelope of `mailgated.intake.spool.Envelope`, as a plain dict (so that
    `dataclasses`, and `inspect`, stay unimported)."""
    import time

    from mailgated.intake.identity import header_value

    return_path = header_value(raw, "return-path")
    sender = None
    if return_path is not None:
        sender = return_path.decode("ascii", "replace").strip().strip("<>").strip()
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return {
        "source": "deliver",
        "envelope_from": sender,
        "recipients": recipients or [],
        "received_at": f"{stamp}.{int(now % 1 * 1_000_000):06d}+00:00",
        "section": section,
        "message_id": "",
        "failures": 0,
        "reason": "",
    }


def deliver(
    raw: bytes, spool_dir: str, section: str | None = None, recipients: list[str] | None = None
) -> str:
    """Spool one message from the MDA; returns the spool id (raises on failure)."""
    from mailgated.intake.durable import store

    return store(spool_dir, raw, _envelope(raw, section, recipients))[0]


def record_too_large(
    head: bytes,
    size: int,
    limit: int,
    spool_dir: str,
    section: str | None = None,
    recipients: list[str] | None = None,
) -> str:
    """Keep the header of a message over the limit in the quarantine, with the reason."""
    from mailgated.intake.durable import header_block, store, too_large_reason

    header = header_block(head)
    envelope = _envelope(header, section, recipients)
    envelope["reason"] = too_large_reason(size, limit)
    return store(spool_dir, header, envelope, into="quarantine")[0]


def main(argv: list[str], stdin: IO[bytes] | None = None, stderr: IO[str] | None = None) -> int:
    """Run `mailgated … deliver …` from its full argv; returns the exit status, never raises."""
    err = stderr or sys.stderr
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        print(f"mailgated deliver: {exc}\n{USAGE}", file=err)
        return EX_TEMPFAIL  # a broken mda line: keep the mail until the admin fixes it
    if opts.help:
        print(USAGE, file=err)
        return EX_OK
    return spool_stdin(
        opts.config,
        opts.section,
        opts.recipients,
        opts.verbose,
        stdin=stdin,
        stderr=err,
        bounce_too_large=opts.bounce_too_large,
    )


def spool_stdin(
    config_path: str | None,
    section: str | None,
    recipients: list[str],
    verbose: int = 0,
    stdin: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
    bounce_too_large: bool = False,
) -> int:
    """Read one message and spool it; the exit status as above. Never raises."""
    err = stderr or sys.stderr
    try:
        spool_dir, limit = read_config(config_path)
        raw, size = read_limited(stdin or sys.stdin.buffer, limit)
        if not raw.strip():
            print("mailgated deliver: empty input, no message to spool", file=err)
            return EX_DATAERR
        if limit and size > limit:
            if bounce_too_large:
                print(f"mailgated deliver: message too large ({size} bytes, limit {limit})",
                      file=err)  # fmt: skip
                return EX_DATAERR
            spool_id = record_too_large(raw, size, limit, spool_dir, section, recipients)
            print(f"mailgated deliver: message too large ({size} bytes, limit {limit}): "
                  f"header recorded as {spool_id} in the quarantine", file=err)  # fmt: skip
            return EX_OK
        spool_id = deliver(raw, spool_dir, section, recipients)
    except BaseException as exc:  # anything not spooled is a temporary failure
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = getattr(exc, "filename", None)
        suffix = f": {where}" if where else ""
        print(f"mailgated deliver: not spooled, retry later: {why}{suffix}", file=err)
        return EX_TEMPFAIL
    if verbose:
        print(f"mailgated deliver: spooled {spool_id} ({size} bytes)", file=err)
    return EX_OK


def run() -> None:
    """The fast path of the console script: `mailgated deliver` without the click group."""
    try:
        code = main(sys.argv[1:])
    except BaseException:  # even a failing stderr must not turn into exit 1 (a bounce)
        code = EX_TEMPFAIL
    sys.exit(code)
