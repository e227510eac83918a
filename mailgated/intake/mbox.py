"""Bulk intake from an mbox file or a Maildir directory (`mailgated import`).

Each message goes through the spool like any other (source `import:<path>`,
the `--section` in its envelope). Running it twice on the same file is safe:
the same file yields the same bytes in the same order, including the
Message-IDs made up for messages without one (derived from the content), so
processing recognises the second copies by Message-ID and content hash.
A message over `[listen] max_message_size` is skipped and reported, not spooled.
mbox files are read as mboxrd (`>From ` lines lose one `>`), which also reads
mboxo correctly except for body lines that really began with `>From `.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from mailgated.errors import Invalid, NotFound
from mailgated.intake.durable import too_large_reason
from mailgated.intake.identity import message_id
from mailgated.intake.spool import Envelope, Spool, decode_subject

_MBOXRD_QUOTED = re.compile(rb"(?m)^>(>*From )")


def read_mbox(path: Path) -> tuple[int, Iterator[bytes]]:
    box = mailbox.mbox(path, create=False)
    keys = box.keys()

    def messages() -> Iterator[bytes]:
        try:
            for key in keys:
                yield _MBOXRD_QUOTED.sub(rb"\1", box.get_bytes(key))
        finally:  # also when the reader stops early (an error spooling a message)
            box.close()

    return len(keys), messages()


def read_maildir(path: Path) -> tuple[int, Iterator[bytes]]:
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise Invalid(f"{path} is not a Maildir (it needs cur/ and new/)")
    box = mailbox.Maildir(path, create=False)
    keys = sorted(box.keys())  # unique file names: a stable order from run to run

    def messages() -> Iterator[bytes]:
        for key in keys:
            yield box.get_bytes(key)

    return len(keys), messages()


READERS: dict[str, Callable[[Path], tuple[int, Iterator[bytes]]]] = {
    "mbox": read_mbox,
    "maildir": read_maildir,
}


def open_messages(kind: str, path: Path) -> tuple[int, Iterator[bytes]]:
    """How many messages the mbox/Maildir at `path` holds, and their bytes in file order."""
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if kind == "mbox" and path.is_dir():
        raise Invalid(f"{path} is a directory: use `mailgated import maildir`")
    return READERS[kind](path)


def spool_all(
    messages: Iterable[bytes],
    source: str,
    section: str,
    spool: Spool,
    notify: bool = False,
    max_size: int = 0,
    skipped: list[str] | None = None,
) -> Iterator[str]:
    """Spool each message (source `import:<path>`); yields the spool ids as it goes, and ""
    for a message over `max_size` (0: no limit), which is skipped and described in `skipped`
    (the same limit as every other way in, `[listen] max_message_size`). Imported history
    sends no mail unless `notify` (issue 12 item 10)."""
    for number, raw in enumerate(messages, start=1):
        if max_size and len(raw) > max_size:
            if skipped is not None:
                skipped.append(_describe_skipped(number, raw, max_size))
            yield ""
            continue
        envelope = Envelope(
            source=source, envelope_from=None, recipients=[], section=section, notify=notify
        )
        yield spool.put(raw, envelope)


def _describe_skipped(number: int, raw: bytes, max_size: int) -> str:
    found = message_id(raw) or "(no Message-ID)"
    subject = decode_subject(raw[: 64 * 1024])
    why = too_large_reason(len(raw), max_size, "skipped")
    return f"message {number} {found} {subject!r}: {why}"
