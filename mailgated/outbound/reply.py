"""The seed's "Send Partner & Historize": mail a text to a case's partner and record it.

`mailgated case reply ID TEXT` comes here. The mail goes from the section's
address (relay template) with a copy to the watchers, is queued in the
caller's transaction and is historized as outgoing mail, like a staff reply by
mail (`threading/apply.py`), but with no state change.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from mailgated.cases import CaseService
from mailgated.config import Config
from mailgated.errors import Invalid
from mailgated.models import Case
from mailgated.outbound.compose import Composer, show_address
from mailgated.outbound.outbox import enqueue
from mailgated.threading.roles import conversation, partner_address, watchers


def send_partner(
    session: Session,
    config: Config,
    composer: Composer,
    service: CaseService,
    case: Case,
    text: str,
    author: str,
) -> str:
    """Queue `text` for the partner (and copies for the watchers); returns the address."""
    if not text.strip():
        raise Invalid("a reply needs some text")
    to = partner_address(session, case)
    if not to:
        raise Invalid(f"case {case.id} has no partner e-mail: set one with `case set --email`")
    thread = conversation(session, case.id)
    message = composer.compose(
        "relay",
        case,
        [to],
        {"text": text, "author": author},
        in_reply_to=thread[-1] if thread else "",
        references=thread[:-1],
    )
    enqueue(session, message, config.outbound, case=case, kind="relay")
    others = [w for w in watchers(session, case.id) if w != to.lower()]
    if others:
        copy = composer.compose(
            "copy", case, others, {"text": text, "author": author, "direction": "out"}
        )
        enqueue(session, copy, config.outbound, case=case, kind="copy")
    section = case.section
    service.record_message(
        case,
        direction="out",
        body=text,
        email_from=show_address(section.name, section.email or ""),
        email_to=to,
        subject=str(message["Subject"]),
        message_id=str(message["Message-ID"]),
    )
    return to
