"""The rules engine: rules on case events (same transaction) and on the timer sweep.

Event rules (no `trigger`) run on creation, state changes, escalation and new
messages. Timer rules (`trigger` + `delay`) are due when the trigger time plus
the delay is reached; each (rule, case, due time) fires once, recorded in
`rule_firings` whose unique key makes a second attempt (another daemon's
sweep, a retry) a no-op.

The sweep looks only at what fell due since the rule's previous sweep
(`rules.swept_at`): one indexed range query per rule on its trigger column, so
its cost follows the number of due cases, not of all cases, and a daemon that
was down catches up on the whole gap at its next sweep. A case can also become
eligible later without its trigger time moving — it is opened, assigned, moved
to the rule's section — and that is always a case event: on every event the
engine also fires the timer rules already overdue for that case.

Cascades are bounded: events caused by a rule are evaluated up to
`rules.max_depth`, and within one top-level change or sweep a rule fires at
most once per case, so a rule never re-triggers itself.

The cascade is an explicit object per transaction (`RulesEngine.cascade`):
whoever opens a transaction that changes cases gives it to the CaseService as
its event sink, so reading that code shows that rules run. It also holds the
transaction's compiled rules.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailgated.cases import CaseEvent, CaseService
from mailgated.config import Config
from mailgated.db import chunks
from mailgated.errors import MailgatedError
from mailgated.models import Case, Rule, RuleFiring
from mailgated.outbound.compose import Composer
from mailgated.rules import actions
from mailgated.rules.criteria import Compiled, RuleData, compile_rule, python_filter
from mailgated.rules.delay import after, before

log = logging.getLogger("mailgated.rules")

EVENT_KINDS = {"create", "state", "escalate", "message"}
BATCH = 500
# the active rules, read once per transaction (built once)
ACTIVE_RULES = select(Rule).where(Rule.active.is_(True)).order_by(Rule.sequence, Rule.name)


@dataclass(frozen=True)
class Firing:
    """One firing, for `rule sweep` output and the log."""

    rule: str
    case_id: int
    due_at: dt.datetime | None
    done: list[str]


@dataclass
class Reaction:
    """The events of one top-level change or sweep, processed in rounds."""

    now: dt.datetime
    queue: list[CaseEvent] = field(default_factory=list)
    fired: dict[int, set[int]] = field(default_factory=dict)  # case -> rules fired on it
    firings: list[Firing] = field(default_factory=list)


class Cascade:
    """The rules' side of one transaction: the CaseService's event sink.

    The first event of a top-level change is processed at once, in rounds; the
    events the rules' own actions cause meanwhile join the current reaction.
    """

    def __init__(self, engine: RulesEngine, session: Session) -> None:
        self.engine = engine
        self.session = session
        self.reaction: Reaction | None = None
        self._rules: list[Compiled] | None = None

    def announce(self, event: CaseEvent, service: CaseService) -> None:
        if self.reaction is not None:
            self.reaction.queue.append(event)
            return
        self.reaction = Reaction(now=service.now(), queue=[event])
        try:
            self.engine.react(self)
        finally:
            self.reaction = None

    def rules(self) -> list[Compiled]:
        """The active rules, compiled once per transaction."""
        if self._rules is None:
            found = [
                self.engine.compile(self.session, RuleData.of(r))
                for r in self.session.scalars(ACTIVE_RULES)
            ]
            self._rules = [c for c in found if c is not None]
        return list(self._rules)


class RulesEngine:
    """The configuration and the Composer (made on the first rule mail), shared by cascades."""

    def __init__(self, config: Config, composer: Callable[[], Composer]) -> None:
        self.config = config
        self.composer = composer  # called on the first rule mail only
        self.max_depth = config.rules.max_depth

    def cascade(self, session: Session) -> Cascade:
        """The event sink of one transaction: rules run on every case change made in it."""
        return Cascade(self, session)

    # events -----------------------------------------------------------------
    def react(self, cascade: Cascade) -> None:
        reaction = cascade.reaction
        assert reaction is not None
        while reaction.queue:
            events = [e for e in reaction.queue if e.depth < self.max_depth]
            reaction.queue = []
            if events:
                self._round(cascade, reaction, events)

    def _round(self, cascade: Cascade, reaction: Reaction, events: list[CaseEvent]) -> None:
        """Each rule, in sequence order, against this round's events (batched per rule)."""
        session = cascade.session
        stopped: set[int] = set()
        depth = max(e.depth for e in events) + 1
        for compiled in cascade.rules():
            rule = compiled.rule
            if compiled.timer:
                ids = {e.case_id for e in events}
            else:
                ids = {
                    e.case_id
                    for e in events
                    if e.kind in EVENT_KINDS and compiled.matches_event(e.state_from, e.state_to)
                }
            ids = {c for c in ids - stopped if rule.id not in reaction.fired.get(c, set())}
            if not ids:
                continue
            if compiled.timer:
                due = self._overdue(session, compiled, sorted(ids), reaction.now)
                won = _claim(session, rule, due, reaction.now)
                self._fire(cascade, compiled, won, depth, {c: due[c] for c in won})
            else:
                matched = self._matching(session, compiled, sorted(ids), timer=False)
                self._fire(cascade, compiled, matched, depth, None)
                won = matched
            if rule.stop:
                stopped.update(won)

    # the sweep --------------------------------------------------------------
    def sweep(
        self, session: Session, now: dt.datetime, mark: dt.datetime | None = None
    ) -> list[Firing]:
        """One timer sweep at `now`: fire what fell due since each rule's last sweep.

        `mark` is how far the rules' last-sweep mark may move (default `now`). A sweep
        "as if" at a future time (`rule sweep --now`) passes the real time: what it
        fired is in the firing log anyway, and cases that fall due before that future
        time but after the real one must still be found by the next real sweep.
        """
        mark = now if mark is None else min(now, mark)
        cascade = self.cascade(session)
        reaction = cascade.reaction = Reaction(now=now)
        try:
            stopped: set[int] = set()
            for rule in self._claim_timer_rules(session):
                compiled = self.compile(session, RuleData.of(rule))
                if compiled is None:
                    continue
                due = self._due(session, compiled, rule.swept_at, now, lock=True)
                due = {c: t for c, t in due.items() if c not in stopped}
                for chunk in chunks(sorted(due), BATCH):
                    won = _claim(session, compiled.rule, {c: due[c] for c in chunk}, now)
                    self._fire(cascade, compiled, won, 1, {c: due[c] for c in won})
                    if rule.stop:
                        stopped.update(won)
                    self.react(cascade)
                rule.swept_at = max(mark, rule.swept_at or mark)
        finally:
            cascade.reaction = None
        if reaction.firings:
            log.info("sweep at %s: %d firing(s)", now.isoformat(), len(reaction.firings))
        return reaction.firings

    def would_fire(
        self, session: Session, name: str, now: dt.datetime
    ) -> list[tuple[int, dt.datetime | None]]:
        """`rule test`: (case, due time) a sweep at `now` would fire, or for an event rule
        the cases that meet its criteria now (due time None). Changes nothing."""
        rule = session.scalar(select(Rule).where(Rule.name == name))
        if rule is None:
            raise MailgatedError(f"no rule named '{name}' (see `mailgated rule list`)")
        compiled = compile_rule(session, RuleData.of(rule))
        if not compiled.timer:
            return [(c, None) for c in self._matching(session, compiled, None, timer=False)]
        due = self._due(session, compiled, rule.swept_at, now)
        return sorted(self._unfired(session, compiled, due).items())

    def _claim_timer_rules(self, session: Session) -> list[Rule]:
        """Active timer rules, locked so a concurrent sweep on PostgreSQL skips them.

        FOR NO KEY UPDATE, not FOR UPDATE: a case change that fires a rule meanwhile
        writes rows referring to it (history, the firing log), and their foreign key
        checks take KEY SHARE locks, which FOR UPDATE would make wait for the whole
        sweep (and deadlock with it when the sweep then needs that case).
        """
        query = (
            select(Rule)
            .where(Rule.active.is_(True), Rule.trigger.is_not(None))
            .order_by(Rule.sequence, Rule.name)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, key_share=True)
        return list(session.scalars(query))

    # finding cases -----------------------------------------------------------
    def _due(
        self,
        session: Session,
        compiled: Compiled,
        since: dt.datetime | None,
        now: dt.datetime,
        lock: bool = False,
    ) -> dict[int, dt.datetime]:
        """Cases falling due in (since, now] that meet the criteria.

        With `lock` on PostgreSQL the sweep locks them (in id order) before it
        claims their firings: a transaction that holds one of them (a new
        message on that case) finishes first, and since it fires the overdue
        rules of its case itself, the sweep's claim then finds the firing made.
        Claiming first and locking later could deadlock with it instead.
        """
        column, delay = compiled.column, compiled.delay
        query = select(Case.id, column).where(
            Case.state.in_(compiled.timer_states()),
            column.is_not(None),
            column <= before(now, delay),
            *compiled.filters,
        )
        if since is not None:
            # month arithmetic may shift a due time by up to 3 days: widen the SQL range only then
            slack = dt.timedelta(days=6 if delay.months else 0)
            query = query.where(column > before(since, delay) - slack)
        if lock and session.get_bind().dialect.name == "postgresql":
            query = query.order_by(Case.id).with_for_update(of=Case)
        due: dict[int, dt.datetime] = {}
        for case_id, trigger_at in session.execute(query):
            due_at = after(trigger_at, delay)
            if due_at <= now and (since is None or due_at > since):
                due[case_id] = due_at
        kept = python_filter(session, compiled, due)
        return {c: t for c, t in due.items() if c in kept}

    def _overdue(
        self, session: Session, compiled: Compiled, case_ids: list[int], now: dt.datetime
    ) -> dict[int, dt.datetime]:
        """Among these cases (an event just changed them), those the timer rule is past due on."""
        column, delay = compiled.column, compiled.delay
        query = select(Case.id, column).where(
            Case.id.in_(case_ids),
            Case.state.in_(compiled.timer_states()),
            column.is_not(None),
            column <= before(now, delay),
            *compiled.filters,
        )
        due = {cid: after(t, delay) for cid, t in session.execute(query)}
        due = self._unfired(session, compiled, {c: t for c, t in due.items() if t <= now})
        kept = python_filter(session, compiled, due)
        return {c: t for c, t in due.items() if c in kept}

    def _unfired(
        self, session: Session, compiled: Compiled, due: dict[int, dt.datetime]
    ) -> dict[int, dt.datetime]:
        """`due` without the (case, due time) pairs the rule already fired on."""
        left = dict(due)
        for chunk in chunks(sorted(due), BATCH):
            fired = session.execute(
                select(RuleFiring.case_id, RuleFiring.due_at).where(
                    RuleFiring.rule_id == compiled.rule.id, RuleFiring.case_id.in_(chunk)
                )
            )
            for cid, due_at in fired:
                if left.get(cid) == due_at:
                    del left[cid]
        return left

    def _matching(
        self, session: Session, compiled: Compiled, case_ids: list[int] | None, timer: bool
    ) -> list[int]:
        query = select(Case.id).where(*compiled.filters).order_by(Case.id)
        if case_ids is not None:
            query = query.where(Case.id.in_(case_ids))
        else:
            states = [compiled.rule.when["state_to"]] if "state_to" in compiled.rule.when else []
            query = query.where(Case.state.in_(states)) if states else query
        ids = list(session.scalars(query))
        kept = python_filter(session, compiled, ids)
        return [c for c in ids if c in kept]

    # firing ------------------------------------------------------------------
    def _fire(
        self,
        cascade: Cascade,
        compiled: Compiled,
        case_ids: list[int],
        depth: int,
        due: dict[int, dt.datetime] | None,
    ) -> None:
        if not case_ids:
            return
        reaction = cascade.reaction
        assert reaction is not None
        rule = compiled.rule
        for cid in case_ids:
            reaction.fired.setdefault(cid, set()).add(rule.id)
        done = actions.fire(
            cascade.session,
            rule,
            case_ids,
            config=self.config,
            composer=self.composer,  # called on the first mail only
            now=reaction.now,
            depth=depth,
            due=due,
            events=cascade,  # what the actions change is announced to this same cascade
        )
        for cid in case_ids:
            reaction.firings.append(Firing(rule.name, cid, (due or {}).get(cid), done.get(cid, [])))
        log.info("rule '%s' fired on %d case(s)", rule.name, len(case_ids))

    def compile(self, session: Session, rule: RuleData) -> Compiled | None:
        try:
            return compile_rule(session, rule)
        except MailgatedError as exc:
            log.warning("rule '%s' skipped: %s (fix and `mailgated rule load`)", rule.name, exc)
            return None


def _claim(
    session: Session, rule: RuleData, due: dict[int, dt.datetime], now: dt.datetime
) -> list[int]:
    """Record the firings; returns the cases this transaction won (others already fired)."""
    if not due:
        return []
    dialect = session.get_bind().dialect.name
    make: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    won: list[int] = []
    for chunk in chunks(sorted(due), BATCH):
        rows = [
            {"rule_id": rule.id, "case_id": c, "due_at": due[c], "fired_at": now} for c in chunk
        ]
        statement = (
            make(RuleFiring)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["rule_id", "case_id", "due_at"])
            .returning(RuleFiring.case_id)
        )
        won.extend(session.scalars(statement))
    return sorted(won)
