"""The spool: intake's one door in, a Maildir-like directory of durable files.

Every source (deliver, SMTP/LMTP, IMAP, POP3, import) calls `Spool.put`, which
writes the message to `tmp/`, fsyncs it, renames it into `new/` and fsyncs the
directory (see `durable`); only after `put` returns may the source acknowledge
the message (exit 0, `250`, `\\Seen`, `DELE`). A message without a Message-ID
gets one made up from its content hash before it is written. Processing
claims a file by renaming it into `cur/` (two workers never get the same one),
keeps it in `free/` for the next message after its database commit (`FreeFiles`),
or puts it back / into `quarantine/` on failure; `recover` moves claims left by a
crash back to `new/` at start-up.

A message processing finds already recorded (same Message-ID *and* same
content hash) is not deleted silently: it goes to `duplicate/` with the reason,
where `spool list --duplicates` shows it and `counts()` counts it, for
`keep_duplicates` days (issue 12 item 1). `remove_stale` clears `tmp/` of
files a writer killed mid-write left behind (never acknowledged, so the
sender still has them) and expired duplicates, at start-up.

The directories are group-writable and setgid, so `mailgated deliver` run by
fetchmail's user (in the daemon's group) can deliver. This module never opens
the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from mailgated.errors import Invalid, NotFound
from mailgated.intake import durable
from mailgated.intake.identity import content_hash, header_value

__all__ = ["Claimed", "Envelope", "Spool", "SpoolEntry", "content_hash"]

STATES = {
    "new": "new",
    "cur": "processing",
    "quarantine": "quarantined",
    "duplicate": "duplicate",
}
STALE_TMP_SECONDS = 3600  # a write takes seconds: a tmp/ file an hour old has no writer left
HEAD_BYTES = 64 * 1024  # enough for the envelope and the Subject in listings
SPOOL_THREADS = 8  # threads writing the spool for listeners and pollers (`Spool.off_loop`)
FREE_KEEP = 1024  # spool files kept in free/ for reuse (`FreeFiles`)
FREE_EMPTY_OVER = 64 * 1024  # a done file bigger than this is emptied before it is kept
FREE_LOOK = 1.0  # seconds between listings of free/ while it is empty or being counted
T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    source: str  # "deliver", "smtp", "lmtp", "imap:<mailbox>", "pop3:<mailbox>", "import:<path>"
    envelope_from: str | None  # "" for the null sender <>; None when unknown
    recipients: list[str] = field(default_factory=list)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    section: str | None = None  # checked by processing, which quarantines an unknown one
    message_id: str = ""  # made up before spooling if the message has none
    failures: int = 0
    reason: str = ""  # the last failure (quarantine)
    notify: bool = True  # False: processing sends no mail for it (`import` without --notify)

    def to_dict(self) -> dict[str, Any]:
        """The envelope line's fields (what `dataclasses.asdict` gives, at a tenth the cost)."""
        data = {name: getattr(self, name) for name in ENVELOPE_FIELDS}
        data["recipients"] = list(self.recipients)
        data["received_at"] = self.received_at.astimezone(UTC).isoformat()
        return data

    @classmethod
    def from_json(cls, line: bytes) -> Envelope:
        data = json.loads(line)
        data["received_at"] = datetime.fromisoformat(data["received_at"])
        return cls(**data)


ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))


class DirSync:
    """Group commit of one directory's fsync, for the threads that renamed into it.

    `sync()` returns once an fsync of the directory that began after the call has
    completed: that fsync made the caller's rename durable. A caller that finds one
    already running waits for it to end and then for the next, which one of the waiting
    callers runs for all of them; so messages spooled at the same moment share a
    directory fsync (a journal commit) instead of each paying for its own. A failed
    fsync fails every caller that was waiting for it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._started = 0  # fsyncs begun
        self._done = 0  # the last one that completed
        self._failed = 0  # the last one that failed
        self._running = False

    def sync(self) -> None:
        with self._cond:
            need = self._started + 1  # the first fsync to begin from now on
            while self._done < need:
                if self._failed >= need:
                    raise OSError(f"fsync of {self.path} failed")
                if not self._running:
                    self._running = True
                    self._started += 1
                    mine = self._started
                    break
                self._cond.wait()
            else:
                return
        try:
            durable.fsync_dir(self.path)
        except BaseException:
            with self._cond:
                self._running, self._failed = False, mine
                self._cond.notify_all()
            raise
        with self._cond:
            self._running, self._done = False, mine
            self._cond.notify_all()


class FreeFiles:
    """Empty spool files kept for reuse in `free/`: a processed message's file is emptied
    and kept there, and the next message spooled is written into it instead of a new file.

    Creating a file allocates an inode and deleting one frees it. On ext4 without a
    journal, each allocation skips every inode of its group freed in the last one to six
    minutes (`recently_deleted`), so with the spool's churn a new file cost 0.4-0.85 ms of
    kernel CPU on the development machine, against 0.15 ms for a file reused (write,
    fsync and both renames included); a journal pays for both changes instead. PostgreSQL
    recycles its WAL segments for the same reason.

    `take` is the writers' side (several threads and processes): a file is theirs once
    renamed out of `free/` (another writer that took it first makes the rename fail); it
    is written over in place and cut to the new message's length, so its blocks are
    reused too (`durable.write_file`). `give` is a processing worker's, for files of its
    own `cur/<slot>/`, renamed into `free/` as they are: emptying each was a truncate that
    freed its blocks and waited on the file system's journal, 65 µs a file on the
    development machine on 2026-12-06, on the worker's one serial path. A file over
    `FREE_EMPTY_OVER` is emptied first, so that `free/` never holds more than `keep`
    small files' worth of old bytes (mail the database holds anyway); a crash between
    that and the rename leaves an empty file, which is no message (every spool file starts
    with its envelope line) and is put back here when found (`Spool.recover`,
    `Spool.claim_id`). A crash before the rename leaves the whole message in `cur/`: it
    comes back and is set aside as a duplicate, never processed twice. Past `keep` files,
    done files are deleted.
    """

    def __init__(self, folder: Path, keep: int = FREE_KEEP) -> None:
        self.folder = str(folder)
        self.keep = keep
        self._lock = threading.Lock()
        self._names: list[str] = []  # listed, not yet taken by this process
        self._listed = -FREE_LOOK  # when free/ was last listed for `take`
        self._count = 0  # how many files free/ holds, as last counted plus given since
        self._counted = -FREE_LOOK

    def take(self, path: str) -> bool:
        """Rename a kept file to `path` (in `tmp/`); False when none is at hand."""
        while True:
            with self._lock:
                if not self._names:
                    now = time.monotonic()
                    if now - self._listed < FREE_LOOK:  # free/ was empty a moment ago
                        return False
                    self._listed = now
                    self._names = _listed(self.folder)
                    if not self._names:
                        return False
                name = self._names.pop()
            try:
                os.rename(os.path.join(self.folder, name), path)
                return True
            except FileNotFoundError:  # another writer took it
                continue

    def give(self, path: str, name: str, size: int) -> None:
        """Keep the file at `path` (a done claim of about `size` bytes) for reuse, emptied
        if it is big; or delete it."""
        now = time.monotonic()
        if now - self._counted >= FREE_LOOK:
            self._counted = now
            self._count = len(_listed(self.folder))
        if self._count < self.keep:
            try:
                if size > FREE_EMPTY_OVER:  # while it is ours alone: a writer may take it
                    os.truncate(path, 0)
                os.rename(path, os.path.join(self.folder, name))
                self._count += 1
                return
            except OSError:
                pass  # deleted below (a file already gone stays gone)
        durable.unlink_quietly(path)


@dataclass(frozen=True)
class SpoolEntry:
    id: str
    state: str  # "new" | "processing" | "quarantined" | "duplicate"
    envelope: Envelope
    subject: str
    path: Path

    @property
    def too_large(self) -> bool:
        """Only the header of a message over max_message_size, recorded in the quarantine."""
        return self.state == "quarantined" and self.envelope.reason.startswith("too large:")


@dataclass
class Claimed:
    id: str
    raw: bytes
    envelope: Envelope


def _split(data: bytes) -> tuple[Envelope, bytes]:
    line, sep, raw = data.partition(b"\n")
    if not sep:
        raise ValueError("spool file has no envelope line")
    return Envelope.from_json(line), raw


def _read_spool_file(path: Path) -> tuple[bytes, bytes]:
    """(envelope line, message), the message read straight into one buffer of its size: a
    buffered read() of a big file holds it twice while it grows (issue 12 item 15)."""
    with path.open("rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:  # no message: a file kept for reuse (`FreeFiles`)
            return b"", b""
        head = b""
        while b"\n" not in head:
            chunk = fh.read(64 * 1024)
            if not chunk:
                raise ValueError("spool file has no envelope line")
            head += chunk
        line, _, rest = head.partition(b"\n")
        fh.seek(len(line) + 1)
        if size <= len(head):
            return line, rest
        raw = fh.read(size - len(line) - 1) or b""
        while more := fh.read(1024 * 1024):  # a short read (over 2 GB), or a file that grew
            raw += more
    return line, raw


def decode_subject(raw: bytes) -> str:
    value = header_value(raw, "subject")
    if value is None:
        return ""
    from email.header import decode_header, make_header

    text = value.decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded-word: show it as it is
        return text


class Spool:
    def __init__(self, path: str | os.PathLike[str], slot: int | None = None) -> None:
        """`slot`: a processing worker's number; its claims go to `cur/<slot>/`, so that the
        claims of a worker that died can be put back without touching the others'."""
        self.path = Path(path)
        self.dirs = {name: self.path / name for name in durable.SUBDIRS}
        durable.make_dirs(str(self.path))
        self._synced = {name: DirSync(str(self.dirs[name])) for name in ("new", "quarantine")}
        self._threads: ThreadPoolExecutor | None = None  # made by the first `off_loop`
        self.free = FreeFiles(self.dirs["free"])
        if slot is not None:
            self.dirs["cur"] = self.path / "cur" / str(slot)
            self.dirs["cur"].mkdir(exist_ok=True)

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` for an event loop's listener or poller, on threads of the spool's
        own: intake never queues behind the loop's default threads, where the sender and
        the status wait for the database (a locked SQLite, a PostgreSQL that is down)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(SPOOL_THREADS, "spool")
        return await asyncio.get_running_loop().run_in_executor(self._threads, work, *args)

    def close(self) -> None:
        """Stop the spool's threads (`off_loop`), once what they hold is written."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None

    def put(self, raw: bytes, envelope: Envelope) -> str:
        """Store durably; returns the id. Raises OSError if the message is not safe on disk.
        Safe to call from several threads at once: their renames share directory fsyncs."""
        return durable.store(
            str(self.path),
            raw,
            envelope.to_dict(),
            sync_dir=self._synced["new"].sync,
            take=self.free.take,
        )[0]

    def put_too_large(self, head: bytes, size: int, limit: int, envelope: Envelope) -> str:
        """Record a message over max_message_size: its header (from `head`, its first
        bytes) straight into the quarantine with the reason; the body is not kept."""
        header = durable.header_block(head)
        reason = durable.too_large_reason(size, limit)
        return durable.store(
            str(self.path),
            header,
            replace(envelope, reason=reason).to_dict(),
            into="quarantine",
            sync_dir=self._synced["quarantine"].sync,
        )[0]

    # -- processing ---------------------------------------------------------
    def claim_batch(self, limit: int, max_bytes: int | None = None) -> list[Claimed]:
        """Up to `limit` messages, oldest first (one directory listing for the batch), and
        no more once they hold `max_bytes` (the one that crosses it included: a batch
        always has a message, however large)."""
        taken: list[Claimed] = []
        held = 0
        for spool_id in sorted(os.listdir(self.dirs["new"])):
            if len(taken) >= limit or (max_bytes is not None and held >= max_bytes):
                break
            claimed = self.claim_id(spool_id)
            if claimed is not None:
                taken.append(claimed)
                held += len(claimed.raw)
        return taken

    def claim_id(self, id: str) -> Claimed | None:
        cur = self.dirs["cur"] / id
        try:
            os.rename(self.dirs["new"] / id, cur)
        except FileNotFoundError:  # another worker took it
            return None
        line, raw = _read_spool_file(cur)
        if not line:  # an empty file kept for reuse, left by a crash (`FreeFiles`)
            self.free.give(str(cur), id, 0)
            return None
        return Claimed(id=id, raw=raw, envelope=Envelope.from_json(line))

    def done(self, claimed: Claimed) -> None:
        self.done_many([claimed])

    def done_many(self, claimed: list[Claimed]) -> None:
        """A committed batch's files leave cur/ (kept empty for reuse, or deleted), with no
        directory fsync: the message is safe in the database, and a file that a power loss
        brings back is a known copy, set aside as a duplicate (as after a crash between
        the commit and this), never processed twice. That fsync was one more cache flush
        of the disk per batch, which the listeners' fsyncs waited behind: paced at 150
        msg/s, accept p99 10.0-10.6 -> 8.9 ms (medians of 5 runs, `bench_e2e.py`)."""
        for item in claimed:
            self.free.give(str(self.dirs["cur"] / item.id), item.id, len(item.raw))

    def release(self, claimed: Claimed) -> None:
        """Back to new/ unchanged, not counted as a failure (the database was unavailable)."""
        try:
            os.rename(self.dirs["cur"] / claimed.id, self.dirs["new"] / claimed.id)
        except FileNotFoundError:
            pass

    def fail(self, claimed: Claimed, reason: str, max_failures: int) -> bool:
        """Count a failure; back to new/ for another try, or quarantine at max_failures."""
        failures = claimed.envelope.failures + 1
        envelope = replace(claimed.envelope, failures=failures, reason=reason)
        quarantined = failures >= max_failures
        self._move(claimed, envelope, "quarantine" if quarantined else "new")
        return quarantined

    def quarantine(self, claimed: Claimed, reason: str) -> None:
        self._move(claimed, replace(claimed.envelope, reason=reason), "quarantine")

    def set_aside_duplicate(self, claimed: Claimed, reason: str) -> None:
        """A copy already recorded: kept in duplicate/ with the reason, not processed."""
        self._move(claimed, replace(claimed.envelope, reason=reason), "duplicate")

    def _move(self, claimed: Claimed, envelope: Envelope, to: str, src: str = "cur") -> None:
        """Rewrite the envelope (tmp/ + fsync), rename into `to`, then drop the `src` file."""
        tmp = str(self.dirs["tmp"] / claimed.id)
        durable.unlink_quietly(tmp)
        durable.write_file(tmp, envelope.to_dict(), claimed.raw)
        os.rename(tmp, self.dirs[to] / claimed.id)
        durable.fsync_dir(str(self.dirs[to]))
        durable.unlink_quietly(str(self.dirs[src] / claimed.id))

    def recover(self, slot: int | None = None) -> int:
        """Claims left by a crash go back to new/: all of them (at start-up), or those of
        one processing worker slot (that worker died; the others keep theirs)."""
        cur = self.path / "cur"
        count = 0
        for folder in [cur / str(slot)] if slot is not None else [cur, *_subdirs(cur)]:
            for spool_id in _files(folder):
                try:
                    if (folder / spool_id).stat().st_size == 0:  # no message (`FreeFiles`)
                        self.free.give(str(folder / spool_id), spool_id, 0)
                        continue
                    os.rename(folder / spool_id, self.dirs["new"] / spool_id)
                    count += 1
                except FileNotFoundError:
                    pass
        if count:
            durable.fsync_dir(str(self.dirs["new"]))
        return count

    def remove_stale(self, keep_duplicates_days: float, now: float | None = None) -> list[str]:
        """At start-up: drop tmp/ files older than STALE_TMP_SECONDS and expired duplicates.

        A tmp/ file is a write that never reached its rename, so its sender was
        never told the message was safe and still holds it. Returns one line per
        removed file, for the log.
        """
        now = time.time() if now is None else now
        removed = []
        limits = {"tmp": STALE_TMP_SECONDS, "duplicate": keep_duplicates_days * 86400}
        for name, max_age in limits.items():
            for spool_id in _files(self.path / name):
                path = self.path / name / spool_id
                try:
                    age = now - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > max_age:
                    durable.unlink_quietly(str(path))
                    removed.append(f"{name}/{spool_id} ({age / 3600:.1f} h old)")
        return removed

    # -- operators ----------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """How many files wait in each state (new, processing, quarantined, duplicate)."""
        return {
            state: sum(len(_files(folder)) for folder in self._folders(name))
            for name, state in STATES.items()
        }

    def entries(self, quarantined: bool = False, duplicates: bool = False) -> list[SpoolEntry]:
        found = []
        names = ["new", "cur"]
        if quarantined or duplicates:
            names = ["quarantine"] * quarantined + ["duplicate"] * duplicates
        for name in names:
            for folder in self._folders(name):
                for spool_id in _files(folder):
                    entry = self._entry(name, spool_id, folder)
                    if entry is not None:
                        found.append(entry)
        return sorted(found, key=lambda e: e.id)

    def _folders(self, name: str) -> list[Path]:
        """Where messages in a state are: cur/ has a sub-folder per processing worker."""
        folder = self.path / name
        return [folder, *_subdirs(folder)] if name == "cur" else [folder]

    def _entry(self, dirname: str, spool_id: str, folder: Path | None = None) -> SpoolEntry | None:
        path = (folder or self.dirs[dirname]) / spool_id
        try:
            with path.open("rb") as fh:
                head = fh.read(HEAD_BYTES)
        except FileNotFoundError:  # claimed or done meanwhile
            return None
        line, _, raw = head.partition(b"\n")
        envelope = Envelope.from_json(line)
        return SpoolEntry(spool_id, STATES[dirname], envelope, decode_subject(raw), path)

    def get(self, id: str) -> SpoolEntry:
        if "/" not in id and id not in ("", ".", ".."):
            # a move out of cur/ writes the new file before it removes the claim: while
            # both exist, the message already is where it is going
            for dirname in ("quarantine", "duplicate", "new", "cur"):
                for folder in self._folders(dirname):
                    entry = self._entry(dirname, id, folder)
                    if entry is not None:
                        return entry
        raise NotFound(f"no spooled message '{id}' (see `mailgated spool list`)")

    def read(self, id: str) -> bytes:
        return _split(self.get(id).path.read_bytes())[1]

    def retry(self, id: str, section: str | None = None) -> None:
        """Quarantine back to new/, failures reset (an operator's replay); with `section`,
        processed for that section (a mis-routed message, a `deliver --section` typo)."""
        entry = self.get(id)
        if entry.state != "quarantined":
            raise Invalid(f"spooled message '{id}' is not quarantined (it is {entry.state})")
        if entry.too_large:
            raise Invalid(
                f"spooled message '{id}' is only the header of a message over max_message_size:"
                " have it sent again under a higher limit, or `spool delete` it"
            )
        claimed = Claimed(id, self.read(id), entry.envelope)
        envelope = replace(entry.envelope, failures=0, reason="")
        if section:
            envelope = replace(envelope, section=section)
        self._move(claimed, envelope, "new", src="quarantine")

    def delete(self, id: str) -> SpoolEntry:
        """Remove a waiting or quarantined message for good (not one being processed)."""
        entry = self.get(id)
        if entry.state == "processing":
            raise Invalid(f"spooled message '{id}' is being processed: wait, then look again")
        durable.unlink_quietly(str(entry.path))
        durable.fsync_dir(str(entry.path.parent))
        return entry


def _listed(folder: str) -> list[str]:
    """The names in `folder`; none if it is gone (an operator removed `free/`: files are
    made anew, and done files deleted, until `make_dirs` makes it again at a start)."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _subdirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        return [Path(e.path) for e in it if e.is_dir()]


def _files(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if e.is_file()]
    except FileNotFoundError:
        return []
