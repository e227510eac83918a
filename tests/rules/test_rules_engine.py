"""The engine's promises: once per due time (even with two sweepers), catching up after
downtime, bounded cascades, `stop`, regexes, and a rules file that is all or nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from rules_helpers import EXAMPLE, SECRET, T0, make_world
from sqlalchemy import func, select, text

from mailgated.app import App
from mailgated.cases import Actor
from mailgated.config import Config
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.models import Case, Rule, RuleFiring
from mailgated.rules.delay import Delay, after, before, parse_delay
from mailgated.rules.loader import RulesFileError

DAY = dt.timedelta(days=1)

DAILY = """
[[rule]]
name = "Nudge after a day"
when = { trigger = "created", delay = "1d" }
then = { add_watchers = ["nudge@mycompany.com"] }

[[rule]]
name = "Escalate after two days"
sequence = 20
when = { trigger = "created", delay = "2d" }
then = { priority = "highest", remind_responsible = true }
"""


def test_delays() -> None:
    """Delays read minutes, days and months, negative too, and months end on the month's last
    day."""
    assert parse_delay("30m") == Delay(seconds=1800)
    assert parse_delay("-1d") == Delay(seconds=-86400)
    assert parse_delay("1mo") == Delay(months=1)
    jan31 = dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC)
    assert after(jan31, Delay(months=1)) == dt.datetime(2027, 2, 28, 12, tzinfo=dt.UTC)
    assert before(after(jan31, Delay(months=1)), Delay(months=1)) >= jan31
    with pytest.raises(Exception, match="bad delay"):
        parse_delay("2 days")


def test_sweep_after_downtime_catches_up_once(db: Database) -> None:
    """A sweep after downtime fires each due rule once per case."""
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
    engine = App(Config(), secret=SECRET).rules
    try:
        barrier.wait()
        with db.session() as session:
            out.append(len(engine.sweep(session, now)))
    finally:
        db.dispose()


def test_two_concurrent_sweeps_fire_each_rule_once(db: Database, db_url: str) -> None:
    """Two sweeps at once fire each rule once per case."""
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
    # 40 reminders to two staff members: reminders are not auto-replies, so
    # auto_reply_limit (10 per address per hour) does not cut them (issue 12 item 9)
    assert len(w.outbox()) == 40


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
    """Rules triggering rules stop at a bound and never fire one twice per event."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "R1 opened goes pending"
        when = { state_from = "draft", state_to = "open" }
        then = { set_state = "pending" }

        [[rule]]
        name = "R2 pending goes open"
        when = { state_to = "pending" }
        then = { set_state = "open" }

        [[rule]]
        name = "R3 reopened closes"
        when = { state_from = "pending", state_to = "open" }
        then = { set_state = "closed" }

        [[rule]]
        name = "R4 closed goes draft"
        when = { state_to = "closed" }
        then = { set_state = "draft" }
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
    """A rule with stop ends evaluation for that case."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Gold first"
        sequence = 1
        stop = true
        when = { state_to = "draft", partner_category = "Support Contract / Gold" }
        then = { priority = "highest" }

        [[rule]]
        name = "Everyone low"
        sequence = 2
        when = { state_to = "draft" }
        then = { priority = "low" }
        """
    )
    gold = w.new_case(partner="Agrolait")
    other = w.new_case(partner="Camptocamp")
    assert (w.case(gold)["priority"], w.case(other)["priority"]) == (1, 4)


def test_subject_and_message_regexes(db: Database) -> None:
    """Subject and message regexes select the cases a rule applies to."""
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
    """A bad rules file changes nothing and names every error."""
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
        when = { state_to = "sideways" }
        then = { user = "nobody-here" }

        [[rule]]
        name = "Second"
        then = { priority = "urgent" }

        [[rule]]
        name = "Never due"
        when = { state_from = "draft", state_to = "closed", trigger = "created", delay = "1d" }
        then = { mail = { template = "rule_reminder.txt", to = ["responsible"], subject = 3 } }
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
        "rule 'Never due': when.state_to: a timer rule sees the case's current state",
        "rule 'Never due': when.state_to: a timer rule never fires on 'closed' (only active",
        "rule 'Never due': then.mail.subject: must be a string, not 3",
    ):
        assert expected in errors, (expected, errors)
    with db.session() as s:
        assert list(s.scalars(select(Rule.name))) == ["Priority to Gold Partners"]


def test_the_example_file_loads_cleanly(db: Database) -> None:
    """The example rules file loads cleanly."""
    w = make_world(db)
    report = w.load(EXAMPLE.read_text())
    assert report["added"] == [
        "Copy to an expert after 2 days",
        "Priority to Gold Partners",
        "Remind the supplier",
        "Call the supplier after a week",
        "New mail cases to demo",
        "Boss on vacation",
    ]
    assert w.load(EXAMPLE.read_text())["unchanged"] == report["added"]  # loading twice: no-op


def test_negative_delay_fires_before_the_deadline(db: Database) -> None:
    """A negative delay fires before the deadline."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Day before the deadline"
        when = { trigger = "deadline", delay = "-1d" }
        then = { priority = "highest", remind_responsible = true }
        """
    )
    soon = w.new_case(user="demo", deadline=T0 + 3 * DAY)
    none = w.new_case(user="demo")  # no deadline: never due
    assert w.sweep(T0 + DAY) == []
    fired = w.sweep(T0 + 2 * DAY + dt.timedelta(minutes=5))
    assert [(f.case_id, f.due_at) for f in fired] == [(soon, T0 + 2 * DAY)]
    assert (w.case(soon)["priority"], w.case(none)["priority"]) == (1, 3)
    # moving the deadline is an action on the case: a new due time, fired once more
    with w.service() as svc:
        svc.set_fields(svc.get(soon), deadline=T0 + 10 * DAY)
    assert [f.due_at for f in w.sweep(T0 + 9 * DAY + dt.timedelta(hours=1))] == [T0 + 9 * DAY]


def test_escalation_is_an_event(db: Database) -> None:
    """An escalation is an event other rules see."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Escalated cases are urgent"
        when = { state_to = "escalate", section = "Support Level 2" }
        then = { priority = "highest", add_watchers = ["escalations@mycompany.com"] }
        """
    )
    case_id = w.new_case(user="demo")
    with w.service() as svc:
        svc.open(svc.get(case_id))
    assert w.case(case_id)["priority"] == 3
    with w.service() as svc:
        svc.escalate(svc.get(case_id))
    case = w.case(case_id)
    assert (case["section"], case["user"], case["priority"]) == ("Support Level 2", "boss", 1)
    assert case["watchers"] == ["escalations@mycompany.com"]


def test_templated_mail_to_watchers_partner_and_addresses(db: Database, tmp_path: Path) -> None:
    """A templated rule mail goes to watchers, the partner and given addresses."""
    (tmp_path / "late.txt").write_text(
        "Case {{ case.id }} ({{ case.subject }}) for {{ case.partner }} waits: rule {{ rule }}.\n"
    )
    config = dataclasses.replace(
        Config(),
        outbound=dataclasses.replace(Config().outbound, templates_dir=str(tmp_path)),
        security=dataclasses.replace(Config().security, internal_domains=("mycompany.com",)),
    )
    w = make_world(db, config)
    (tmp_path / "broken.txt").write_text("Hello {% if case.id %}\n")
    with pytest.raises(RulesFileError) as caught:
        w.load(
            '[[rule]]\nname = "B"\n[rule.then]\nmail = {template = "broken.txt", to = ["x@y.z"]}'
        )
    assert caught.value.errors[0].startswith("rule 'B': then.mail.template: template 'broken.txt'")
    w.load(
        """
        [[rule]]
        name = "Tell everyone"
        [rule.when]
        trigger = "created"
        delay = "4h"
        [rule.then]
        add_watchers = ["expert@mycompany.com"]
        [rule.then.mail]
        template = "late.txt"
        to = ["partner", "watchers", "boss@mycompany.com"]
        subject = "Still open"
        """
    )
    case_id = w.new_case(partner="Agrolait", email="s.l@agrolait.com")
    assert w.sweep(T0 + dt.timedelta(hours=5))
    # one message to the outsiders, one to us: the partner never sees our addresses
    [(mail_case, to, subject, raw), (_, inside, _, raw_inside)] = w.outbox()
    assert mail_case == case_id
    assert to == ["s.l@agrolait.com"]
    assert inside == ["expert@mycompany.com", "boss@mycompany.com"]
    head = raw.split(b"\n\n", 1)[0]
    assert b"expert@" not in head and b"boss@" not in head
    assert subject == f"[{case_id}] Still open"
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Mailgated-Rule"] == "Tell everyone"
    assert (
        msg.get_content()
        == f"Case {case_id} (Printer on fire) for Agrolait waits: rule Tell everyone.\n"
    )


def test_changed_criteria_catch_up_on_cases_already_due(db: Database) -> None:
    """Changed criteria catch up on cases already due."""
    w = make_world(db)
    rule = """
        [[rule]]
        name = "Old cases to the boss"
        [rule.when]
        section = "{section}"
        trigger = "created"
        delay = "1d"
        [rule.then]
        priority = "high"
    """
    w.load(rule.format(section="Quality"))
    quality = w.new_case("Quality")
    support = w.new_case()
    assert [f.case_id for f in w.sweep(T0 + 2 * DAY)] == [quality]
    # the admin widens the rule: cases that were already due under it fire at the next sweep
    assert w.load(rule.format(section="Support Level 1"))["updated"] == ["Old cases to the boss"]
    assert [f.case_id for f in w.sweep(T0 + 2 * DAY + dt.timedelta(minutes=1))] == [support]
    w.load(rule.format(section="Quality"))
    assert w.sweep(T0 + 2 * DAY + dt.timedelta(minutes=2)) == []  # fired once per due time


def test_rule_mail_has_the_composers_headers_encoded_and_attachments(tmp_path: Path) -> None:
    """Rule mail has all our headers, encoded, and its attachments."""
    from mailgated.message.classify import LOOP_HEADER
    from mailgated.outbound import tokens
    from mailgated.outbound.compose import Composer
    from mailgated.rules import mail

    case = mail.MailCase(
        id=7,
        subject="Boulons abîmés\r\nBcc: victim@example.com",
        state="open",
        priority=2,
        section="Qualité",
        section_email="quality@mycompany.com",
    )
    (tmp_path / "late.txt").write_text("Déjà trois jours.\n")
    config = dataclasses.replace(
        Config(), outbound=dataclasses.replace(Config().outbound, templates_dir=str(tmp_path))
    )
    composer = Composer(config, SECRET)
    message = mail.build(
        composer,
        case=case,
        to=["sales@bolts.example"],
        template="late.txt",
        context={},
        rule_name="Remind the supplier",
        token_user=4,
        attachments=[
            mail.Attached("journal é.txt", "text/plain", "Ligne é\n".encode()),
            mail.Attached("photo.png", "image/png", b"\x89PNG\r\n"),
            mail.Attached("odd", "not a type", b"\x00"),
        ],
    )
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Subject"] == "[7] Boulons abîmés Bcc: victim@example.com"
    assert parsed["Bcc"] is None
    assert parsed["From"].addresses[0].display_name == "Qualité"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Mailgated-Rule"] == "Remind the supplier"
    assert parsed[LOOP_HEADER]
    assert parsed["X-Priority"] == "2 (High)"
    reply_to = parsed["Reply-To"].addresses[0]
    assert reply_to.domain == "mycompany.com"
    token = reply_to.username.partition("+")[2]
    assert tokens.read_token(SECRET, token) == tokens.Token(7, 4)
    assert tokens.read_message_id(SECRET, parsed["Message-ID"]) is not None
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content() == "Déjà trois jours.\n"
    parts = [(p.get_filename(), p.get_content_type()) for p in parsed.iter_attachments()]
    assert parts == [
        ("journal é.txt", "text/plain"),
        ("photo.png", "image/png"),
        ("odd", "application/octet-stream"),
    ]
    assert [p.get_content() for p in parsed.iter_attachments()][:2] == ["Ligne é\n", b"\x89PNG\r\n"]


def test_message_count_threshold_on_new_messages(db: Database) -> None:
    """The seed's history-count criterion: the third message of a talkative case moves it."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Long threads to quality"
        when = { state_from = "open", state_to = "open", min_messages = 3 }
        then = { section = "Quality" }
        """
    )
    case_id = w.new_case()
    with w.service() as svc:
        svc.open(svc.get(case_id))
    sections = []
    for n in range(3):
        with w.service(Actor.mail("p@example.com")) as svc:
            svc.record_message(svc.get(case_id), direction="in", body=f"message {n}")
        sections.append(w.case(case_id)["section"])
    assert sections == ["Support Level 1", "Support Level 1", "Quality"]


def test_a_re_enabled_timer_rule_catches_up(db: Database) -> None:
    """A timer rule enabled again catches up on what fell due meanwhile."""
    w = make_world(db)
    w.load_example("Boss on vacation")
    from mailgated.rules.loader import set_active

    def enable(on: bool) -> None:
        with db.session() as s:
            set_active(s.scalars(select(Rule)).one(), on)

    assert w.sweep(T0 + dt.timedelta(hours=1)) == []  # the rule's last sweep: T0 + 1h
    enable(False)
    w.now = T0 + dt.timedelta(minutes=30)  # (a clock behind the sweep's, for a short gap)
    cases = [w.new_case(user="boss") for _ in range(2)]  # off: they stay with the boss
    assert w.sweep(T0 + DAY) == []
    assert [w.case(c)["user"] for c in cases] == ["boss", "boss"]
    enable(True)  # the boss leaves again: every case of theirs goes to demo at the next sweep
    assert sorted(f.case_id for f in w.sweep(T0 + 2 * DAY)) == cases
    assert [w.case(c)["user"] for c in cases] == ["demo", "demo"]


def test_a_sweep_waits_for_a_case_being_changed(db: Database, db_url: str) -> None:
    """A message arrives on a case while the sweep finds it due: one firing, no deadlock.

    The sweep locks the due cases before claiming their firings, so it waits for the
    message's transaction, whose own event path fires the overdue rule; the sweep's claim
    then finds that firing. (Claiming first would deadlock: each waits for the other.)
    """
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite has one writer at a time, so the race cannot happen")
    w = make_world(db)
    w.load("[[rule]]" + DAILY.split("[[rule]]")[1])  # "Nudge after a day" only
    case_id = w.new_case(user="demo")
    w.now = T0 + 2 * DAY
    counts: list[int] = []
    sweeper = threading.Thread(
        target=_sweep_in_thread, args=(db_url, w.now, threading.Barrier(1), counts)
    )
    with w.service(Actor.mail("p@example.com")) as svc:
        svc.session.execute(select(Case.id).where(Case.id == case_id).with_for_update())
        sweeper.start()
        _wait_for_a_lock_wait(db)
        svc.record_message(svc.get(case_id), direction="in", body="any news?")
    sweeper.join(60)
    assert counts == [0]
    assert [h.split(":")[1] for h in w.history(case_id, "rule")] == ["Nudge after a day"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(RuleFiring)) == 1


def _wait_for_a_lock_wait(db: Database) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(600):
        with db.engine.connect() as conn:
            if conn.scalar(query):
                return
        time.sleep(0.05)
    raise AssertionError("the sweep never waited for the case's row lock")


def test_section_tree_category_priority_range_and_partner(db: Database) -> None:
    """Section subtree, category, priority range and partner criteria select the right cases."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Urgent Agrolait faults anywhere in support"
        [rule.when]
        state_to = "open"
        section = "Support Level 2"
        subsections = true
        category = "Fault Fix"
        priority_min = "high"
        priority_max = "highest"
        partner = "Agrolait"
        [rule.then]
        user = "demo"
        """
    )
    with w.service() as svc:
        d = Directory(svc.session)
        level1, quality = d.section("Support Level 1"), d.section("Quality")
        fault = d.category(level1, "Fault Fix")
        agrolait, camptocamp = d.partner("Agrolait"), d.partner("Camptocamp")
        cases = {
            "match": svc.create(level1, "a", category=fault, priority="high", partner=agrolait),
            "highest": svc.create(
                level1, "b", category=fault, priority="highest", partner=agrolait
            ),
            "normal": svc.create(level1, "c", category=fault, priority="normal", partner=agrolait),
            "no category": svc.create(level1, "d", priority="high", partner=agrolait),
            "other partner": svc.create(
                level1, "e", category=fault, priority="high", partner=camptocamp
            ),
            "other section": svc.create(quality, "f", priority="high", partner=agrolait),
        }
        for case in cases.values():
            svc.open(case)
        ids = {k: c.id for k, c in cases.items()}
    assert {k: w.case(i)["user"] for k, i in ids.items()} == {
        "match": "demo",
        "highest": "demo",
        "normal": None,
        "no category": None,
        "other partner": None,
        "other section": None,
    }


def test_a_sweep_as_if_later_does_not_skip_what_falls_due_before_then(db: Database) -> None:
    """`rule sweep --now FUTURE` rehearses; the next real sweep still finds cases due before it."""
    w = make_world(db)
    w.load(DAILY)
    first = w.new_case(user="demo")
    w.now = T0 + dt.timedelta(hours=1)
    with db.session() as session:
        fired = w.engine.sweep(session, T0 + 5 * DAY, mark=w.now)
    assert {f.case_id for f in fired} == {first}
    late = w.new_case(user="demo")  # created at T0+1h, due at T0+1d+1h: before the rehearsal
    fired = w.sweep(T0 + 6 * DAY)
    assert {f.case_id for f in fired} == {late}
    assert w.sweep(T0 + 6 * DAY + dt.timedelta(minutes=1)) == []
