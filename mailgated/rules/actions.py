"""A rule's actions, run for a batch of cases at once, in the issue's order.

ACTIONS is the policy, read top to bottom: set state (through the lifecycle,
so the close time, history and events are right), move section, assign,
set priority, add watchers, remind the responsible, remind the partner, send a
templated mail. Each step works on the whole batch with a few statements
(CaseService's bulk methods, the outbox's `enqueue`), so a sweep that
fires a thousand times costs a few dozen statements, not thousands of flushes.
Every firing also gets a history entry naming the rule and what it did.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from mailgated.cases import Actor, CaseService, EventSink
from mailgated.config import Config
from mailgated.directory import Directory
from mailgated.models import (
    PRIORITY_NAMES,
    Attachment,
    Case,
    Contact,
    History,
    Partner,
    Section,
    User,
    Watcher,
)
from mailgated.outbound.compose import Composer
from mailgated.outbound.outbox import Outgoing, enqueue
from mailgated.outbound.recipients import Insiders, audiences
from mailgated.rules import mail
from mailgated.rules.criteria import MESSAGE_KINDS, RuleData

log = logging.getLogger("mailgated.rules")

BUTTONS = {
    "draft": "reset",
    "open": "open",
    "pending": "pending",
    "closed": "close",
    "cancelled": "cancel",
}


MAIL_FACTS = [
    "id",
    "subject",
    "state",
    "priority",
    "description",
    "email_from",
    "user_id",
    "section",
    "section_email",
    "user",
    "user_email",
    "manager_email",
    "partner",
    "partner_email",
    "contact_email",
    "user_active",
    "token_generation",
    "manager_active",
]  # the names of _mail_facts' columns, in order


@dataclass
class Batch:
    """One rule firing on many cases: what the actions need and what they did."""

    session: Session
    rule: RuleData
    case_ids: list[int]
    service: CaseService
    config: Config
    composer: Callable[[], Composer]  # made when the first mail needs it (the site secret)
    now: dt.datetime
    done: dict[int, list[str]] = field(default_factory=dict)
    mails: list[Outgoing] = field(default_factory=list)

    def note(self, case_ids: list[int], text: str) -> None:
        for cid in case_ids:
            self.done.setdefault(cid, []).append(text)


def set_state(batch: Batch, value: str) -> None:
    moved = batch.service.bulk_transition(batch.case_ids, BUTTONS[value])
    batch.note(moved, f"state → {value}")


def move_section(batch: Batch, value: str) -> None:
    section = Directory(batch.session).section(value)
    batch.note(batch.service.bulk_move(batch.case_ids, section), f"section → {section.name}")


def assign_user(batch: Batch, value: str) -> None:
    user = Directory(batch.session).user(value)
    batch.note(batch.service.bulk_assign(batch.case_ids, user), f"responsible → {user.login}")


def set_priority(batch: Batch, value: str) -> None:
    batch.note(batch.service.bulk_set_priority(batch.case_ids, value), f"priority → {value}")


def add_watchers(batch: Batch, value: list[str]) -> None:
    added = batch.service.bulk_watch(batch.case_ids, value)
    batch.note(added, f"watchers + {', '.join(value)}")


def remind_responsible(batch: Batch, value: bool) -> None:
    if value:
        _queue_mails(batch, mail.TEMPLATE_REMINDER, ["responsible"], "reminder", "responsible")


def remind_partner(batch: Batch, value: bool) -> None:
    if value:
        _queue_mails(batch, mail.TEMPLATE_REMINDER, ["partner"], "reminder", "partner")


def send_mail(batch: Batch, value: dict[str, Any]) -> None:
    _queue_mails(batch, value["template"], value["to"], "rule", "", value.get("subject"))


ACTIONS: list[tuple[str, Callable[[Batch, Any], None]]] = [
    ("set_state", set_state),
    ("section", move_section),
    ("user", assign_user),
    ("priority", set_priority),
    ("add_watchers", add_watchers),
    ("remind_responsible", remind_responsible),
    ("remind_partner", remind_partner),
    ("mail", send_mail),
]


def fire(
    session: Session,
    rule: RuleData,
    case_ids: list[int],
    *,
    config: Config,
    composer: Callable[[], Composer],
    now: dt.datetime,
    depth: int,
    due: dict[int, dt.datetime] | None = None,
    events: EventSink | None = None,
) -> dict[int, list[str]]:
    """Run `rule`'s actions on the cases; returns what was done per case."""
    actor = Actor(label=f"rule:{rule.name}", kind="rule", rule_id=rule.id)
    service = CaseService(session, actor, now=lambda: now, depth=depth, events=events)
    batch = Batch(session, rule, case_ids, service, config, composer, now)
    service.bulk_history([(cid, "rule", _fired_line(rule, cid, due)) for cid in case_ids])
    for key, action in ACTIONS:
        if key in rule.then:
            action(batch, rule.then[key])
    if batch.mails:
        queued = enqueue(session, batch.mails, config.outbound, automatic=True, now=now)
        for item in queued:
            batch.note([item.case_id or 0], f"{item.kind} mail to {', '.join(item.recipients)}")
    for cid in case_ids:
        log.debug(
            "rule '%s' fired on case %d: %s", rule.name, cid, "; ".join(batch.done.get(cid, []))
        )
    return batch.done


def _fired_line(rule: RuleData, case_id: int, due: dict[int, dt.datetime] | None) -> str:
    when = f" (due {due[case_id].isoformat()})" if due and case_id in due else ""
    return f"rule '{rule.name}' fired{when}"


def _queue_mails(
    batch: Batch,
    template: str,
    to: list[str],
    kind: str,
    who: str,
    subject: str | None = None,
) -> None:
    """Render `template` for every case of the batch and collect the messages."""
    facts = _mail_facts(batch.session, batch.case_ids)
    watchers = _watchers(batch.session, batch.case_ids) if "watchers" in to else {}
    files = (
        _case_files(
            batch.session,
            batch.case_ids,
            batch.config.processing.max_attachment_size,
            batch.config.security.internal_domains,
        )
        if batch.rule.then.get("attach_history") and who == "partner"
        else {}
    )
    composer = batch.composer()
    disabled = set(
        batch.session.scalars(select(func.lower(User.email)).where(User.active.is_(False)))
    )
    insiders = Insiders.load(batch.session, batch.config.security.internal_domains)
    for cid in batch.case_ids:
        case = facts.get(cid)
        if case is None:
            continue
        everyone = [
            r for r in _recipients(to, case, watchers.get(cid, [])) if r.lower() not in disabled
        ]
        if not everyone:
            log.info("rule '%s': case %d has no address for %s", batch.rule.name, cid, to)
            continue
        mail_of = (template, to, kind, who, subject)
        for recipients in audiences(everyone, insiders):  # outsiders never see our addresses
            _queue_one(batch, composer, mail_of, case, recipients, files.get(cid, []))


def _queue_one(
    batch: Batch,
    composer: Composer,
    mail_of: tuple[str, list[str], str, str, str | None],
    case: dict[str, Any],
    recipients: list[str],
    attached: list[mail.Attached],
) -> None:
    """One rule mail about `case` to one audience; `mail_of` is (template, to, kind, who,
    subject) as the rule says."""
    template, to, kind, who, subject = mail_of
    to_staff = to == ["responsible"] and bool(case["user_active"])
    message = mail.build(
        composer,
        case=_mail_case(case),
        to=recipients,
        template=template,
        context={
            "case": case,
            "rule": batch.rule.name,
            "who": who,
            "attached": [a.filename for a in attached],
        },
        rule_name=batch.rule.name,
        subject=subject,
        token_user=case["user_id"] if to_staff else None,
        token_generation=case["token_generation"] or 0,
        attachments=attached,
    )
    user_id = case["user_id"] if to_staff else None
    batch.mails.append(Outgoing(message, recipients, case["id"], kind, user_id))


def _mail_case(case: dict[str, Any]) -> mail.MailCase:
    """The Composer's view of a case (headers), from the batch's facts row."""
    return mail.MailCase(
        id=case["id"],
        subject=case["subject"],
        state=case["state"],
        priority=case["rank"],
        section=case["section"],
        section_email=case["section_email"] or "",
        partner=case["partner"],
        email_from=case["email_from"],
        user=case["user"],
    )


def _recipients(to: list[str], case: dict[str, Any], watchers: list[str]) -> list[str]:
    found: list[str] = []
    for item in to:
        if item == "responsible":  # a disabled user gets no mail: the manager does
            user = case["user_email"] if case["user_active"] else None
            found.append(user or (case["manager_email"] if case["manager_active"] else "") or "")
        elif item == "partner":
            found.append(case["email_from"] or case["contact_email"] or case["partner_email"] or "")
        elif item == "watchers":
            found.extend(watchers)
        else:
            found.append(item)
    return list(dict.fromkeys(a for a in found if a))


def _mail_facts(session: Session, case_ids: list[int]) -> dict[int, dict[str, Any]]:
    """What the templates and addresses need, for the whole batch in one query."""
    manager = aliased(User)
    query = (
        select(
            Case.id,
            Case.subject,
            Case.state,
            Case.priority,
            Case.description,
            Case.email_from,
            Case.user_id,
            Section.name,
            Section.email,
            User.login,
            User.email,
            manager.email,
            Partner.name,
            Partner.email,
            Contact.email,
            User.active,
            User.token_generation,
            manager.active,
        )
        .join(Section, Section.id == Case.section_id)
        .outerjoin(User, User.id == Case.user_id)
        .outerjoin(manager, manager.id == Section.manager_id)
        .outerjoin(Partner, Partner.id == Case.partner_id)
        .outerjoin(Contact, Contact.id == Case.contact_id)
        .where(Case.id.in_(case_ids))
    )
    keys = MAIL_FACTS
    facts = {}
    for row in session.execute(query):
        fact = dict(zip(keys, row, strict=True))
        fact["rank"] = fact["priority"]  # 1 = highest, for the X-Priority header
        fact["priority"] = PRIORITY_NAMES.get(fact["priority"], fact["priority"])
        facts[row[0]] = fact
    return facts


def _watchers(session: Session, case_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    query = select(Watcher.case_id, Watcher.email).where(Watcher.case_id.in_(case_ids))
    for cid, email in session.execute(query.order_by(Watcher.id)):
        found.setdefault(cid, []).append(email)
    return found


def _case_files(
    session: Session, case_ids: list[int], limit: int, internal_domains: tuple[str, ...] = ()
) -> dict[int, list[mail.Attached]]:
    """What "remind the partner, attaching the history" attaches, for the whole batch.

    The conversation (the messages in and out, not internal notes or changes:
    the partner reads it) as `case-ID-history.txt`, then the case's files while
    their total stays under `limit` bytes; files left out are named in the text.
    An internal author is shown by name, never by address (issue 12 item 14).
    """
    insiders = Insiders.load(session, internal_domains)
    names = {e.lower(): n for e, n in session.execute(select(User.email, User.name))}

    def shown(author: str) -> str:
        return names.get(author.lower(), "staff") if author in insiders else author

    lines: dict[int, list[str]] = {}
    query = (
        select(History.case_id, History.at, History.author, History.subject, History.body)
        .where(History.case_id.in_(case_ids), History.kind.in_(MESSAGE_KINDS))
        .order_by(History.id)
    )
    for cid, at, author, subject, body in session.execute(query):
        head = f"--- {at:%Y-%m-%d %H:%M} {shown(author)}" + (f": {subject}" if subject else "")
        lines.setdefault(cid, []).extend([head, (body or "").rstrip(), ""])
    found: dict[int, list[mail.Attached]] = {}
    used: dict[int, int] = {}
    skipped: dict[int, list[str]] = {}
    files = select(
        Attachment.case_id, Attachment.filename, Attachment.content_type, Attachment.data
    ).where(Attachment.case_id.in_(case_ids), Attachment.data.is_not(None))
    for cid, filename, content_type, data in session.execute(files.order_by(Attachment.id)):
        if used.get(cid, 0) + len(data) > limit:
            skipped.setdefault(cid, []).append(filename)
            continue
        used[cid] = used.get(cid, 0) + len(data)
        found.setdefault(cid, []).append(mail.Attached(filename, content_type, data))
    for cid in case_ids:
        text = lines.get(cid, ["(no messages yet)", ""])
        if skipped.get(cid):
            text.append(f"Files too large to attach: {', '.join(skipped[cid])}")
        history = mail.Attached(
            f"case-{cid}-history.txt", "text/plain", "\n".join(text).encode("utf-8")
        )
        found[cid] = [history, *found.get(cid, [])]
    return found
