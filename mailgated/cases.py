"""The case lifecycle: the only code that changes a case.

Every change goes through CaseService, writes a history entry with author and
time, bumps the case's update and last-action times, and is announced as a
CaseEvent to the listeners (the rules engine) inside the same transaction.
The allowed state moves are data (TRANSITIONS), so an illegal one is refused
with a line that says what the case's state is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.errors import IllegalTransition, Invalid, NotFound
from mailgated.models import (
    PRIORITIES,
    PRIORITY_NAMES,
    Case,
    Category,
    Contact,
    History,
    Partner,
    Rule,
    Section,
    State,
    User,
    Watcher,
    utcnow,
)


@dataclass(frozen=True)
class Actor:
    """Who makes a change; becomes the history entry's author."""

    label: str
    user_id: int | None = None
    kind: str = "system"  # user | system | rule | mail
    rule_id: int | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(label="system")

    @classmethod
    def for_user(cls, user: User) -> Actor:
        return cls(label=user.login, user_id=user.id, kind="user")

    @classmethod
    def rule(cls, rule: Rule) -> Actor:
        return cls(label=f"rule:{rule.name}", kind="rule", rule_id=rule.id)

    @classmethod
    def mail(cls, address: str, user: User | None = None) -> Actor:
        return cls(label=address, user_id=user.id if user else None, kind="mail")


@dataclass(frozen=True)
class CaseEvent:
    """What happened to a case; the rules engine reacts to these."""

    case_id: int
    kind: str  # create | state | escalate | message | change
    state_from: str | None
    state_to: str | None
    actor: Actor
    depth: int


Listener = Callable[[Session, CaseEvent, "CaseService"], None]
EVENT_LISTENERS: list[Listener] = []

# button -> (states it may be pressed in, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[State, ...], State]] = {
    "open": ((State.DRAFT, State.PENDING, State.CLOSED), State.OPEN),
    "pending": ((State.DRAFT, State.OPEN), State.PENDING),
    "close": ((State.DRAFT, State.OPEN, State.PENDING), State.CLOSED),
    "cancel": ((State.DRAFT, State.OPEN, State.PENDING), State.CANCELLED),
    "reset": ((State.OPEN, State.PENDING, State.CLOSED, State.CANCELLED), State.DRAFT),
}

MONEY_FIELDS = {"revenue": "planned_revenue", "cost": "planned_cost"}


def parse_priority(value: str | int) -> int:
    if isinstance(value, int) and value in PRIORITY_NAMES:
        return value
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return PRIORITIES[value.strip().lower()]
    names = ", ".join(PRIORITIES)
    raise Invalid(f"unknown priority {value!r}: use one of {names}")


class CaseService:
    def __init__(
        self,
        session: Session,
        actor: Actor,
        now: Callable[[], dt.datetime] = utcnow,
        depth: int = 0,
    ) -> None:
        self.session = session
        self.actor = actor
        self.now = now
        self.depth = depth

    # reading ---------------------------------------------------------------
    def get(self, case_id: int) -> Case:
        case = self.session.get(Case, case_id)
        if case is None:
            raise NotFound(f"no case with ID {case_id}")
        return case

    # creating ----------------------------------------------------------------
    def create(
        self,
        section: Section,
        subject: str,
        description: str = "",
        *,
        category: Category | None = None,
        priority: str | int = "normal",
        partner: Partner | None = None,
        contact: Contact | None = None,
        email: str | None = None,
        user: User | None = None,
        deadline: dt.datetime | None = None,
        date: dt.datetime | None = None,
        duration: float | None = None,
        revenue: float | None = None,
        cost: float | None = None,
        probability: float | None = None,
        watchers: Iterable[str] = (),
    ) -> Case:
        """A new case in `draft`; the category's probability and the contact's e-mail fill gaps."""
        subject = " ".join(subject.split())
        if not subject:
            raise Invalid("a case needs a subject")
        self._check_category(section, category)
        contact, partner = self._check_contact(contact, partner)
        now = self.now()
        case = Case(
            subject=subject[:1000],
            description=description,
            section=section,
            category=category,
            priority=parse_priority(priority),
            partner=partner,
            contact=contact,
            email_from=(email or (contact.email if contact else None) or None),
            user=user,
            state=State.DRAFT.value,
            created_at=now,
            updated_at=now,
            last_action_at=now,
            deadline=deadline,
            date=date,
            duration=_non_negative("duration", duration),
            planned_revenue=revenue,
            planned_cost=cost,
            probability=_probability(
                probability
                if probability is not None
                else (category.probability if category else None)
            ),
            message_count=0,
        )
        self.session.add(case)
        self.session.flush()
        for address in watchers:
            self._add_watcher(case, address)
        self._history(case, "state", f"created in section {section.name} (draft)")
        self._emit(case, "create", None, State.DRAFT.value)
        return case

    # state -----------------------------------------------------------------
    def open(self, case: Case) -> Case:
        """Open the case; the acting user takes it when nobody has it (as in the seed)."""
        if case.user_id is None and self.actor.user_id is not None:
            self.assign(case, self.session.get(User, self.actor.user_id))
        return self._move(case, "open")

    def pending(self, case: Case) -> Case:
        return self._move(case, "pending")

    def close(self, case: Case) -> Case:
        return self._move(case, "close")

    def cancel(self, case: Case) -> Case:
        return self._move(case, "cancel")

    def reset(self, case: Case) -> Case:
        return self._move(case, "reset")

    def _move(self, case: Case, button: str) -> Case:
        allowed, target = TRANSITIONS[button]
        before = case.state
        if before not in allowed:
            raise IllegalTransition(
                f"cannot {button} case {case.id}: it is {before}"
                + (f" (allowed from {', '.join(allowed)})" if before != target else "")
            )
        now = self.now()
        case.state = target.value
        # the one place that sets (and clears) the close time
        case.closed_at = now if target is State.CLOSED else None
        self._history(case, "state", f"{before} → {target.value}")
        self._emit(case, "state", before, target.value)
        return case

    def escalate(self, case: Case) -> Case:
        """Move to the parent section, handing the case to its manager (or to nobody)."""
        if case.state not in (State.DRAFT, State.OPEN, State.PENDING):
            raise IllegalTransition(f"cannot escalate case {case.id}: it is {case.state}")
        parent = case.section.parent
        if parent is None:
            raise IllegalTransition(
                f"cannot escalate case {case.id}: section '{case.section.name}' has no parent"
            )
        before_section = case.section.name
        case.section = parent
        case.user = parent.manager
        if case.category is not None and case.category.section_id != parent.id:
            case.category = None
        who = parent.manager.login if parent.manager else "nobody"
        self._history(
            case, "section", f"escalated from {before_section} to {parent.name}; responsible: {who}"
        )
        self._emit(case, "escalate", case.state, "escalate")
        return case

    # fields ----------------------------------------------------------------
    def assign(self, case: Case, user: User | None) -> Case:
        before = case.user.login if case.user else "nobody"
        case.user = user
        self._history(case, "user", f"responsible: {before} → {user.login if user else 'nobody'}")
        self._emit(case, "change", case.state, case.state)
        return case

    def move(self, case: Case, section: Section) -> Case:
        if section.id == case.section_id:
            return case
        before = case.section.name
        case.section = section
        if case.category is not None and case.category.section_id != section.id:
            case.category = None
        self._history(case, "section", f"section: {before} → {section.name}")
        self._emit(case, "change", case.state, case.state)
        return case

    def set_priority(self, case: Case, priority: str | int) -> Case:
        value = parse_priority(priority)
        if value == case.priority:
            return case
        before = PRIORITY_NAMES[case.priority]
        case.priority = value
        self._history(case, "priority", f"priority: {before} → {PRIORITY_NAMES[value]}")
        self._emit(case, "change", case.state, case.state)
        return case

    def set_fields(self, case: Case, **changes: Any) -> Case:
        """Change plain fields (category, partner, contact, email, dates, money, probability)."""
        lines: list[str] = []
        if "priority" in changes:
            self.set_priority(case, changes.pop("priority"))
        if "partner" in changes or "contact" in changes:
            contact, partner = self._check_contact(
                changes.pop("contact", case.contact), changes.pop("partner", case.partner)
            )
            if partner is not case.partner:
                lines.append(f"partner: {_show(case.partner)} → {_show(partner)}")
                case.partner = partner
            if contact is not case.contact:
                lines.append(f"contact: {_show(case.contact)} → {_show(contact)}")
                case.contact = contact
                if contact is not None and contact.email and "email" not in changes:
                    changes["email"] = contact.email
        if "category" in changes:
            category = changes.pop("category")
            self._check_category(case.section, category)
            if category is not case.category:
                lines.append(f"category: {_show(case.category)} → {_show(category)}")
                case.category = category
        for key, value in changes.items():
            attr = {"email": "email_from", **MONEY_FIELDS}.get(key, key)
            if attr not in {
                "email_from",
                "deadline",
                "date",
                "duration",
                "planned_revenue",
                "planned_cost",
                "probability",
                "description",
                "subject",
            }:
                raise Invalid(f"case field '{key}' cannot be set")
            if attr == "probability":
                value = _probability(value)
            if attr == "duration":
                value = _non_negative("duration", value)
            if getattr(case, attr) != value:
                lines.append(f"{key}: {_show(getattr(case, attr))} → {_show(value)}")
                setattr(case, attr, value)
        if lines:
            self._history(case, "change", "; ".join(lines))
            self._emit(case, "change", case.state, case.state)
        return case

    def watch(self, case: Case, address: str) -> Case:
        if self._add_watcher(case, address):
            self._history(case, "change", f"watcher added: {address.strip().lower()}")
            self._emit(case, "change", case.state, case.state)
        return case

    def unwatch(self, case: Case, address: str) -> Case:
        address = address.strip().lower()
        for watcher in list(case.watchers):
            if watcher.email == address:
                case.watchers.remove(watcher)
                self._history(case, "change", f"watcher removed: {address}")
                self._emit(case, "change", case.state, case.state)
                return case
        raise NotFound(f"{address} is not a watcher of case {case.id}")

    def _add_watcher(self, case: Case, address: str) -> bool:
        address = address.strip().lower()
        if "@" not in address:
            raise Invalid(f"'{address}' is not an e-mail address")
        if any(w.email == address for w in case.watchers):
            return False
        case.watchers.append(Watcher(email=address))
        self.session.flush()
        return True

    # history -----------------------------------------------------------------
    def note(self, case: Case, body: str) -> History:
        """The seed's "Historize": an internal note."""
        if not body.strip():
            raise Invalid("a note needs some text")
        entry = self._history(case, "note", body)
        return entry

    def historize(self, case: Case, kind: str, body: str, **fields: Any) -> History:
        """A free history line (a rule firing, an automatic mail, an unverified sender…)."""
        return self._history(case, kind, body, **fields)

    def record_message(
        self,
        case: Case,
        *,
        direction: str,
        body: str,
        email_from: str | None = None,
        email_to: str | None = None,
        email_cc: str | None = None,
        subject: str | None = None,
        message_id: str | None = None,
        kind: str | None = None,
    ) -> History:
        """A mail in or out of the case: historized, counted, and announced to the rules."""
        entry = self._history(
            case,
            kind or ("email_in" if direction == "in" else "email_out"),
            body,
            email_from=email_from,
            email_to=email_to,
            email_cc=email_cc,
            subject=subject,
            message_id=message_id,
        )
        case.message_count = (case.message_count or 0) + 1
        self._emit(case, "message", case.state, case.state)
        return entry

    # internals ---------------------------------------------------------------
    def _history(self, case: Case, kind: str, body: str, **fields: Any) -> History:
        now = self.now()
        case.updated_at = now
        case.last_action_at = now
        entry = History(
            case_id=case.id,
            at=now,
            kind=kind,
            author=self.actor.label,
            user_id=self.actor.user_id,
            rule_id=self.actor.rule_id,
            body=body,
            **fields,
        )
        self.session.add(entry)
        self.session.flush()
        return entry

    def _emit(self, case: Case, kind: str, before: str | None, after: str | None) -> None:
        event = CaseEvent(case.id, kind, before, after, self.actor, self.depth)
        for listener in list(EVENT_LISTENERS):
            listener(self.session, event, self)

    def _check_category(self, section: Section, category: Category | None) -> None:
        if category is not None and category.section_id != section.id:
            raise Invalid(
                f"category '{category.name}' belongs to section '{category.section.name}',"
                f" not '{section.name}'"
            )

    def _check_contact(
        self, contact: Contact | None, partner: Partner | None
    ) -> tuple[Contact | None, Partner | None]:
        if contact is not None:
            if partner is not None and contact.partner_id != partner.id:
                raise Invalid(f"contact '{contact.name}' is not a contact of '{partner.name}'")
            partner = contact.partner
        return contact, partner


def cases_query(
    *,
    section_ids: list[int] | None = None,
    category_id: int | None = None,
    states: Iterable[str] = (),
    user_id: int | None = None,
    unassigned: bool = False,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
) -> Any:
    """The `case list` filter as one SQL query (also used by report drill-downs)."""
    query = select(Case).order_by(Case.id)
    if section_ids is not None:
        query = query.where(Case.section_id.in_(section_ids))
    if category_id is not None:
        query = query.where(Case.category_id == category_id)
    states = list(states)
    if states:
        query = query.where(Case.state.in_(states))
    if user_id is not None:
        query = query.where(Case.user_id == user_id)
    if unassigned:
        query = query.where(Case.user_id.is_(None))
    if created_from is not None:
        query = query.where(Case.created_at >= created_from)
    if created_to is not None:
        query = query.where(Case.created_at < created_to)
    return query


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if hasattr(value, "name"):
        return str(value.name)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _probability(value: float | None) -> float | None:
    if value is not None and not 0 <= value <= 100:
        raise Invalid(f"probability must be between 0 and 100, not {value}")
    return value


def _non_negative(name: str, value: float | None) -> float | None:
    if value is not None and value < 0:
        raise Invalid(f"{name} cannot be negative ({value})")
    return value
