"""The spool's on-disk format and its durable write, with nothing heavy imported.

A spool file is one line of JSON (the envelope) followed by the raw message.
`store` writes it to `tmp/`, fsyncs it, renames it into `new/` and fsyncs the
directory (the Maildir discipline): when `store` returns, the message survives
a crash or power loss. It also rewrites a message with bare-CR line ends to
LF line ends and makes up a Message-ID for a message without one, before
anything is written (see `identity`). `mailgated.intake.spool.Spool.put` and the
MDA (`mailgated deliver`, which must start fast and so avoids even
`dataclasses`) both come through here.
"""

from __future__ import annotations

import json
import os
import time

from mailgated.intake.identity import ensure_message_id, normalise_line_ends, split_message

TYPE_CHECKING = False  # not `from typing import …`: importing typing costs the MDA ~3 ms

if TYPE_CHECKING:
    from collections.abc import Callable

DIR_MODE = 0o2770  # group-writable and setgid: files keep the spool's group
FILE_MODE = 0o660
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
SUBDIRS = ("tmp", "new", "cur", "quarantine", "duplicate", "free")


def new_id() -> str:
    """Sortable by arrival and unique across processes: seconds.microseconds.random."""
    now = time.time_ns() // 1000
    return f"{now // 1_000_000}.{now % 1_000_000:06d}.{os.urandom(4).hex()}"


def make_dirs(root: str) -> None:
    """Create the spool directories that are missing (group-writable when we make them)."""
    for path in (root, *(os.path.join(root, sub) for sub in SUBDIRS)):
        if os.path.isdir(path):
            continue
        try:
            os.makedirs(path)
        except FileExistsError:  # another process made it, or a file is in the way
            if not os.path.isdir(path):
                raise
            continue
        os.chmod(path, DIR_MODE)  # mkdir's mode is cut by the umask


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: str, envelope: dict[str, object], raw: bytes, reused: bool = False) -> None:
    """Create `path` (must not exist) with the envelope line and the message, fsynced;
    `reused`: `path` is a file of the spool's `free/`, renamed there, written over in place
    and cut to the new length (its blocks are reused, not freed and allocated again)."""
    try:
        fd = os.open(path, os.O_WRONLY if reused else CREATE, FILE_MODE)
    except PermissionError:  # a file another user made and we may not write: make our own
        if not reused:
            raise
        unlink_quietly(path)
        reused = False
        fd = os.open(path, CREATE, FILE_MODE)
    try:
        line = json.dumps(envelope, ensure_ascii=True, separators=(",", ":")).encode()
        written = 0
        for part in (line + b"\n", raw):  # written apart: a big message is never copied
            data = memoryview(part)
            while data:
                done = os.write(fd, data)
                written += done
                data = data[done:]
        if reused:
            os.ftruncate(fd, written)  # the tail of a longer message written there before
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def too_large_reason(size: int, limit: int, kept: str = "its header is kept") -> str:
    """The quarantine reason of a message over the size limit (the same words everywhere)."""
    return f"too large: {size} bytes, over max_message_size {limit}; {kept}"


def header_block(head: bytes, most: int = 64 * 1024) -> bytes:
    """The header of a message from its first bytes, as a message of its own (no body)."""
    header = split_message(head[: most + 4])[0][:most]
    newline = b"\r\n" if b"\r\n" in header[:4096] else b"\n"
    return header.rstrip(b"\r\n") + newline + newline


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def store(
    root: str,
    raw: bytes,
    envelope: dict[str, object],
    into: str = "new",
    sync_dir: Callable[[], None] | None = None,
    take: Callable[[str], bool] | None = None,
) -> tuple[str, str]:
    """Durably spool one message into `root`/new (or `into`: "quarantine" for a message
    recorded but not processed); returns (spool id, Message-ID). Raises OSError.
    The directories are made when missing (no look before each write: a spool's first
    write, or one whose folder was removed, fails and is tried once more). The rename is
    made durable by an fsync of the directory, or by `sync_dir` (a `Spool` shares one
    fsync among the messages renamed meanwhile). `take(path)` renames a file kept for
    reuse to `path` and says whether it did (`Spool.free`); else the file is created."""
    raw = normalise_line_ends(raw)
    if not envelope.get("message_id"):
        raw, made_up = ensure_message_id(raw)
        envelope = {**envelope, "message_id": made_up}
    spool_id = new_id()
    tmp = os.path.join(root, "tmp", spool_id)
    for attempt in (1, 2):
        try:
            write_file(tmp, envelope, raw, reused=take is not None and take(tmp))
            os.rename(tmp, os.path.join(root, into, spool_id))
            break
        except FileNotFoundError:
            unlink_quietly(tmp)
            if attempt == 2:
                raise
            make_dirs(root)
        except BaseException:
            unlink_quietly(tmp)
            raise
    if sync_dir is None:
        fsync_dir(os.path.join(root, into))
    else:
        sync_dir()
    return spool_id, str(envelope["message_id"])
