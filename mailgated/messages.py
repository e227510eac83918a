"""The raw messages kept once processed: read them back, as they arrived.

History bodies are trimmed (quotes and signatures removed, HTML turned into
text); the raw message is what makes that trimming no loss. `mailgated case
mail ID` writes a case's messages as an mbox that any mail client opens and
`mailgated import mbox` reads back (a re-import records nothing twice).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.errors import NotFound
from mailgated.models import Case, StoredMessage

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def stored(session: Session, case_id: int, message_id: str | None = None) -> list[StoredMessage]:
    """The raw messages of a case in arrival order (one, when `message_id` names it)."""
    if session.get(Case, case_id) is None:
        raise NotFound(f"no case with ID {case_id}")
    query = select(StoredMessage).where(StoredMessage.case_id == case_id)
    if message_id is not None:
        wanted = message_id.strip()
        wanted = wanted if wanted.startswith("<") else f"<{wanted}>"
        query = query.where(StoredMessage.message_id == wanted)
    found = list(session.scalars(query.order_by(StoredMessage.id)))
    if message_id is not None and not found:
        raise NotFound(f"case {case_id} has no stored message {message_id}")
    return found


def write_mbox(messages: list[StoredMessage], out: BinaryIO) -> None:
    """Write `messages` as an mbox (mboxrd: "From " lines in bodies get a ">")."""
    for message in messages:
        for chunk in _mbox_entry(message):
            out.write(chunk)


def _mbox_entry(message: StoredMessage) -> Iterator[bytes]:
    sender = (message.envelope_from or "").strip("<>") or "MAILER-DAEMON"
    when = message.received_at.astimezone(dt.UTC).strftime("%a %b %d %H:%M:%S %Y")
    yield f"From {sender.replace(' ', '_')} {when}\n".encode("ascii", "replace")
    body = message.raw.replace(b"\r\n", b"\n")
    yield _FROM_LINE.sub(rb">\1", body)
    yield b"\n" if body.endswith(b"\n") else b"\n\n"
