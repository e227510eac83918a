"""classify(): automatic mail is told from a person's, and bounces say who bounced."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgated.message.classify import CHECKS, LOOP_HEADER, classify
from mailgated.message.parse import ParsedMail, parse

DATA = Path(__file__).parent / "data"


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
        ("mailing_list.eml", "bulk", "Precedence: list", None),
        ("loop.eml", "loop", f"{LOOP_HEADER}: site-1", None),
    ],
)
def test_automatic_mail(name: str, kind: str, reason: str, original: str | None) -> None:
    verdict = classify(read(name), None)
    assert verdict.automatic
    assert (verdict.kind, verdict.reason, verdict.original_message_id) == (kind, reason, original)
    assert verdict.bounced == []


def test_postfix_dsn_names_the_failed_recipient_and_our_message() -> None:
    verdict = classify(read("bounce_postfix_dsn.eml"), "")
    assert (verdict.automatic, verdict.kind) == (True, "bounce")
    assert verdict.reason == "multipart/report; report-type=delivery-status"
    assert verdict.bounced == ["nobody@partner.example"]  # Original-Recipient, lower-cased
    assert verdict.original_message_id == "<mg.101.out1@example.com>"


def test_exchange_ndr_reads_text_rfc822_headers() -> None:
    verdict = classify(read("bounce_exchange_ndr.eml"), "")
    assert verdict.kind == "bounce"
    assert verdict.bounced == ["former.employee@partner.example"]
    assert verdict.original_message_id == "<mg.102.out2@example.com>"


def test_exim_plain_bounce_from_mailer_daemon() -> None:
    verdict = classify(read("bounce_mailer_daemon_plain.eml"), "")
    assert (verdict.kind, verdict.reason) == ("bounce", "sender mailer-daemon@mail.partner.example")
    assert verdict.bounced == ["gone@partner.example"]
    assert verdict.original_message_id == "<mg.103.out3@example.com>"


def test_unreadable_mailer_daemon_bounce_is_still_a_bounce() -> None:
    verdict = classify(read("bounce_mailer_daemon_unreadable.eml"), None)
    assert (verdict.automatic, verdict.kind, verdict.bounced) == (True, "bounce", [])
    assert verdict.original_message_id is None


def test_a_person_replying_is_human() -> None:
    verdict = classify(read("human_reply.eml"), "jane@partner.example")
    assert (verdict.automatic, verdict.kind) == (False, "human")


def test_envelope_sender() -> None:
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
    verdict = classify(simple(headers), None)
    assert (verdict.kind, verdict.reason) == (kind, reason)
    assert verdict.automatic == (kind != "human")


def test_postmaster_sender_is_a_bounce() -> None:
    mail = parse(b"From: postmaster@partner.example\r\nSubject: x\r\n\r\nCould not deliver.\r\n")
    assert classify(mail, None).kind == "bounce"


def test_bounce_subject_needs_other_automatic_evidence() -> None:
    subject = "Subject: Undeliverable: [101] Printer jam"
    person = parse(f"From: jane@partner.example\r\n{subject}\r\n\r\nsee below\r\n".encode())
    assert classify(person, "jane@partner.example").kind == "human"
    assert classify(person, "<>").kind == "bounce"


def test_in_reply_to_names_the_original_of_an_auto_reply() -> None:
    mail = simple("Auto-Submitted: auto-replied\nReferences: <a@x> <b@example.com>")
    assert classify(mail, None).original_message_id == "<b@example.com>"


def test_checks_are_a_list_of_named_steps() -> None:
    names = [check.__name__ for check in CHECKS]
    assert names[0] == "our_loop"
    assert names.index("delivery_report") < names.index("auto_submitted")
