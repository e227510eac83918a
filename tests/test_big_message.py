"""A big message costs about its own size to process, and comes out whole (issue 12 item 15):
large file bodies bypass the standard parser, the hash reads in chunks, SQLite gets the raw
message by incremental blob I/O."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import tracemalloc
from pathlib import Path

import pytest
from processing_helpers import support_processor

from mailgated.config import ProcessingConfig
from mailgated.db import Database
from mailgated.intake.identity import content_hash
from mailgated.intake.spool import Envelope, Spool
from mailgated.message.parse import parse
from mailgated.models import Attachment, StoredMessage

SUPPORT = "support@example.com"
MB = 1024 * 1024


def file_part(data: bytes, content_type: str = "application/pdf", name: str = "scan.pdf") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        f"Content-Type: {content_type}; name={name}\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename={name}\r\n\r\n"
    ).encode() + encoded


def big_mail(*parts: bytes) -> bytes:
    head = (
        b"From: Big <big@partner.example>\r\nTo: " + SUPPORT.encode() + b"\r\n"
        b"Subject: scans\r\nMessage-ID: <big@partner.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nHere they are.\r\n"
    )
    return head + b"".join(b"--XX\r\n" + p for p in parts) + b"--XX--\r\n"


def test_large_files_come_out_whole_also_inside_an_attached_message() -> None:
    """Two 2 MB files and one inside a forwarded message: every byte as sent."""
    one, two = os.urandom(2 * MB), os.urandom(2 * MB + 1)
    inner = (
        b"From: in@partner.example\r\nSubject: inner\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=YY\r\n\r\n--YY\r\nContent-Type: text/plain"
        b"\r\n\r\ninner text\r\n--YY\r\n"
        + file_part(one, "application/zip", "a.zip")
        + b"--YY--\r\n"
    )
    raw = big_mail(
        file_part(one),
        file_part(two, "image/png", "b.png"),
        b"Content-Type: message/rfc822\r\n\r\n" + inner,
    )
    mail = parse(raw, max_attachment=100 * MB)
    assert mail.text == "Here they are."
    pdf, png, eml = mail.attachments
    assert (pdf.filename, pdf.data, pdf.size) == ("scan.pdf", one, len(one))
    assert (png.filename, png.data) == ("b.png", two)
    forwarded = email.message_from_bytes(eml.data or b"", policy=email.policy.default)
    [zipped] = [p for p in forwarded.walk() if p.get_content_type() == "application/zip"]
    assert zipped.get_payload(decode=True) == one


def test_a_file_over_the_limit_is_named_with_its_exact_size() -> None:
    """Recorded by name and size only, the size exact though the file was never decoded."""
    data = os.urandom(3 * MB + 2)
    [part] = parse(big_mail(file_part(data)), max_attachment=MB).attachments
    assert (part.size, part.data, part.truncated) == (len(data), None, True)


def test_parsing_and_hashing_a_big_message_cost_about_its_size() -> None:
    """Python's own allocations while parsing and hashing a 12 MB message stay under 1.5x
    its size (the standard parser alone took about 8x)."""
    raw = big_mail(file_part(os.urandom(9 * MB)))
    tracemalloc.start()
    try:
        mail = parse(raw, max_attachment=100 * MB)
        content_hash(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(mail.attachments[0].data or b"") == 9 * MB
    assert peak < 1.5 * len(raw), f"{peak / len(raw):.2f}x"


def test_claiming_a_big_spool_file_reads_it_once(tmp_path: Path) -> None:
    """The claimed message is the spooled one; the read holds it once, not twice."""
    spool = Spool(tmp_path / "spool")
    raw = big_mail(file_part(os.urandom(9 * MB)))
    spool.put(raw, Envelope("smtp", "big@partner.example", [SUPPORT]))
    tracemalloc.start()
    try:
        [claimed] = spool.claim_batch(1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert claimed.raw == raw and claimed.envelope.recipients == [SUPPORT]
    assert peak < 1.2 * len(raw), f"{peak / len(raw):.2f}x"


@pytest.fixture
def processor(db: Database, tmp_path: Path) -> object:
    big = ProcessingConfig(max_attachment_size=100 * MB)
    return support_processor(db, tmp_path, SUPPORT, processing=big)


def test_a_big_message_is_stored_byte_for_byte(processor: object, db: Database) -> None:
    """The raw message (written in place on SQLite) and its file are stored exactly."""
    from mailgated.process import Processor

    assert isinstance(processor, Processor)
    data = os.urandom(3 * MB)
    raw = big_mail(file_part(data))
    processor.spool.put(raw, Envelope("smtp", "big@partner.example", [SUPPORT]))
    assert [r.status for r in processor.run_once()] == ["done"]
    with db.session() as session:
        stored = session.query(StoredMessage).one()
        assert bytes(stored.raw) == raw
        [attachment] = session.query(Attachment).all()
        assert (attachment.filename, bytes(attachment.data or b"")) == ("scan.pdf", data)
