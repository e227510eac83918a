"""The engine's promises: once per due time (even with two sweepers), catching up after
downtime, bounded cascades, `stop`, regexes, and a rules file that is all or nothing."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from rules_helpers import T0, make_world
from sqlalchemy import func, select

from mailgated.cases import Actor
from mailgated.config import Config
from mailgated.db import Database
from mailgated.models import Rule, RuleFiring
from mailgated.rules.delay import Delay, after, before, parse_delay
from mailgated.rules.engine import RulesEngine
from mailgated.rules.loader import RulesFileError

DAY = dt.timedelta(days=1)

DAILY = """
[[rule]]
name = "Nudge after a day"
[rule.when]
trigger = "created"
delay = "1d"
[rule.then]
add_watchers = ["nudge@mycompany.com"]

[[rule]]
name = "Escalate after two days"
sequence = 20
[rule.when]
trigger = "created"
delay = "2d"
[rule.then]
priority = "highest"
remind_responsible = true
"""


def test_delays() -> None:
    assert parse_delay("30m") == Delay(seconds=1800)
    assert parse_delay("-1d") == Delay(seconds=-86400)
    assert parse_delay("1mo") == Delay(months=1)
    jan31 = dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC)
    assert after(jan31, Delay(months=1)) == dt.datetime(2027, 2, 28, 12, tzinfo=dt.UTC)
    assert before(after(jan31, Delay(months=1)), Delay(months=1)) >= jan31
    with pytest.raises(Exception, match="bad delay"):
        parse_delay("2 days")


def test_sweep_after_downtime_catches_up_once(db: Database) -> None:
    w = make_world(db)
    w.load(DAILY)
    cases = []
    for day in range(6):
        w.now = T0 + day * DAY
        cases.append(w.new_case(user="demo"))
    w.now = T0 + dt.timedelta(hours=1)
    assert w.sweep() == []
    # the daemon was down for a week: every due (rule, case) fires at the next sweep
    fired = w.sweep(T0 + 8 * DAY)
    assert len([f for f in fired if f.rule == "Nudge after a day"]) == 6
    assert len([f for f in fired if f.rule == "Escalate after two days"]) == 6
    assert w.sweep(T0 + 8 * DAY + dt.timedelta(minutes=1)) == []
    assert all(w.case(c)["priority"] == 1 for c in cases)
    assert len(w.outbox()) == 6
    # a new case falls due later and fires at its time, once
    w.now = T0 + 9 * DAY
    late = w.new_case(user="demo")
    assert [f.case_id for f in w.sweep(T0 + 10 * DAY + dt.timedelta(hours=1))] == [late]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RuleFiring)) == 13


def _sweep_in_thread(
    url: str, now: dt.datetime, barrier: threading.Barrier, out: list[int]
) -> None:
    db = Database(url)
    engine = RulesEngine(Config())
    try:
        barrier.wait()
        with db.session() as session:
            out.append(len(engine.sweep(session, now)))
    finally:
        db.dispose()


def test_two_concurrent_sweeps_fire_each_rule_once(db: Database, db_url: str) -> None:
    w = make_world(db)
    w.load(DAILY)
    for n in range(40):
        w.now = T0 + n * dt.timedelta(hours=1)
        w.new_case(user="demo" if n % 2 else "boss")
    for round_ in range(3):
        now = T0 + (5 + round_) * DAY
        barrier = threading.Barrier(2)
        counts: list[int] = []
        threads = [
            threading.Thread(target=_sweep_in_thread, args=(db_url, now, barrier, counts))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(counts) == (80 if round_ == 0 else 0), counts
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RuleFiring)) == 80
    assert (
        len(w.outbox()) == 20
    )  # 40 reminders, but at most 10 automatic mails per address per hour


def test_claim_is_exactly_once_across_transactions(db: Database, db_url: str) -> None:
    """Even without the rule lock (the event path), the unique key decides who fires."""
    from mailgated.rules.criteria import RuleData
    from mailgated.rules.engine import _claim

    w = make_world(db)
    w.load(DAILY)
    case_id = w.new_case()
    with db.session() as s:
        rule = RuleData.of(s.scalars(select(Rule)).first())  # type: ignore[arg-type]
    due = {case_id: T0 + DAY}
    results: list[list[int]] = []
    barrier = threading.Barrier(2)

    def claim() -> None:
        other = Database(db_url)
        try:
            barrier.wait()
            with other.session() as session:
                results.append(_claim(session, rule, due, T0 + 2 * DAY))
        finally:
            other.dispose()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [[], [case_id]]


def test_cascade_is_bounded_and_never_retriggers_a_rule(db: Database) -> None:
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "R1 opened goes pending"
        [rule.when]
        state_from = "draft"
        state_to = "open"
        [rule.then]
        set_state = "pending"

        [[rule]]
        name = "R2 pending goes open"
        [rule.when]
        state_to = "pending"
        [rule.then]
        set_state = "open"

        [[rule]]
        name = "R3 reopened closes"
        [rule.when]
        state_from = "pending"
        state_to = "open"
        [rule.then]
        set_state = "closed"

        [[rule]]
        name = "R4 closed goes draft"
        [rule.when]
        state_to = "closed"
        [rule.then]
        set_state = "draft"
        """
    )
    case_id = w.new_case()
    with w.service(Actor.system()) as svc:
        svc.open(svc.get(case_id))
    rules = [h.split(":")[1] for h in w.history(case_id, "rule")]
    assert rules == ["R1 opened goes pending", "R2 pending goes open", "R3 reopened closes"]
    case = w.case(case_id)
    assert case["state"] == "closed"  # R4's event was at the depth limit (3)
    assert case["closed_at"] == T0


def test_stop_ends_evaluation_for_that_case(db: Database) -> None:
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Gold first"
        sequence = 1
        stop = true
        [rule.when]
        state_to = "draft"
        partner_category = "Support Contract / Gold"
        [rule.then]
        priority = "highest"

        [[rule]]
        name = "Everyone low"
        sequence = 2
        [rule.when]
        state_to = "draft"
        [rule.then]
        priority = "low"
        """
    )
    gold = w.new_case(partner="Agrolait")
    other = w.new_case(partner="Camptocamp")
    assert (w.case(gold)["priority"], w.case(other)["priority"]) == (1, 4)


def test_subject_and_message_regexes(db: Database) -> None:
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Urgent invoices"
        [rule.when]
        state_to = "open"
        subject_regex = "(?i)urgent"
        message_regex = "(?i)invoice"
        min_messages = 1
        [rule.then]
        section = "Quality"
        """
    )
    ids = {}
    for subject, body in (
        ("URGENT: pay", "the invoice"),
        ("Urgent", "hello"),
        ("Later", "invoice"),
    ):
        case_id = w.new_case(subject=subject)
        with w.service(Actor.mail("p@example.com")) as svc:
            case = svc.get(case_id)
            svc.record_message(case, direction="in", body=body, email_from="p@example.com")
            svc.open(case)
        ids[subject] = case_id
    assert [w.case(i)["section"] for i in ids.values()] == [
        "Quality",
        "Support Level 1",
        "Support Level 1",
    ]


def test_timer_rule_fires_when_a_case_becomes_eligible_late(db: Database) -> None:
    """Opened on day 3, a case is past "open 2 days after creation": it fires then, once."""
    w = make_world(db)
    w.load_example("Copy to an expert after 2 days")
    case_id = w.new_case(user="demo")
    assert w.sweep(T0 + 2 * DAY + dt.timedelta(hours=1)) == []  # draft: not yet
    w.now = T0 + 3 * DAY
    with w.service(Actor.system()) as svc:
        svc.open(svc.get(case_id))
    assert w.case(case_id)["watchers"] == ["expert@mycompany.com"]
    assert w.sweep(T0 + 4 * DAY) == []
    assert len(w.outbox()) == 1


def test_a_bad_rules_file_changes_nothing_and_names_every_error(db: Database) -> None:
    w = make_world(db)
    w.load_example("Priority to Gold Partners")
    bad = """
        [[rule]]
        name = "Everything wrong"
        colour = "red"
        [rule.when]
        section = "Nowhere"
        user = "ghost"
        trigger = "created"
        delay = "2 days"
        priority_min = "high"
        priority_max = "low"
        partner_category = "Platinum"
        [rule.then]
        mail = { template = "missing.txt", to = ["partner", "nobody"] }

        [[rule]]
        name = "Second"
        [rule.when]
        state_to = "sideways"
        [rule.then]
        user = "nobody-here"

        [[rule]]
        name = "Second"
        [rule.then]
        priority = "urgent"
    """
    with pytest.raises(RulesFileError) as caught:
        w.load(bad)
    errors = "\n".join(caught.value.errors)
    for expected in (
        "rule 'Everything wrong': colour: unknown key",
        "rule 'Everything wrong': when.section: no section named 'Nowhere'",
        "rule 'Everything wrong': when.user: no user with login 'ghost'",
        "rule 'Everything wrong': when.delay: bad delay '2 days'",
        "rule 'Everything wrong': when.priority_min: 'high' is above priority_max 'low'",
        "rule 'Everything wrong': when.partner_category: no partner category 'Platinum'",
        "rule 'Everything wrong': then.mail.template: no template named 'missing.txt'",
        "rule 'Everything wrong': then.mail.to: 'nobody'",
        "rule 'Second': when.state_to: must be one of",
        "rule 'Second': then.user: no user with login 'nobody-here'",
        "rule 'Second': name: defined twice",
        "rule 'Second': then.priority: must be one of",
    ):
        assert expected in errors, (expected, errors)
    with db.session() as s:
        assert list(s.scalars(select(Rule.name))) == ["Priority to Gold Partners"]
