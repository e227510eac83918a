"""Apply: what a message does to its case, by the sender's role (the seed's semantics).

ROLES is the policy, one small function per role:

- `new`        — a case in `draft` (partner and contact found by the sender's
                 address, Cc addresses become watchers if the section says so),
                 forwarded to the responsible (else the section manager) and
                 acknowledged to the sender (if the section says so);
- `staff`      — a verified staff reply: command lines run (`staff_commands.py`), the rest
                 is relayed to the partner (and copied to the watchers) from the
                 section's address, historized as outgoing mail, and the case
                 closes (`close_on_staff_reply`) unless a command set the state;
- `unverified` — a staff address that proved nothing: an `unverified` history
                 entry and a short notice to that address, nothing else;
- `partner`    — historized, forwarded to the responsible and the watchers; a
                 closed or pending case reopens (`reopen_on_partner_reply`);
- `watcher` / `other` — historized, forwarded to the responsible and the other
                 watchers, never to the partner; no state change.

Automatic mail (`classify`) never creates a case (unless `accept_automatic`),
never reopens one and is never answered: on a known case it is historized as
`automatic`; a bounce marks the failed addresses so automatic mail to them stops.
Mail is not sent here: the messages are returned, and processing queues them in
the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mailgated.cases import Actor, CaseService
from mailgated.config import Config
from mailgated.directory import Directory, SectionsAndStaff
from mailgated.intake.spool import Envelope
from mailgated.message.classify import Verdict
from mailgated.message.parse import ParsedMail, Part
from mailgated.models import AddressMark, Attachment, Case, History, Outbox, State, User
from mailgated.outbound import tokens
from mailgated.outbound.compose import Attached, Composer, show_address
from mailgated.outbound.outbox import Outgoing
from mailgated.threading import staff_commands
from mailgated.threading.match import Match
from mailgated.threading.roles import (
    Role,
    conversation,
    partner_address,
    sender_role,
    verify,
    watchers,
)

NO_SUBJECT = "(no subject)"


@dataclass(frozen=True)
class Incoming:
    """One message as processing read it."""

    mail: ParsedMail
    envelope: Envelope
    verdict: Verdict
    text: str  # the new text: quoted earlier message and signature trimmed
    sender: str  # bare address ("" if the message has none)


@dataclass
class Outcome:
    """What applying did, for the log line, the stored message and the outbox."""

    case_id: int | None
    action: str
    mails: list[tuple[Outgoing, bool]] = field(default_factory=list)  # (mail, automatic)


@dataclass
class Handling:
    """Everything one role handler needs; `mails` collects what it wants sent."""

    session: Session
    config: Config
    lookup: SectionsAndStaff
    composer: Composer
    incoming: Incoming
    section_id: int
    match: Match
    now: dt.datetime
    case: Case | None = None
    role: Role = field(default_factory=lambda: Role("new"))
    mails: list[tuple[Outgoing, bool]] = field(default_factory=list)
    staff_ids: dict[str, int] | None = None

    @property
    def mail(self) -> ParsedMail:
        return self.incoming.mail

    def readable(self, message_id: str, reader: int | None) -> bool:
        """May mail for `reader` (a user id, or None for partner and watchers) name
        `message_id`? Not when it is our mail to another staff member: answering that
        verifies a staff sender, so it never leaves that member's mailbox through us."""
        if not message_id:
            return False
        if self.staff_ids is None:
            self.staff_ids = staff_message_ids(self.session, self.mail, self.composer.secret)
        owner = self.staff_ids.get(message_id)
        return owner is None or owner == reader

    def service(self) -> CaseService:
        actor = Actor.mail(self.incoming.sender or "unknown sender", self.role.user)
        return CaseService(self.session, actor, now=lambda: self.now)

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
        """Compose a message to `to` (our own addresses left out) and keep it for the outbox."""
        to = [a for a in dict.fromkeys(to) if a and not self.lookup.ours(a)]
        if not to:
            return None
        reader = user.id if user else None
        parent = self.mail.message_id if in_reply_to is None else in_reply_to
        message = self.composer.compose(
            kind,
            case,
            to,
            context,
            automatic=automatic,
            token_user=reader,
            in_reply_to=parent if self.readable(parent, reader) else "",
            references=[
                r
                for r in (self.mail.references if references is None else references)
                if self.readable(r, reader)
            ],
            attachments=attachments or [],
            on_behalf=on_behalf,
        )
        # serialised here, inside this message's savepoint: a part that cannot be
        # written fails this message alone, not the whole batch at commit time
        raw = message.as_bytes()
        item = Outgoing(message, to, case.id, kind, reader, raw=raw)
        self.mails.append((item, automatic))
        return item


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


# --- the roles ---------------------------------------------------------------


def new_case(handling: Handling) -> Outcome:
    mail, incoming = handling.mail, handling.incoming
    section = handling.lookup.sections_by_id[handling.section_id]
    partner, contact = (
        Directory(handling.session).find_sender(incoming.sender)
        if incoming.sender
        else (None, None)
    )
    cc = [a for _, a in mail.cc if watchable(handling, a)]
    service = handling.service()
    case = service.create(
        section,
        mail.subject or NO_SUBJECT,
        incoming.text,
        partner=partner,
        contact=contact,
        email=incoming.sender or None,
        watchers=cc if section.cc_become_watchers else (),
    )
    handling.case = case
    if handling.match.mentioned:
        service.historize(
            case,
            "note",
            f"the subject named case {handling.match.mentioned}, not this sender's case",
        )
    record_in(handling, service, case, "email_in")
    forward(handling, case, "new")
    if section.send_acknowledgement and incoming.sender and not incoming.verdict.automatic:
        handling.send(
            "acknowledgement",
            case,
            [incoming.sender],
            {"author": mail.from_name, "mentioned": handling.match.mentioned},
            automatic=True,
        )
    return Outcome(case.id, "new case")


def staff_reply(handling: Handling) -> Outcome:
    case, user = handling.case, handling.role.user
    assert case is not None and user is not None
    service = handling.service()
    commands, errors, text = staff_commands.split(handling.incoming.text)
    report = staff_commands.run(service, case, commands, handling.lookup)
    report.failed[:0] = errors
    if report.failed:
        handling.send(
            "command_error",
            case,
            [user.email],
            {"failed": report.failed, "done": report.done},
            automatic=True,
            user=user,
        )
    done = f" ({'; '.join(report.done)})" if report.done else ""
    if report.note:
        if text.strip():
            record_in(handling, service, case, "note", body=text)
        return Outcome(case.id, f"staff note{done}")
    if not text.strip():
        return Outcome(case.id, f"staff commands{done}" if commands else "empty staff reply")
    relayed = send_partner(handling, service, case, text, user)
    closing = handling.lookup.sections_by_id[case.section_id].close_on_staff_reply
    if closing and not report.state_set and case.state in _CLOSABLE:
        service.close(case)
    action = "staff reply relayed" if relayed else "staff reply (no partner address)"
    return Outcome(case.id, action + (", closed" if case.state == State.CLOSED else "") + done)


def unverified_staff(handling: Handling) -> Outcome:
    case, user = handling.case, handling.role.user
    assert case is not None and user is not None
    service = handling.service()
    record_in(handling, service, case, "unverified")
    handling.send(
        "unverified",
        case,
        [user.email],
        {"address": handling.incoming.sender},
        automatic=True,
        user=user,
    )
    return Outcome(case.id, "unverified staff address: nothing changed, notice sent")


def partner_message(handling: Handling) -> Outcome:
    case = handling.case
    assert case is not None
    service = handling.service()
    section = handling.lookup.sections_by_id[case.section_id]
    if section.cc_become_watchers:
        for _, address in handling.mail.cc:
            if watchable(handling, address):
                service.watch(case, address)
    record_in(handling, service, case, "email_in")
    action = "partner message"
    if section.reopen_on_partner_reply and case.state in (State.CLOSED, State.PENDING):
        service.open(case)
        action += ", reopened"
    forward(handling, case, "partner")
    copy_watchers(handling, case, "in")
    return Outcome(case.id, action)


def watcher_message(handling: Handling) -> Outcome:
    case = handling.case
    assert case is not None
    record_in(handling, handling.service(), case, "email_in")
    forward(handling, case, handling.role.name)
    copy_watchers(handling, case, "in")
    return Outcome(case.id, f"{handling.role.name} message")


ROLES: dict[str, Callable[[Handling], Outcome]] = {
    "new": new_case,
    "staff": staff_reply,
    "unverified": unverified_staff,
    "partner": partner_message,
    "watcher": watcher_message,
    "other": watcher_message,
}
_CLOSABLE = (State.DRAFT, State.OPEN, State.PENDING)


def apply(handling: Handling) -> Outcome:
    """Apply one message: the automatic-mail policy, else its role's handler."""
    if handling.incoming.verdict.automatic:
        outcome = automatic(handling)
    else:
        handling.case = handling.match.case
        if handling.case is not None:
            handling.role = role_on_case(handling, handling.case)
        outcome = ROLES[handling.role.name](handling)
    outcome.mails = handling.mails
    return outcome


def role_on_case(handling: Handling, case: Case) -> Role:
    incoming = handling.incoming
    role = sender_role(
        handling.session, case, incoming.sender, handling.lookup, strong=handling.match.strong
    )
    if role.name != "staff":
        return role
    verified = verify(
        role,
        token_user_id=handling.match.token_user_id,
        answered_user_ids=handling.match.answered_user_ids,
        auth_headers=incoming.mail.header_all("Authentication-Results"),
        trusted_authserv_id=handling.config.security.trusted_authserv_id,
        from_domain=incoming.sender.rpartition("@")[2],
    )
    return verified if verified.verified else Role("unverified", role.user)


def automatic(handling: Handling) -> Outcome:
    verdict: Verdict = handling.incoming.verdict
    for address in verdict.bounced:
        mark_bounced(handling.session, address, verdict.reason, handling.now)
    marked = f", marked {', '.join(verdict.bounced)}" if verdict.bounced else ""
    case = handling.match.case
    if case is None:
        section = handling.lookup.sections_by_id[handling.section_id]
        if section.accept_automatic and verdict.kind != "loop":
            outcome = new_case(handling)
            outcome.action = f"new case from automatic mail ({verdict.kind}){marked}"
            return outcome
        return Outcome(None, f"ignored {verdict.kind} ({verdict.reason}){marked}")
    handling.case = case
    record_in(handling, handling.service(), case, "automatic", emit=False)
    return Outcome(case.id, f"{verdict.kind} recorded ({verdict.reason}){marked}")


# --- pieces ------------------------------------------------------------------


def record_in(
    handling: Handling,
    service: CaseService,
    case: Case,
    kind: str,
    *,
    body: str | None = None,
    emit: bool = True,
) -> History:
    """The inbound message in the case's history, with its files."""
    mail = handling.mail
    fields = {
        "email_from": show_address(mail.from_name, handling.incoming.sender),
        "email_to": ", ".join(a for _, a in mail.to) or None,
        "email_cc": ", ".join(a for _, a in mail.cc) or None,
        "subject": mail.subject[:1000] or None,
        "message_id": mail.message_id or None,
    }
    text = handling.incoming.text if body is None else body
    if kind == "automatic":
        text = f"{handling.incoming.verdict.kind}: {handling.incoming.verdict.reason}\n\n{text}"
    if emit:
        entry = service.record_message(case, direction="in", body=text, kind=kind, **fields)
    else:
        entry = service.historize(case, kind, text, **fields)
    store_attachments(handling.session, case.id, entry.id, mail.attachments)
    return entry


def store_attachments(session: Session, case_id: int, history_id: int, parts: list[Part]) -> None:
    if not parts:
        return
    rows = [
        {
            "case_id": case_id,
            "history_id": history_id,
            "filename": part.filename,
            "content_type": part.content_type[:255],
            "size": part.size,
            "data": part.data,
            "truncated": part.truncated,
        }
        for part in parts
    ]
    session.connection().execute(insert(Attachment), rows)


def responsible(handling: Handling, case: Case) -> User | None:
    """The case's user if active, else the section manager if active."""
    for user_id in (case.user_id, handling.lookup.sections_by_id[case.section_id].manager_id):
        user = handling.lookup.users_by_id.get(user_id) if user_id else None
        if user is not None:
            return user
    return None


def forward(handling: Handling, case: Case, role: str) -> None:
    """The message to the responsible (else manager), with a token issued to them."""
    user = responsible(handling, case)
    if user is None or user.email.lower() == handling.incoming.sender:
        return
    mail = handling.mail
    handling.send(
        "forward",
        case,
        [user.email],
        {
            "text": handling.incoming.text,
            "author": mail.from_name or handling.incoming.sender,
            "author_address": handling.incoming.sender,
            "role": role,
            "attachments": [p.filename for p in mail.attachments],
            "mentioned": handling.match.mentioned,
        },
        user=user,
        attachments=attachable(mail.attachments, handling.config.outbound.max_attachment)[0],
        on_behalf=mail.from_name or handling.incoming.sender,
    )


def watchable(handling: Handling, address: str) -> bool:
    """A Cc address that may become a watcher: a real address, not ours, not the sender's
    (a bare word such as "Cc: Sales Team" is no address and is skipped, not an error)."""
    local, at, domain = address.rpartition("@")
    if not (at and local and "." in domain):
        return False
    return not handling.lookup.ours(address) and address != handling.incoming.sender


def copy_watchers(handling: Handling, case: Case, direction: str, text: str | None = None) -> None:
    """A copy to the case's watchers, except the sender (and the partner, who has it)."""
    skip = {handling.incoming.sender, (case.email_from or "").lower()}
    to = [w for w in watchers(handling.session, case.id) if w not in skip]
    if not to:
        return
    author = handling.role.user.name if direction == "out" and handling.role.user else None
    handling.send(
        "copy",
        case,
        to,
        {
            "text": handling.incoming.text if text is None else text,
            "author": author or handling.mail.from_name or handling.incoming.sender,
            "direction": direction,
            "attachments": [p.filename for p in handling.mail.attachments],
        },
    )


def send_partner(
    handling: Handling, service: CaseService, case: Case, text: str, user: User
) -> bool:
    """Relay a staff reply to the partner and the watchers; historize it as outgoing mail."""
    to = partner_address(handling.session, case)
    # thread under the partner's messages, never under our forwards to staff
    theirs = [
        r
        for r in handling.mail.references + handling.mail.in_reply_to
        if tokens.read_message_id(handling.composer.secret, r) is None
    ] or conversation(handling.session, case.id)
    files, omitted = attachable(handling.mail.attachments, handling.config.outbound.max_attachment)
    item = None
    if to:
        item = handling.send(
            "relay",
            case,
            [to],
            {"text": text, "author": user.name, "attachments_omitted": omitted},
            attachments=files,
            in_reply_to=theirs[-1] if theirs else "",
            references=theirs[:-1],
        )
    copy_watchers(handling, case, "out", text)
    message_id = str(item.message["Message-ID"]) if item else None
    section = handling.lookup.sections_by_id[case.section_id]
    entry = service.record_message(
        case,
        direction="out",
        body=text,
        email_from=show_address(section.name, section.email or ""),
        email_to=to or None,
        subject=str(item.message["Subject"]) if item else handling.mail.subject[:1000],
        message_id=message_id,
    )
    store_attachments(handling.session, case.id, entry.id, handling.mail.attachments)
    return item is not None


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


def mark_bounced(session: Session, address: str, reason: str, now: dt.datetime) -> None:
    """Automatic mail to a bounced address stops (outbox checks AddressMark)."""
    address = address.strip().lower()
    mark = session.scalar(select(AddressMark).where(AddressMark.email == address))
    if mark is None:
        session.add(AddressMark(email=address, bounced_at=now, bounces=1, reason=reason))
    else:
        mark.bounces += 1
        mark.bounced_at = now
        mark.reason = reason
    session.flush()
