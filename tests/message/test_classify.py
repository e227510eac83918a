"""classify(): automatic mail is told from a person's, and bounces say who bounced."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgated.message.classify import CHECKS, LOOP_HEADER, classify
from mailgated.message.parse import ParsedMail, parse
from mailgated.message.patterns import Patterns

DATA = Path(__file__).parent.parent / "data"


def read(name: str) -> ParsedMail:
    return parse((DATA / name).read_bytes())


def simple(headers: str) -> ParsedMail:
    head = "From: Jane <jane@partner.example>\nTo: support@example.com\nSubject: hi\n" + headers
    return parse(head.strip().replace("\n", "\r\n").encode() + b"\r\n\r\nHello.\r\n")


@pytest.mark.parametrize(
    ("name", "kind", "reason", "original"),
    [
        (
            "vacation_auto_submitted.eml",
            "auto-reply",
            "Auto-Submitted: auto-replied (vacation)",
            "<ack-101.abc@example.com>",
        ),
        ("vacation_x_autoreply.eml", "auto-reply", "X-Autoreply: yes", "<ack-102.def@example.com>"),
        (
            "vacation_precedence.eml",
            "auto-reply",
            "Precedence: auto_reply",
            "<ack-103.ghi@example.com>",
        ),
        ("loop.eml", "loop", f"{LOOP_HEADER}: site-1", None),
    ],
)
def test_automatic_mail(name: str, kind: str, reason: str, original: str | None) -> None:
    """Each kind of automatic mail in the corpus is recognised, with its reason."""
    verdict = classify(read(name), None)
    assert verdict.automatic
    assert (verdict.kind, verdict.reason, verdict.original_message_id) == (kind, reason, original)
    assert verdict.bounced == []


def test_postfix_dsn_names_the_failed_recipient_and_our_message() -> None:
    """A Postfix DSN names the failed recipient and the Message-ID of our mail."""
    verdict = classify(read("bounce_postfix_dsn.eml"), "")
    assert (verdict.automatic, verdict.kind) == (True, "bounce")
    assert verdict.reason == "multipart/report; report-type=delivery-status"
    assert verdict.bounced == ["nobody@partner.example"]  # Original-Recipient, lower-cased
    assert verdict.original_message_id == "<mg.101.out1@example.com>"


def test_exchange_ndr_reads_text_rfc822_headers() -> None:
    """An Exchange NDR is a bounce; its text/rfc822-headers part names recipient and message."""
    verdict = classify(read("bounce_exchange_ndr.eml"), "")
    assert verdict.kind == "bounce"
    assert verdict.bounced == ["former.employee@partner.example"]
    assert verdict.original_message_id == "<mg.102.out2@example.com>"


def test_exim_plain_bounce_from_mailer_daemon() -> None:
    """A plain-text bounce from MAILER-DAEMON names the address that failed."""
    verdict = classify(read("bounce_mailer_daemon_plain.eml"), "")
    assert (verdict.kind, verdict.reason) == ("bounce", "sender mailer-daemon@mail.partner.example")
    assert verdict.bounced == ["gone@partner.example"]
    assert verdict.original_message_id == "<mg.103.out3@example.com>"


def test_unreadable_mailer_daemon_bounce_is_still_a_bounce() -> None:
    """A bounce we cannot read is still a bounce (just without addresses)."""
    verdict = classify(read("bounce_mailer_daemon_unreadable.eml"), None)
    assert (verdict.automatic, verdict.kind, verdict.bounced) == (True, "bounce", [])
    assert verdict.original_message_id is None


def test_a_person_replying_is_human() -> None:
    """An ordinary reply from a person is human mail."""
    verdict = classify(read("human_reply.eml"), "jane@partner.example")
    assert (verdict.automatic, verdict.kind) == (False, "human")


def test_envelope_sender() -> None:
    """An empty envelope sender means automatic mail; an unknown one is no evidence."""
    mail = simple("Message-ID: <m@partner.example>")
    assert classify(mail, None).kind == "human"  # unknown: no evidence
    assert classify(mail, "jane@partner.example").kind == "human"
    for empty in ("", "<>"):
        verdict = classify(mail, empty)
        assert (verdict.automatic, verdict.kind, verdict.reason) == (
            True,
            "auto-reply",
            "empty envelope sender",
        )
    assert classify(mail, "MAILER-DAEMON@mx.partner.example").kind == "bounce"


@pytest.mark.parametrize(
    ("headers", "kind", "reason"),
    [
        ("Auto-Submitted: no", "human", "no sign of automatic mail"),
        ("Auto-Submitted: auto-generated", "auto-reply", "Auto-Submitted: auto-generated"),
        ("Precedence: bulk", "bulk", "Precedence: bulk"),
        ("Precedence: junk", "bulk", "Precedence: junk"),
        ("Precedence: first-class", "human", "no sign of automatic mail"),
        ("X-Autorespond: on", "auto-reply", "X-Autorespond: on"),
        ("Return-Path: <>", "auto-reply", "Return-Path: <>"),
        ("Return-Path: <jane@partner.example>", "human", "no sign of automatic mail"),
        (f"{LOOP_HEADER}: site-1\nPrecedence: bulk", "loop", f"{LOOP_HEADER}: site-1"),
    ],
)
def test_header_evidence(headers: str, kind: str, reason: str) -> None:
    """Each header that marks automatic mail gives its kind and reason."""
    verdict = classify(simple(headers), None)
    assert (verdict.kind, verdict.reason) == (kind, reason)
    assert verdict.automatic == (kind != "human")


def test_postmaster_sender_is_a_bounce() -> None:
    """Mail from postmaster@ is a bounce."""
    mail = parse(b"From: postmaster@partner.example\r\nSubject: x\r\n\r\nCould not deliver.\r\n")
    assert classify(mail, None).kind == "bounce"


def test_bounce_subject_needs_other_automatic_evidence() -> None:
    """An 'Undeliverable:' subject alone is no bounce; with an empty sender it is."""
    subject = "Subject: Undeliverable: [101] Printer jam"
    person = parse(f"From: jane@partner.example\r\n{subject}\r\n\r\nsee below\r\n".encode())
    assert classify(person, "jane@partner.example").kind == "human"
    assert classify(person, "<>").kind == "bounce"


def test_in_reply_to_names_the_original_of_an_auto_reply() -> None:
    """An auto-reply's original is the newest Message-ID it names."""
    mail = simple("Auto-Submitted: auto-replied\nReferences: <a@x> <b@example.com>")
    assert classify(mail, None).original_message_id == "<b@example.com>"


def test_checks_are_a_list_of_named_steps() -> None:
    """The classification policy is an ordered list of named checks, our loop header first."""
    names = [check.__name__ for check in CHECKS]
    assert names[0] == "our_loop"
    assert names.index("delivery_report") < names.index("auto_submitted")


def test_list_mail_is_a_persons_but_never_answered() -> None:
    """List-Id: a person's mail (recorded, may reopen) that gets no automatic answer."""
    verdict = classify(read("mailing_list.eml"), None)
    assert (verdict.automatic, verdict.kind, verdict.no_answer) == (False, "list", True)
    assert verdict.reason == "List-Id: Vendor announcements <announce.lists.vendor.example>"


@pytest.mark.parametrize(
    ("headers", "kind", "automatic", "no_answer"),
    [
        ("X-MS-Exchange-Inbox-Rules-Loop: jane@partner.example", "auto-reply", True, False),
        ("X-Auto-Response-Suppress: All", "human", False, True),
        ("X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply", "human", False, True),
        ("X-Auto-Response-Suppress: DR", "human", False, False),
        ("List-Unsubscribe: <mailto:leave@lists.partner.example>", "list", False, True),
        ("Precedence: list", "list", False, True),
        ("Precedence: bulk\nList-Unsubscribe: <mailto:x@news.example>", "bulk", True, False),
    ],
)
def test_exchange_and_list_headers(
    headers: str, kind: str, automatic: bool, no_answer: bool
) -> None:
    """Exchange's inbox-rule and suppress headers and the list headers are read."""
    verdict = classify(simple(headers), None)
    assert (verdict.kind, verdict.automatic, verdict.no_answer) == (kind, automatic, no_answer)


@pytest.mark.parametrize(
    "subject",
    ["Automatische Antwort: hi", "Abwesenheitsnotiz: hi", "Réponse automatique : hi",
     "Out of Office: hi", "Resposta automática: hi", "Автоответ: hi", "RÉPONSE AUTOMATIQUE: hi"],
)  # fmt: skip
def test_out_of_office_subjects(subject: str) -> None:
    """The localized out-of-office subject prefixes are automatic without any header."""
    head = f"From: jane@partner.example\nTo: support@example.com\nSubject: {subject}\n"
    raw = (
        head.replace("\n", "\r\n").encode()
        + b"Content-Type: text/plain; charset=utf-8\r\n\r\nx\r\n"
    )
    assert classify(parse(raw), None).kind == "auto-reply"


def test_configured_patterns_and_builtin_off() -> None:
    """[automatic] adds subject prefixes and body patterns; builtin=false drops ours."""
    mine = Patterns.build(("Urlaubsnotiz:",), (r"\bgone fishing\b",))
    raw = b"From: j@p.example\r\nSubject: Urlaubsnotiz: x\r\n\r\nHi\r\n"
    assert classify(parse(raw), None, mine).kind == "auto-reply"
    raw = b"From: j@p.example\r\nSubject: Re: x\r\n\r\nGone fishing till Monday.\r\n"
    assert classify(parse(raw), None, mine).kind == "auto-reply"
    raw = b"From: j@p.example\r\nSubject: Out of Office: x\r\n\r\nHi\r\n"
    assert classify(parse(raw), None, Patterns.build(builtin=False)).kind == "human"


def test_holiday_mentioned_above_a_real_answer_stays_human() -> None:
    """An out-of-office sentence above a quoted answer is a person's reply."""
    raw = (
        b"From: j@p.example\r\nSubject: Re: [12] Pump\r\n\r\n"
        b"I am out of the office next week, so here is the serial: 4711.\r\n\r\n"
        b"On Monday, Support wrote:\r\n> Which serial number?\r\n"
    )
    assert classify(parse(raw), None).kind == "human"


def test_a_new_request_that_mentions_a_holiday_is_a_persons() -> None:
    """An out-of-office sentence in mail that answers nothing is a new request; one in an
    answer is a responder's, unless it is only a person saying they are on holiday."""
    raw = (
        b"From: j@p.example\r\nSubject: Pump broke\r\n\r\n"
        b"I am out of the office until Monday, but the pump in hall B broke.\r\n"
    )
    assert classify(parse(raw), None).kind == "human"
    answering = raw.replace(b"Subject: Pump broke", b"Subject: Re: [12] Pump broke")
    assert classify(parse(answering), None).kind == "auto-reply"
    person = answering.replace(b"I am out of the office", b"I'm on holiday")
    assert classify(parse(person), None).kind == "human"
