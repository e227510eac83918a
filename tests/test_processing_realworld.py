"""Real-world mail the standard library cannot write back still becomes a case (or is read as
a bounce): a part is attached as received, or the forward goes text-only (issue 12 item 6)."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from processing_helpers import support_processor

from mailgated.db import Database
from mailgated.intake.spool import Envelope
from mailgated.models import Case, Outbox
from mailgated.process import Processor

SUPPORT = "support@example.com"
# Outlook's shape of Message-ID: the stdlib's msg-id parser raises IndexError on it (gh-105802)
MS_ID = (
    "<[83c48dddbea7492e873224a5ae1c04be-JFBVALKQOJXWILKNK4YVA7CBPJ2XEZKEMV3E64DTPRCW2YLJNR6"
    "EK6DPKNWXI4A=@microsoft.com]>"
)


@pytest.fixture
def processor(db: Database, tmp_path: Path) -> Processor:
    return support_processor(db, tmp_path, SUPPORT, max_failures=1)


def with_attached(sender: str, subject: str, part: bytes) -> bytes:
    head = (
        f"From: {sender}\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@partner.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=BB\r\n\r\n"
        "--BB\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--BB\r\n"
    )
    return head.encode() + part + b"--BB--\r\n"


def forward_of(processor: Processor, raw: bytes) -> tuple[Case, email.message.Message]:
    """Spool `raw`, process it; the new case and the forward the manager gets."""
    processor.spool.put(raw, Envelope("smtp", "x@partner.example", [SUPPORT]))
    assert [r.status for r in processor.run_once()] == ["done"]
    with processor.db.session() as session:
        case = session.query(Case).one()
        session.expunge(case)
        forward = session.query(Outbox).filter_by(kind="forward").one()
        assert forward.recipients == ["boss@example.com"]
        return case, email.message_from_bytes(bytes(forward.raw), policy=email.policy.compat32)


def test_attached_outlook_message_with_a_long_bracketed_message_id(processor: Processor) -> None:
    """A forward-as-attachment of Outlook mail: a case, and the manager gets the attachment."""
    inner = f"From: a@microsoft.com\r\nMessage-ID: {MS_ID}\r\nSubject: inner\r\n\r\nhello\r\n"
    part = b"Content-Type: message/rfc822\r\n\r\n" + inner.encode()
    case, forward = forward_of(processor, with_attached("b@partner.example", "fw meeting", part))
    assert case.subject == "fw meeting" and case.description == "see attached"
    [attached] = [p for p in forward.walk() if p.get_content_type() == "message/rfc822"]
    assert MS_ID in attached.as_string().replace("\n ", " ")


def test_delivery_status_inside_a_partners_mail_is_forwarded_as_text(
    processor: Processor,
) -> None:
    """A message/delivery-status part carried as a file: the forward has it as readable text."""
    report = b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; x@y.example\r\n"
    part = b"Content-Type: message/delivery-status\r\n\r\n" + report + b"\r\n"
    case, forward = forward_of(processor, with_attached("c@partner.example", "odd report", part))
    assert case.subject == "odd report"
    texts = [p.get_payload(decode=True) for p in forward.walk() if p.get_filename()]
    assert [t for t in texts if b"Reporting-MTA: dns; mx.example" in t]


def test_a_bare_delivery_status_message_is_read_as_a_bounce(processor: Processor) -> None:
    """A top-level message/delivery-status (a broken "delayed" notice) is a bounce, no case."""
    raw = (
        b"From: carol@partner.example\r\nTo: " + SUPPORT.encode() + b"\r\n"
        b"Subject: Delayed Mail (still being retried)\r\nMessage-ID: <dsn1@mx.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.partner.example\r\n\r\n"
        b"Final-Recipient: rfc822; bob@partner.example\r\nAction: delayed\r\nStatus: 4.4.7\r\n"
    )
    processor.spool.put(raw, Envelope("smtp", "carol@partner.example", [SUPPORT]))
    [result] = processor.run_once()
    assert result.status == "done" and result.outcome is not None
    assert result.outcome.action == "ignored bounce (message/delivery-status)"
    assert processor.spool.counts()["quarantined"] == 0


def test_raw_8bit_headers_become_a_case_with_a_forward(processor: Processor) -> None:
    """Undeclared Latin-1 bytes in From, Subject and an attached message's headers."""
    inner = b"From: J\xfcrgen <j@partner.example>\r\nSubject: Gr\xfc\xdfe\r\n\r\nHallo\r\n"
    part = b"Content-Type: message/rfc822\r\n\r\n" + inner
    raw = with_attached("x@partner.example", "eight bit", part)
    raw = raw.replace(b"From: x@partner.example", b"From: Ren\xe9 <rene@partner.example>")
    raw = raw.replace(b"Subject: eight bit", b"Subject: Caf\xe9 order")
    case, forward = forward_of(processor, raw)
    assert case.subject.startswith("Caf") and case.subject.endswith(" order")
    assert str(forward["From"]).endswith(f"<{SUPPORT}>")
    assert [p for p in forward.walk() if p.get_content_type() == "message/rfc822"]


def test_a_part_that_cannot_be_written_gives_a_text_only_forward(
    processor: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When an attachment cannot be written into the forward, the forward goes without it."""
    from mailgated.outbound import compose

    def unwritable(item: compose.Attached) -> email.message.EmailMessage:
        part = email.message.EmailMessage(policy=compose.POLICY)
        part["Content-Type"] = "message/delivery-status"
        part.set_payload("not a list of blocks")  # what once raised AttributeError
        return part

    monkeypatch.setattr(compose, "file_part", unwritable)
    part = b"Content-Type: application/pdf; name=a.pdf\r\n\r\n%PDF-1.4\r\n"
    case, forward = forward_of(processor, with_attached("d@partner.example", "with pdf", part))
    assert case.subject == "with pdf"
    assert not forward.is_multipart()
    assert "a.pdf" in forward.get_payload(decode=True).decode()
