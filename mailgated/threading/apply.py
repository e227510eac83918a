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
Mail is not sent here: `outbound/case_mail.py` composes it, the messages are
returned, and processing queues them in the same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.cases import Actor, CaseService, EventSink, store_attachments
from mailgated.config import Config
from mailgated.directory import Directory, SectionsAndStaff
from mailgated.intake.spool import Envelope
from mailgated.message import authres
from mailgated.message.classify import Verdict
from mailgated.message.lists import list_addresses
from mailgated.message.parse import ParsedMail
from mailgated.models import AddressMark, Case, History, State
from mailgated.outbound.case_mail import CaseMail
from mailgated.outbound.compose import show_address
from mailgated.outbound.outbox import SILENT, Outgoing
from mailgated.outbound.recipients import partner_addresses
from mailgated.threading import staff_commands
from mailgated.threading.match import Match, strip_prefixes
from mailgated.threading.roles import (
    Role,
    same_organisation,
    sender_role,
    verify,
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
    """Everything one role handler needs; `out` collects the mail it wants sent."""

    session: Session
    config: Config
    lookup: SectionsAndStaff
    incoming: Incoming
    section_id: int
    match: Match
    now: dt.datetime
    out: CaseMail
    case: Case | None = None
    role: Role = field(default_factory=lambda: Role("new"))
    rules: EventSink | None = None  # the transaction's rules cascade: told of every case change

    @property
    def mail(self) -> ParsedMail:
        return self.incoming.mail

    def service(self) -> CaseService:
        actor = Actor.mail(self.incoming.sender or "unknown sender", self.role.user)
        return CaseService(self.session, actor, now=lambda: self.now, events=self.rules)


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
    subject = mail.subject
    if incoming.verdict.kind == "list":  # "[Partners] Belt squeaks": the list's tag goes
        subject = strip_prefixes(subject)
    case = service.create(
        section,
        subject or NO_SUBJECT,
        incoming.text,
        partner=partner,
        contact=contact,
        email=incoming.sender or None,
        watchers=cc if section.cc_become_watchers else (),
    )
    handling.case = case
    if handling.match.mentioned:
        how = (
            "the Message-IDs it answers" if "Message-ID" in handling.match.detail else "its subject"
        )
        service.historize(
            case,
            "note",
            f"this message mentioned case {handling.match.mentioned} ({how}), "
            "which is not this sender's case",
        )
    record_in(handling, service, case, "email_in")
    handling.out.forward(case, "new", incoming.text, handling.match.mentioned)
    verdict = incoming.verdict
    no_answer = verdict.automatic or verdict.no_answer
    if section.send_acknowledgement and incoming.sender and not no_answer:
        handling.out.send(
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
        handling.out.send(
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
    relayed = handling.out.send_partner(service, case, text, user.name) is not None
    if not report.state_set:
        service.close_after_staff_reply(case)
    action = "staff reply relayed" if relayed else "staff reply (no partner address)"
    return Outcome(case.id, action + (", closed" if case.state == State.CLOSED else "") + done)


def unverified_staff(handling: Handling) -> Outcome:
    case, user = handling.case, handling.role.user
    assert case is not None and user is not None
    service = handling.service()
    record_in(handling, service, case, "unverified")
    if not user.active:  # a disabled user gets no mail, not even this notice
        return Outcome(case.id, f"mail from disabled user {user.login}: nothing changed")
    handling.out.send(
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
    forward_and_copy(handling, case, "partner")
    return Outcome(case.id, action)


def watcher_message(handling: Handling) -> Outcome:
    case = handling.case
    assert case is not None
    record_in(handling, handling.service(), case, "email_in")
    forward_and_copy(handling, case, handling.role.name)
    return Outcome(case.id, f"{handling.role.name} message")


ROLES: dict[str, Callable[[Handling], Outcome]] = {
    "new": new_case,
    "staff": staff_reply,
    "unverified": unverified_staff,
    "partner": partner_message,
    "watcher": watcher_message,
    "other": watcher_message,
}


def apply(handling: Handling) -> Outcome:
    """Apply one message: the automatic-mail policy, else its role's handler.

    An imported message (`mailgated import`) says so in its case's history; without
    `--notify` it sends no mail: neither the role's nor any rule's (`outbox.SILENT`)."""
    envelope = handling.incoming.envelope
    silent = not envelope.notify
    if silent:
        handling.session.info[SILENT] = "imported without --notify"
    try:
        outcome = _apply(handling)
    finally:
        handling.session.info.pop(SILENT, None)
    if envelope.source.startswith("import:") and handling.case is not None:
        sent = "no mail sent" if silent else "mail sent as for new mail (--notify)"
        where = envelope.source.removeprefix("import:")
        handling.service().historize(handling.case, "import", f"imported from {where}; {sent}")
    outcome.mails = [] if silent else handling.out.mails
    return outcome


def _apply(handling: Handling) -> Outcome:
    if handling.incoming.verdict.automatic:
        return automatic(handling)
    handling.case = handling.match.case
    if handling.case is not None:
        handling.role = role_on_case(handling, handling.case)
        if handling.role.name == "other" and handling.match.evidence == "headers":
            stranger(handling, handling.case)
    return ROLES[handling.role.name](handling)


def stranger(handling: Handling, case: Case) -> None:
    """A sender who is not on `case` (partner, contact, watcher, staff) and was matched only
    by the Message-IDs it quotes. From the partner's own domain — a colleague the partner
    forwarded to — it stays a non-participant (`other`: recorded, forwarded to the
    responsible, never sent to the partner, no state change); from any other domain, or
    from a public mail provider's the partner also uses (anyone can be there), it starts a
    new case that names this one, like a stranger's subject tag (issue 12 item 13).
    """
    sender, public = handling.incoming.sender, public_domains(handling.config)
    partners = partner_addresses(handling.session, case)
    if any(same_organisation(sender, address, public) for address in partners):
        return
    detail = f"Message-IDs of case {case.id}, whose conversation the sender is not on: new case"
    handling.match = dataclasses.replace(
        handling.match, case=None, evidence="new", detail=detail, mentioned=case.id
    )
    handling.case = None
    handling.role = Role("new")


def public_domains(config: Config) -> frozenset[str]:
    """`[security] public_domains`: public mail providers besides `roles.PUBLIC_DOMAINS`."""
    return frozenset(d.strip().lower() for d in config.security.public_domains)


def role_on_case(handling: Handling, case: Case) -> Role:
    incoming = handling.incoming
    role = sender_role(
        handling.session,
        case,
        incoming.sender,
        handling.lookup,
        strong=handling.match.evidence == "token",  # quoted Message-IDs make no colleague
        public=public_domains(handling.config),
    )
    if role.name != "staff":
        return role
    verified = verify(
        role,
        token_user_id=handling.match.token_user_id,
        answered_user_ids=handling.match.answered_user_ids,
        auth_headers=authres.believable(
            incoming.mail.header_all("Authentication-Results"),
            incoming.envelope.source,
            handling.config.security.trusted_authserv_id,
            handling.config.security.trusted_authres_sources,
        ),
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
    store_attachments(handling.session, case.id, entry, mail.attachments)
    return entry


def forward_and_copy(handling: Handling, case: Case, role: str) -> None:
    """The message to the responsible and a copy to the watchers."""
    incoming = handling.incoming
    handling.out.forward(case, role, incoming.text, handling.match.mentioned)
    author = incoming.mail.from_name or incoming.sender
    handling.out.copy_watchers(case, "in", incoming.text, author)


def watchable(handling: Handling, address: str) -> bool:
    """A Cc address that may become a watcher: a real address, not ours, not the sender's,
    not the mailing list the mail came through (a bare word such as "Cc: Sales Team" is
    no address and is skipped, not an error)."""
    local, at, domain = address.rpartition("@")
    if not (at and local and "." in domain):
        return False
    if handling.lookup.ours(address) or address == handling.incoming.sender:
        return False
    listed = handling.incoming.verdict.kind == "list"
    return not (listed and address in list_addresses(handling.mail))


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
