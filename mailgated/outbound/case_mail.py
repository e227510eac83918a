"""The mail about a case that one inbound message (or `case reply`) causes.

`CaseMail` composes each message with the Composer and keeps it, serialised,
for the caller to queue in its own transaction (processing queues a whole
batch at once, `case reply` at once): nothing is sent from here.

- `forward`       — the message to the responsible (else the section manager),
                    with a reply token issued to them, "Name via Section";
- `copy_watchers` — a copy to the case's watchers, never to the sender or the
                    partner (who has it);
- `send_partner`  — the seed's "Send Partner & Historize": a staff reply (by
                    mail, or `mailgated case reply`) to the partner from the
                    section's address, threaded under the partner's own mail,
                    copied to the watchers and historized as outgoing mail;
- `send`          — any other message (acknowledgement, notices to staff).

Our own section addresses are never recipients, and mail for one staff member
never names a Message-ID we sent to another (answering it verifies a staff
sender, so it never leaves that member's mailbox through us).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.cases import CaseService, store_attachments
from mailgated.config import Config
from mailgated.directory import SectionsAndStaff
from mailgated.errors import Invalid
from mailgated.message.parse import ParsedMail, Part
from mailgated.models import Case, Outbox, User
from mailgated.outbound import tokens
from mailgated.outbound.compose import Attached, Composer, flatten, show_address
from mailgated.outbound.outbox import Outgoing, enqueue
from mailgated.outbound.recipients import (
    Insiders,
    audiences,
    conversation,
    partner_address,
    watchers,
)

log = logging.getLogger("mailgated.process")


@dataclass
class CaseMail:
    """Mail about cases, composed and collected in `mails` as (mail, automatic)."""

    session: Session
    config: Config
    lookup: SectionsAndStaff
    composer: Composer
    answering: ParsedMail | None = None  # the inbound message this mail follows, if any
    sender: str = ""  # its sender's bare address
    mails: list[tuple[Outgoing, bool]] = field(default_factory=list)
    _staff_ids: dict[str, int] | None = field(default=None, repr=False)

    def readable(self, message_id: str, reader: int | None) -> bool:
        """May mail for `reader` (a user id, or None for partner and watchers) name
        `message_id`? Not when it is our mail to another staff member."""
        if not message_id:
            return False
        if self._staff_ids is None:
            self._staff_ids = (
                staff_message_ids(self.session, self.answering, self.composer.secret)
                if self.answering is not None
                else {}
            )
        owner = self._staff_ids.get(message_id)
        return owner is None or owner == reader

    def send(
        self,
        kind: str,
        case: Case,
        to: list[str],
        context: dict[str, object],
        *,
        automatic: bool = False,
        user: User | None = None,
        attachments: list[Attached] | None = None,
        in_reply_to: str | None = None,
        references: list[str] | None = None,
        on_behalf: str = "",
    ) -> Outgoing | None:
        """Compose a message to `to` (our own addresses left out) and keep it for the outbox.
        It threads under the message it follows unless `in_reply_to`/`references` say."""
        # never our own addresses, and no mail at all for a disabled user
        to = [
            a
            for a in dict.fromkeys(to)
            if a and not self.lookup.ours(a) and self.lookup.disabled(a) is None
        ]
        if not to:
            return None
        reader = user.id if user else None
        answering = self.answering
        if in_reply_to is None:
            in_reply_to = answering.message_id if answering is not None else ""
        if references is None:
            references = answering.references if answering is not None else []
        threaded_under = in_reply_to if self.readable(in_reply_to, reader) else ""
        thread = [r for r in references if self.readable(r, reader)]

        def compose(files: list[Attached]) -> EmailMessage:
            return self.composer.compose(
                kind, case, to, context, automatic=automatic, token_user=reader,
                token_generation=user.token_generation if user else 0,
                in_reply_to=threaded_under, references=thread, attachments=files,
                on_behalf=on_behalf,
            )  # fmt: skip

        message = compose(attachments or [])
        # serialised here, inside the caller's savepoint: a part that cannot be
        # written fails that message alone, not the whole batch at commit time
        try:
            raw = flatten(message)
        except Exception as exc:
            if not attachments:
                raise
            # issue 12 item 6: an attachment the generator cannot write must not cost the
            # case; the mail goes text-only (its text names the files, which the case keeps)
            log.warning("case %s: %s sent without its attachments, which cannot be written "
                        "(%s: %s)", case.id, kind, type(exc).__name__, exc)  # fmt: skip
            message = compose([])
            raw = flatten(message)
        item = Outgoing(message, to, case.id, kind, reader, raw=raw, cause=self.sender)
        self.mails.append((item, automatic))
        return item

    def forward(self, case: Case, role: str, text: str, mentioned: int | None) -> None:
        """The inbound message to the responsible (else manager), with a token issued to them."""
        mail = self.answering
        assert mail is not None
        user = self.responsible(case)
        if user is None or user.email.lower() == self.sender:
            return
        self.send(
            "forward",
            case,
            [user.email],
            {
                "text": text,
                "author": mail.from_name or self.sender,
                "author_address": self.sender,
                "role": role,
                "attachments": [p.filename for p in mail.attachments],
                "mentioned": mentioned,
            },
            user=user,
            attachments=attachable(mail.attachments, self.config.outbound.max_attachment)[0],
            on_behalf=mail.from_name or self.sender,
        )

    def responsible(self, case: Case) -> User | None:
        """The case's user if active, else the section manager if active."""
        for user_id in (case.user_id, self.lookup.sections_by_id[case.section_id].manager_id):
            user = self.lookup.users_by_id.get(user_id) if user_id else None
            if user is not None:
                return user
        return None

    def copy_watchers(
        self, case: Case, direction: str, text: str, author: str, skip: Iterable[str] = ()
    ) -> None:
        """A copy to the case's watchers, except the sender and the partner (who has it)."""
        left_out = {self.sender, (case.email_from or "").lower(), *skip}
        to = [w for w in watchers(case) if w.lower() not in left_out]
        if not to:
            return
        files = self.answering.attachments if self.answering is not None else []
        for group in audiences(to, self.insiders()):  # outsiders never see our addresses
            self.send(
                "copy",
                case,
                group,
                {
                    "text": text,
                    "author": author,
                    "direction": direction,
                    "attachments": [p.filename for p in files],
                },
            )

    def insiders(self) -> Insiders:
        lookup = self.lookup
        known = [*lookup.users_by_email, *lookup.disabled_by_email, *lookup.sections_by_address]
        return Insiders.of(known, self.config.security.internal_domains)

    def send_partner(
        self, service: CaseService, case: Case, text: str, author: str
    ) -> Outgoing | None:
        """Relay `text` to the partner (with the files of the message it follows) and copy
        the watchers; historize it as outgoing mail. None if the case has no partner
        address (the watchers still get their copy, the history its entry)."""
        to = partner_address(self.session, case)
        mail = self.answering
        parts: list[Part] = mail.attachments if mail is not None else []
        # thread under the partner's messages, never under our forwards to staff
        theirs = [
            r
            for r in (mail.references + mail.in_reply_to if mail is not None else [])
            if tokens.read_message_id(self.composer.secret, r) is None
        ] or conversation(self.session, case.id)
        files, omitted = attachable(parts, self.config.outbound.max_attachment)
        item = None
        if to:
            item = self.send(
                "relay",
                case,
                [to],
                {"text": text, "author": author, "attachments_omitted": omitted},
                attachments=files,
                in_reply_to=theirs[-1] if theirs else "",
                references=theirs[:-1],
            )
        self.copy_watchers(case, "out", text, author, skip=[to.lower()] if to else [])
        section = self.lookup.sections_by_id[case.section_id]
        subject = mail.subject[:1000] if mail is not None else case.subject
        entry = service.record_message(
            case,
            direction="out",
            body=text,
            email_from=show_address(section.name, section.email or ""),
            email_to=to or None,
            subject=str(item.message["Subject"]) if item else subject,
            message_id=str(item.message["Message-ID"]) if item else None,
        )
        store_attachments(self.session, case.id, entry, parts)
        return item

    def queue(self) -> None:
        """Queue what was collected, in the caller's transaction."""
        for automatic in (False, True):
            items = [item for item, auto in self.mails if auto is automatic]
            if items:
                enqueue(self.session, items, self.config.outbound, automatic=automatic)
        self.mails.clear()


def reply(
    session: Session,
    config: Config,
    composer: Composer,
    service: CaseService,
    case: Case,
    text: str,
    author: str,
) -> str:
    """`mailgated case reply`: `text` to the partner, queued now; returns the address."""
    if not text.strip():
        raise Invalid("a reply needs some text")
    to = partner_address(session, case)
    if not to:
        raise Invalid(f"case {case.id} has no partner e-mail: set one with `case set --email`")
    mail = CaseMail(session, config, SectionsAndStaff(session), composer)
    mail.send_partner(service, case, text, author)
    mail.queue()
    return to


def staff_message_ids(session: Session, mail: ParsedMail, secret: bytes) -> dict[str, int]:
    """The Message-IDs this mail names that we sent to a staff member, with their user
    (only our own signed ones can be: the others cost no query)."""
    named = [
        m
        for m in dict.fromkeys(mail.in_reply_to + mail.references)
        if tokens.read_message_id(secret, m) is not None
    ]
    if not named:
        return {}
    query = select(Outbox.message_id, Outbox.recipient_user_id).where(
        Outbox.message_id.in_(named[-200:]), Outbox.recipient_user_id.is_not(None)
    )
    return {mid: uid for mid, uid in session.execute(query) if uid is not None}


def attachable(parts: list[Part], limit: int) -> tuple[list[Attached], list[str]]:
    """The files to attach (up to `limit` bytes in all) and the names of those left out."""
    files: list[Attached] = []
    omitted: list[str] = []
    total = 0
    for part in parts:
        if part.data is None or total + part.size > limit:
            omitted.append(part.filename)
            continue
        total += part.size
        files.append(Attached(part.filename, part.content_type, part.data))
    return files, omitted
