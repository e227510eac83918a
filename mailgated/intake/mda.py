"""`mailgated deliver`: the MDA for fetchmail (`mda "mailgated deliver --section Support"`)
and for Postfix/Exim pipes. One message on stdin.

Exit status is the whole interface (sysexits.h):
  0   the message is safe in the spool (after the rename);
  75  EX_TEMPFAIL: it is not (unwritable or full spool, bad config, any
      unexpected error) — fetchmail keeps it on the server and Postfix defers,
      so nothing is lost and the delivery is retried;
  65  EX_DATAERR: the input was empty (one line on stderr says so).
Any other bytes, however broken, are spooled: processing quarantines what it
cannot read. Every error is caught: an uncaught traceback exits 1, which
Postfix turns into a bounce.

This runs once per message, so it starts fast: no click, no SQLAlchemy, no
database, no `email` package; the config file is read only for `[spool] path`
(the `--section` is recorded in the envelope and checked later by processing).
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

USAGE = """\
usage: mailgated [--config PATH] deliver [--section NAME] [--recipient ADDR]...

Spool one message read from stdin. Exit 0 when it is safe on disk, 75 to make
the sender retry later, 65 for empty input."""


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


def spool_path(config_path: str | None) -> str:
    """[spool] path from the config file (or $MAILGATED_CONFIG), else the default."""
    chosen = config_path or os.environ.get("MAILGATED_CONFIG") or ""
    if not chosen:
        return DEFAULT_SPOOL
    import tomllib

    with open(chosen, "rb") as fh:
        data = tomllib.load(fh)
    path = data.get("spool", {}).get("path", DEFAULT_SPOOL)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{chosen}: [spool] path must be a non-empty string")
    return path


def deliver(
    raw: bytes, spool_dir: str, section: str | None = None, recipients: list[str] | None = None
) -> str:
    """Spool one message from the MDA; returns the spool id (raises on failure).

    The envelope has the fields of `mailgated.intake.spool.Envelope`, built as
    a plain dict so that `dataclasses` (and `inspect`) stay unimported.
    """
    import time

    from mailgated.intake.durable import store
    from mailgated.intake.identity import header_value

    return_path = header_value(raw, "return-path")
    sender = None
    if return_path is not None:
        sender = return_path.decode("ascii", "replace").strip().strip("<>").strip()
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    envelope: dict[str, object] = {
        "source": "deliver",
        "envelope_from": sender,
        "recipients": recipients or [],
        "received_at": f"{stamp}.{int(now % 1 * 1_000_000):06d}+00:00",
        "section": section,
        "message_id": "",
        "failures": 0,
        "reason": "",
    }
    return store(spool_dir, raw, envelope)[0]


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
        opts.config, opts.section, opts.recipients, opts.verbose, stdin=stdin, stderr=err
    )


def spool_stdin(
    config_path: str | None,
    section: str | None,
    recipients: list[str],
    verbose: int = 0,
    stdin: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Read one message and spool it; the exit status as above. Never raises."""
    err = stderr or sys.stderr
    try:
        raw = (stdin or sys.stdin.buffer).read()
        if not raw.strip():
            print("mailgated deliver: empty input, no message to spool", file=err)
            return EX_DATAERR
        spool_id = deliver(raw, spool_path(config_path), section, recipients)
    except BaseException as exc:  # anything not spooled is a temporary failure
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = getattr(exc, "filename", None)
        suffix = f": {where}" if where else ""
        print(f"mailgated deliver: not spooled, retry later: {why}{suffix}", file=err)
        return EX_TEMPFAIL
    if verbose:
        print(f"mailgated deliver: spooled {spool_id} ({len(raw)} bytes)", file=err)
    return EX_OK


def run() -> None:
    """The fast path of the console script: `mailgated deliver` without the click group."""
    try:
        code = main(sys.argv[1:])
    except BaseException:  # even a failing stderr must not turn into exit 1 (a bounce)
        code = EX_TEMPFAIL
    sys.exit(code)
