"""The rules file: TOML → validated rules, all or nothing.

    [[rule]]
    name = "Copy to an expert after 2 days"
    sequence = 10                 # rules run in sequence order (then by name)
    stop = false                  # true: no later rule runs for that case and event
    enabled = true                # absent: keep what `rule enable/disable` set
    [rule.when]                   # every criterion given must hold; absent = any
    state_from = "open"           # draft open pending closed cancelled
    state_to = "open"             # the same, or "escalate"
    section = "Support"           # with subsections = true: its sub-sections too
    category = "Fault Fix"
    user = "demo"                 # the responsible's login
    priority_min = "normal"       # by rank, inclusive: highest > high > normal > …
    priority_max = "highest"
    partner = "Agrolait"
    partner_category = "Support Contract"      # includes "Support Contract / Gold"
    trigger = "created"           # created | last_action | deadline | date
    delay = "2d"                  # 30m 4h 2d 1w 1mo; "-1d" = one day before
    min_messages = 3
    subject_regex = "(?i)urgent"
    message_regex = "(?i)invoice"
    [rule.then]                   # run in this order
    set_state = "pending"         # draft open pending closed cancelled (through the lifecycle)
    section = "Support Level 2"
    user = "expert"
    priority = "high"
    add_watchers = ["expert@example.com"]
    remind_responsible = true
    remind_partner = true
    attach_history = true         # the reminder to the partner carries the case history
    mail = { template = "rule_reminder.txt", to = ["partner", "watchers", "boss@example.com"] }

A rule with a `trigger` is a timer rule (fired by the sweep when due); one
without is an event rule (fired on creation, state changes, escalation and
new messages). `validate` reports every problem as "rule NAME: KEY: what";
`load` changes nothing unless the whole file is valid.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailgated.directory import Directory
from mailgated.errors import MailgatedError
from mailgated.models import PRIORITIES, Rule, RuleFiring, utcnow
from mailgated.rules.delay import parse_delay

STATES = ("draft", "open", "pending", "closed", "cancelled")
TRIGGERS = {"created", "last_action", "deadline", "date"}
RECIPIENT_WORDS = {"responsible", "partner", "watchers"}
TOP_KEYS = {"name", "sequence", "stop", "enabled", "when", "then"}


class RulesFileError(MailgatedError):
    """A rules file with problems; `errors` lists every one (rule name and key)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(
            f"{len(errors)} error(s) in the rules file, nothing changed:\n  " + "\n  ".join(errors)
        )


@dataclass
class RuleSpec:
    name: str
    sequence: int = 10
    stop: bool = False
    enabled: bool | None = None
    when: dict[str, Any] = field(default_factory=dict)
    then: dict[str, Any] = field(default_factory=dict)


Check = Callable[[Any], str | None]


def _is(kind: type, what: str) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        return None if ok else f"must be {what}, not {value!r}"

    return check


def _one_of(choices: tuple[str, ...] | set[str] | list[str]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(sorted(choices))}"

    return check


def _regex(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {value!r}"
    try:
        re.compile(value)
    except re.error as exc:
        return f"bad regular expression: {exc}"
    return None


def _delay(value: Any) -> str | None:
    try:
        parse_delay(str(value))
    except MailgatedError as exc:
        return str(exc)
    return None


def _addresses(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(a, str) and "@" in a for a in value):
        return "must be a list of e-mail addresses"
    return None


def _non_negative(value: Any) -> str | None:
    return _is(int, "an integer")(value) or (None if value >= 0 else "cannot be negative")


WHEN: dict[str, Check] = {
    "state_from": _one_of(STATES),
    "state_to": _one_of((*STATES, "escalate")),
    "section": _is(str, "a section name"),
    "subsections": _is(bool, "true or false"),
    "category": _is(str, "a category name"),
    "user": _is(str, "a user login"),
    "priority_min": _one_of(tuple(PRIORITIES)),
    "priority_max": _one_of(tuple(PRIORITIES)),
    "partner": _is(str, "a partner name"),
    "partner_category": _is(str, "a partner category path"),
    "trigger": _one_of(TRIGGERS),
    "delay": _delay,
    "min_messages": _non_negative,
    "subject_regex": _regex,
    "message_regex": _regex,
}

THEN: dict[str, Check] = {
    "set_state": _one_of(STATES),
    "section": _is(str, "a section name"),
    "user": _is(str, "a user login"),
    "priority": _one_of(tuple(PRIORITIES)),
    "add_watchers": _addresses,
    "remind_responsible": _is(bool, "true or false"),
    "remind_partner": _is(bool, "true or false"),
    "attach_history": _is(bool, "true or false"),
    "mail": _is(dict, "a table {template = …, to = […]}"),
}


def parse_file(path: str | Path) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise MailgatedError(f"rules file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError([f"{path}: not valid TOML: {exc}"]) from None


def validate(
    session: Session, data: dict[str, Any], template_check: Callable[[str], str | None]
) -> list[RuleSpec]:
    """Every rule checked against the schema and the directory; raises with all errors."""
    errors: list[str] = [f"unknown top-level key '{k}'" for k in data if k != "rule"]
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulesFileError(["'rule' must be an array of tables ([[rule]])"])
    specs, seen = [], set()
    for index, raw in enumerate(raw_rules):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = f"rule '{name}'" if isinstance(name, str) and name.strip() else f"rule #{index + 1}"
        say = errors.append
        if not isinstance(name, str) or not name.strip():
            say(f"{label}: name: every rule needs a name")
            continue
        if name in seen:
            say(f"{label}: name: defined twice")
        seen.add(name)
        spec = RuleSpec(name=name.strip())
        for key in raw:
            if key not in TOP_KEYS:
                say(f"{label}: {key}: unknown key")
        for key, kind, what in (("sequence", int, "an integer"), ("stop", bool, "true or false")):
            if key in raw and (problem := _is(kind, what)(raw[key])):
                say(f"{label}: {key}: {problem}")
        spec.sequence = raw.get("sequence", 10)
        spec.stop = raw.get("stop", False)
        spec.enabled = raw.get("enabled")
        spec.when = _table(raw, "when", WHEN, label, say)
        spec.then = _table(raw, "then", THEN, label, say)
        _check_meaning(session, spec, label, say, template_check)
        specs.append(spec)
    if errors:
        raise RulesFileError(errors)
    return specs


def _table(
    raw: dict[str, Any], key: str, schema: dict[str, Check], label: str, say: Callable[[str], None]
) -> dict[str, Any]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        say(f"{label}: {key}: must be a table ([rule.{key}])")
        return {}
    for name, value in table.items():
        check = schema.get(name)
        problem = check(value) if check else f"unknown key (known: {', '.join(schema)})"
        if problem:
            say(f"{label}: {key}.{name}: {problem}")
    return dict(table)


def _check_meaning(
    session: Session,
    spec: RuleSpec,
    label: str,
    say: Callable[[str], None],
    template_check: Callable[[str], str | None],
) -> None:
    """The checks that need the directory: names that must exist, consistent ranges."""
    directory = Directory(session)
    when, then = spec.when, spec.then

    def exists(key: str, lookup: Callable[[], object]) -> None:
        try:
            lookup()
        except MailgatedError as exc:
            say(f"{label}: {key}: {exc}")

    for table, prefix in ((when, "when"), (then, "then")):
        section, user = table.get("section"), table.get("user")
        if isinstance(section, str):
            exists(f"{prefix}.section", partial(directory.section, section))
        if isinstance(user, str):
            exists(f"{prefix}.user", partial(directory.user, user))
    if isinstance(when.get("category"), str):
        exists("when.category", lambda: _category_exists(session, when))
    if isinstance(when.get("partner"), str):
        exists("when.partner", lambda: directory.partner(when["partner"]))
    if isinstance(when.get("partner_category"), str):
        exists(
            "when.partner_category", lambda: directory.partner_category(when["partner_category"])
        )
    low, high = when.get("priority_min"), when.get("priority_max")
    if low in PRIORITIES and high in PRIORITIES and PRIORITIES[low] < PRIORITIES[high]:
        say(f"{label}: when.priority_min: '{low}' is above priority_max '{high}'")
    if "delay" in when and "trigger" not in when:
        say(f"{label}: when.delay: a delay needs a trigger (created, last_action, deadline, date)")
    if "trigger" in when:
        _check_timer_states(when, label, say)
    if not then:
        say(f"{label}: then: the rule does nothing (no actions)")
    if isinstance(then.get("mail"), dict):
        _check_mail(then["mail"], label, say, template_check)


def _check_timer_states(when: dict[str, Any], label: str, say: Callable[[str], None]) -> None:
    """A timer rule sees the case as it is (before = after): other state pairs never fire."""
    given = {k: when[k] for k in ("state_from", "state_to") if isinstance(when.get(k), str)}
    if len(set(given.values())) > 1:
        say(
            f"{label}: when.state_to: a timer rule sees the case's current state, so state_from"
            f" and state_to must be equal ('{given['state_from']}' ≠ '{given['state_to']}')"
        )
    for key, state in given.items():
        if state in ("closed", "cancelled", "escalate"):
            say(f"{label}: when.{key}: a timer rule never fires on '{state}' (only active cases)")


def _category_exists(session: Session, when: dict[str, Any]) -> None:
    from mailgated.models import Category

    query = select(Category.id).where(Category.name == when["category"])
    if isinstance(when.get("section"), str):
        directory = Directory(session)
        section = directory.section(when["section"])
        tree = when.get("subsections") is True
        ids = directory.subtree_ids(section) if tree else [section.id]
        query = query.where(Category.section_id.in_(ids))
    if session.scalar(query.limit(1)) is None:
        where = f" in section '{when['section']}'" if when.get("section") else ""
        where += " or its sub-sections" if where and when.get("subsections") is True else ""
        raise MailgatedError(f"no category '{when['category']}'{where}")


def _check_mail(
    mail: dict[str, Any],
    label: str,
    say: Callable[[str], None],
    template_check: Callable[[str], str | None],
) -> None:
    for key in mail:
        if key not in {"template", "to", "subject"}:
            say(f"{label}: then.mail.{key}: unknown key (known: template, to, subject)")
    if "subject" in mail and not isinstance(mail["subject"], str):
        say(f"{label}: then.mail.subject: must be a string, not {mail['subject']!r}")
    template = mail.get("template")
    if not isinstance(template, str):
        say(f"{label}: then.mail.template: a template name is needed")
    elif problem := template_check(template):
        say(f"{label}: then.mail.template: {problem}")
    to = mail.get("to")
    if not isinstance(to, list) or not to:
        say(f"{label}: then.mail.to: a list of responsible, partner, watchers or addresses")
        return
    for item in to:
        if not isinstance(item, str) or (item not in RECIPIENT_WORDS and "@" not in item):
            say(f"{label}: then.mail.to: {item!r} is not responsible, partner, watchers or e-mail")


def store(session: Session, specs: list[RuleSpec]) -> dict[str, list[str]]:
    """Make the database's rules be the file's: add, update, remove (by name).

    A rule whose criteria change forgets its last sweep, so the next sweep
    fires on every case already due under the new criteria (as for a new
    rule); the firing log keeps what already fired from firing again.
    """
    existing = {r.name: r for r in session.scalars(select(Rule))}
    report: dict[str, list[str]] = {"added": [], "updated": [], "removed": [], "unchanged": []}
    for spec in specs:
        rule = existing.pop(spec.name, None)
        values = {
            "sequence": spec.sequence,
            "stop": spec.stop,
            "trigger": spec.when.get("trigger"),
            "delay": spec.when.get("delay"),
            "when": spec.when,
            "then": spec.then,
        }
        if rule is None:
            rule = Rule(name=spec.name, active=True, updated_at=utcnow(), **values)
            session.add(rule)
            report["added"].append(spec.name)
        elif any(getattr(rule, k) != v for k, v in values.items()):
            if rule.when != spec.when:
                # new criteria or timing: the cases they make overdue must not hide behind the
                # old watermark; the next sweep looks at every due case (the log keeps it once)
                rule.swept_at = None
            for key, value in values.items():
                setattr(rule, key, value)
            rule.updated_at = utcnow()
            report["updated"].append(spec.name)
        else:
            report["unchanged"].append(spec.name)
        if spec.enabled is not None:
            set_active(rule, spec.enabled)
    for name, rule in existing.items():
        session.execute(delete(RuleFiring).where(RuleFiring.rule_id == rule.id))
        session.delete(rule)
        report["removed"].append(name)
    session.flush()
    return report


def set_active(rule: Rule, active: bool) -> None:
    """Enable or disable; a timer rule enabled again catches up like a new rule.

    While it was off, cases fell due without being looked at; forgetting its
    last sweep makes the next sweep fire on every case due now (the firing
    log keeps those it already fired on from firing twice).
    """
    if active and not rule.active:
        rule.swept_at = None
    rule.active = active
