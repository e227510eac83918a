"""A rule's criteria → SQL filters on `cases` (plus the regexes, applied in Python after).

Names in the stored rule (section, user, partner, partner category…) are
resolved to ids once per compile, so the filters are plain indexed
comparisons. A section with `subsections = true` covers its whole subtree; a
partner category covers its sub-categories ("Support Contract" holds for
"Support Contract / Gold"). Priorities compare by rank: stored 1..5 with
1 = highest, so "at least high" is `priority <= 2`.

Regular expressions on the subject and the latest message cannot be indexed;
they run in Python on the cases the SQL already narrowed down.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from mailgated.db import chunks
from mailgated.directory import Directory
from mailgated.models import (
    ACTIVE_STATES,
    PRIORITIES,
    Case,
    Category,
    History,
    PartnerCategory,
    PartnerCategoryLink,
    Rule,
)
from mailgated.rules.delay import Delay, parse_delay

TRIGGER_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "created": Case.created_at,
    "last_action": Case.last_action_at,
    "deadline": Case.deadline,
    "date": Case.date,
}
MESSAGE_KINDS = ("email_in", "email_out")


@dataclass(frozen=True)
class RuleData:
    """A rule as plain data, detached from any session (cached for a transaction)."""

    id: int
    name: str
    sequence: int
    stop: bool
    when: dict[str, Any]
    then: dict[str, Any]
    swept_at: dt.datetime | None

    @classmethod
    def of(cls, rule: Rule) -> RuleData:
        return cls(
            rule.id, rule.name, rule.sequence, rule.stop, rule.when, rule.then, rule.swept_at
        )

    @property
    def trigger(self) -> str | None:
        return self.when.get("trigger")


@dataclass
class Compiled:
    """A rule ready to test: SQL filters, state conditions, regexes, trigger."""

    rule: RuleData
    filters: list[ColumnElement[bool]] = field(default_factory=list)
    subject_re: re.Pattern[str] | None = None
    message_re: re.Pattern[str] | None = None
    delay: Delay = field(default_factory=Delay)

    @property
    def timer(self) -> bool:
        return self.rule.trigger is not None

    @property
    def column(self) -> InstrumentedAttribute[Any]:
        return TRIGGER_COLUMNS[self.rule.trigger or "created"]

    def matches_event(self, state_from: str | None, state_to: str | None) -> bool:
        """The event's before/after states against state_from/state_to (absent = any)."""
        want_from, want_to = self.rule.when.get("state_from"), self.rule.when.get("state_to")
        return (want_from is None or want_from == state_from) and (
            want_to is None or want_to == state_to
        )

    def timer_states(self) -> list[str]:
        """A sweep is its own event: before = after = the case's (active) state."""
        wanted = {self.rule.when.get("state_from"), self.rule.when.get("state_to")} - {None}
        return [s.value for s in ACTIVE_STATES if not wanted or wanted == {s.value}]

    def needs_python(self) -> bool:
        return self.subject_re is not None or self.message_re is not None


def compile_rule(session: Session, rule: RuleData) -> Compiled:
    """Resolve names to ids; raises NotFound if something the rule names is gone."""
    when = rule.when
    compiled = Compiled(rule, delay=parse_delay(when.get("delay")))
    directory = Directory(session)
    add = compiled.filters.append
    section = directory.section(when["section"]) if "section" in when else None
    section_ids: list[int] = []
    if section is not None:
        section_ids = directory.subtree_ids(section) if when.get("subsections") else [section.id]
        add(Case.section_id.in_(section_ids))
    if "category" in when:
        query = select(Category.id).where(Category.name == when["category"])
        if section_ids:  # a category of that name in the section (or one of its sub-sections)
            query = query.where(Category.section_id.in_(section_ids))
        add(Case.category_id.in_(list(session.scalars(query))))
    if "user" in when:
        add(Case.user_id == directory.user(when["user"]).id)
    if "priority_min" in when:
        add(Case.priority <= PRIORITIES[when["priority_min"]])
    if "priority_max" in when:
        add(Case.priority >= PRIORITIES[when["priority_max"]])
    if "partner" in when:
        add(Case.partner_id == directory.partner(when["partner"]).id)
    if "partner_category" in when:
        add(Case.partner_id.in_(_partners_in(session, directory, when["partner_category"])))
    if "min_messages" in when:
        add(Case.message_count >= int(when["min_messages"]))
    if when.get("subject_regex"):
        compiled.subject_re = re.compile(when["subject_regex"])
    if when.get("message_regex"):
        compiled.message_re = re.compile(when["message_regex"])
    return compiled


def _partners_in(session: Session, directory: Directory, path: str) -> Any:
    """Partners in the category or any of its sub-categories (a subquery)."""
    top = directory.partner_category(path)
    categories = select(PartnerCategory.id).where(
        or_(PartnerCategory.id == top.id, PartnerCategory.path.like(f"{top.path} / %"))
    )
    return select(PartnerCategoryLink.partner_id).where(
        PartnerCategoryLink.category_id.in_(categories)
    )


def python_filter(session: Session, compiled: Compiled, case_ids: Iterable[int]) -> set[int]:
    """The cases among `case_ids` whose subject and latest message match the regexes."""
    ids = list(case_ids)
    if not compiled.needs_python() or not ids:
        return set(ids)
    kept = set(ids)
    for chunk in chunks(ids):
        if compiled.subject_re is not None:
            rows = session.execute(select(Case.id, Case.subject).where(Case.id.in_(chunk)))
            kept -= {cid for cid, subject in rows if not compiled.subject_re.search(subject or "")}
        if compiled.message_re is not None:
            bodies = latest_messages(session, chunk)
            kept -= {cid for cid in chunk if not compiled.message_re.search(bodies.get(cid, ""))}
    return kept


def latest_messages(session: Session, case_ids: list[int]) -> dict[int, str]:
    """The body of each case's latest message in or out (one query)."""
    latest = (
        select(func.max(History.id))
        .where(History.case_id.in_(case_ids), History.kind.in_(MESSAGE_KINDS))
        .group_by(History.case_id)
    )
    rows = session.execute(select(History.case_id, History.body).where(History.id.in_(latest)))
    return {cid: body or "" for cid, body in rows}
