"""The seed's rule examples, each as a conversation with the clock: create, wait, sweep, expect."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy
from email.utils import parseaddr
from pathlib import Path

from rules_helpers import SECRET, T0, make_world

from mailgated.cases import Actor
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.intake.spool import Envelope, Spool
from mailgated.message.classify import LOOP_HEADER
from mailgated.models import Attachment
from mailgated.outbound import tokens
from mailgated.outbound.compose import Composer
from mailgated.process import Processor

DAY = dt.timedelta(days=1)


def test_copy_to_an_expert_after_two_days(db: Database) -> None:
    """The seed's 'copy to an expert after 2 days' fires once, on demo's cases only."""
    w = make_world(db)
    w.load_example("Copy to an expert after 2 days")
    case_id = w.new_case(user="demo", partner="Agrolait")
    other = w.new_case(user="boss")  # not demo's: the rule never applies
    with w.service(Actor.system()) as svc:
        svc.open(svc.get(case_id))
        svc.open(svc.get(other))

    assert w.sweep(T0 + DAY) == []
    assert w.case(case_id)["watchers"] == []

    firings = w.sweep(T0 + 2 * DAY + dt.timedelta(minutes=1))
    assert [(f.case_id, f.rule) for f in firings] == [(case_id, "Copy to an expert after 2 days")]
    assert firings[0].due_at == T0 + 2 * DAY
    assert w.case(case_id)["watchers"] == ["expert@mycompany.com"]
    assert any("rule 'Copy to an expert after 2 days' fired" in h for h in w.history(case_id))
    [(mail_case, to, subject, raw)] = w.outbox()
    assert (mail_case, to) == (case_id, ["demo@mycompany.com"])
    assert subject == f"[{case_id}] Printer on fire"
    msg = message_from_bytes(raw)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["From"] == "Support Level 1 <support@mycompany.com>"
    assert msg[LOOP_HEADER]  # the same headers as all our mail: a loop is recognised
    # the reminder's Reply-To carries a token for the responsible: their answer is staff's
    token = parseaddr(msg["Reply-To"])[1].partition("@")[0].partition("+")[2]
    with w.service() as svc:
        demo = Directory(svc.session).user("demo").id
    assert tokens.read_token(SECRET, token) == tokens.Token(case_id, demo)
    assert "Copy to an expert after 2 days" in msg.get_payload(decode=True).decode()

    assert w.sweep(T0 + 5 * DAY) == []  # once per due time
    assert len(w.outbox()) == 1


def test_priority_to_gold_partners_at_once(db: Database) -> None:
    """Gold partners' cases get high priority at once."""
    w = make_world(db)
    w.load_example("Priority to Gold Partners")
    gold = w.new_case(partner="Agrolait", subject="Broken")
    normal = w.new_case(partner="Camptocamp", subject="Broken too")
    assert w.case(gold)["priority"] == 2  # high
    assert w.case(normal)["priority"] == 3
    assert w.history(gold, "priority") == [
        "rule:Priority to Gold Partners: priority: normal → high"
    ]


def test_parent_partner_category_holds_for_sub_categories(db: Database) -> None:
    """A parent partner category holds for its sub-categories."""
    w = make_world(db)
    w.load(
        """
        [[rule]]
        name = "Contracts first"
        when = { state_to = "draft", partner_category = "Support Contract" }
        then = { priority = "highest" }
        """
    )
    gold = w.new_case(partner="Agrolait")
    normal = w.new_case(partner="Camptocamp")
    supplier = w.new_case(partner="Bolts Inc")
    assert [w.case(c)["priority"] for c in (gold, normal, supplier)] == [1, 1, 3]


def test_supplier_reminder_repeats_while_open_in_quality(db: Database) -> None:
    """The supplier reminder repeats while the case is open in Quality."""
    w = make_world(db)
    w.load_example("Remind the supplier")
    with w.service() as svc:
        d = Directory(svc.session)
        bolts = d.partner("Bolts Inc")
        case = svc.create(
            d.section("Quality"), "Bad bolts", partner=bolts, contact=bolts.contacts[0]
        )
        svc.open(case)
        case_id = case.id
    with w.service(Actor.mail("sales@bolts.example")) as svc:
        entry = svc.record_message(
            svc.get(case_id),
            direction="in",
            body="We will check the batch.",
            email_from="sales@bolts.example",
            subject="Re: Bad bolts",
        )
        svc.session.add_all(
            [
                Attachment(
                    case_id=case_id,
                    history_id=entry.id,
                    filename="lot 42.pdf",
                    content_type="application/pdf",
                    size=9,
                    data=b"%PDF-1.4\n",
                ),
                Attachment(case_id=case_id, filename="lost.bin", size=0, data=None),
            ]
        )
        svc.note(svc.get(case_id), "internal: this supplier is always late")
    with w.service(Actor.mail("demo@mycompany.com")) as svc:
        svc.record_message(svc.get(case_id), direction="out", body="Send new ones, please.")
    support = w.new_case(partner="Bolts Inc")  # not in Quality

    assert w.sweep(T0 + 2 * DAY) == []
    assert [f.case_id for f in w.sweep(T0 + 3 * DAY + dt.timedelta(hours=1))] == [case_id]
    assert w.sweep(T0 + 5 * DAY) == []  # the reminder was an action: next one 3 days later
    assert [f.case_id for f in w.sweep(T0 + 6 * DAY + dt.timedelta(hours=2))] == [case_id]
    mails = w.outbox()
    assert [(c, to) for c, to, _, _ in mails] == [(case_id, ["sales@bolts.example"])] * 2
    assert support not in [c for c, _, _, _ in mails]

    msg = message_from_bytes(mails[1][3], policy=policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Bad bolts" in text and f"case-{case_id}-history.txt, lot 42.pdf" in text
    files = {a.get_filename(): a for a in msg.iter_attachments()}
    assert list(files) == [f"case-{case_id}-history.txt", "lot 42.pdf"]
    history = files[f"case-{case_id}-history.txt"].get_content()
    assert "sales@bolts.example: Re: Bad bolts" in history
    assert "We will check the batch." in history
    assert "always late" not in history  # internal notes stay inside
    assert "Demo User" in history and "demo@mycompany.com" not in history  # no staff address
    assert files["lot 42.pdf"].get_content_type() == "application/pdf"
    assert files["lot 42.pdf"].get_content() == b"%PDF-1.4\n"

    with w.service() as svc:
        svc.close(svc.get(case_id))
    assert w.sweep(T0 + 30 * DAY) == []  # closed cases are never candidates


def test_new_mail_cases_go_to_a_user(db: Database) -> None:
    """New cases from mail go to the rule's user; others do not."""
    w = make_world(db)
    w.load_example("New mail cases to demo")
    by_mail = w.new_case(actor=Actor.mail("s.l@agrolait.com"), email="s.l@agrolait.com")
    elsewhere = w.new_case("Quality", actor=Actor.mail("x@example.com"))
    assert w.case(by_mail)["user"] == "demo"
    assert w.case(elsewhere)["user"] is None
    assert "rule:New mail cases to demo: responsible: nobody → demo" in w.history(by_mail)


def test_vacationing_users_cases_are_reassigned(db: Database) -> None:
    """A vacationing user's cases are reassigned, others' are not."""
    w = make_world(db)
    old = [w.new_case(user="boss") for _ in range(3)]
    mine = w.new_case(user="demo")
    w.load_example("Boss on vacation")
    w.now = T0 + DAY
    firings = w.sweep()
    assert sorted(f.case_id for f in firings) == old
    assert [w.case(c)["user"] for c in old] == ["demo"] * 3
    assert w.history(mine, "rule") == []
    # a case given to the boss while the rule is on goes to demo at once (the event path)
    new = w.new_case(user="boss")
    assert w.case(new)["user"] == "demo"
    assert w.sweep(T0 + 2 * DAY) == []


def test_the_expert_gets_the_following_messages(db: Database, tmp_path: Path) -> None:
    """After "Copy to an expert", the partner's next mail is copied to the expert."""
    w = make_world(db)
    w.load_example("Copy to an expert after 2 days")
    case_id = w.new_case(user="demo", partner="Agrolait", email="s.l@agrolait.com")
    with w.service() as svc:
        svc.open(svc.get(case_id))
    assert w.sweep(T0 + 2 * DAY + dt.timedelta(minutes=1))
    spool = Spool(tmp_path / "spool")
    raw = (
        "From: Sylvie Lelitre <s.l@agrolait.com>\r\nTo: support@mycompany.com\r\n"
        f"Subject: Re: [{case_id}] Printer on fire\r\nMessage-ID: <later@agrolait.com>\r\n"
        "\r\nStill burning, any news?\r\n"
    ).encode()
    spool.put(raw, Envelope("smtp", "s.l@agrolait.com", ["support@mycompany.com"]))
    Processor(w.config, db, spool, Composer(w.config, SECRET), w.engine, now=w.clock).drain()
    assert "Still burning, any news?" in "\n".join(w.history(case_id, "email_in"))
    copies = [(to, raw) for c, to, _, raw in w.outbox() if "expert@mycompany.com" in to]
    assert len(copies) == 1
    assert "Still burning" in message_from_bytes(copies[0][1], policy=policy.default).as_string()
