"""parse(): headers, bodies, attachments and the guards, on messages built in the test."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgated.message.parse import ParsedMail, ParseError, parse

DATA = Path(__file__).parent.parent / "data"


def mail(headers: str, body: bytes = b"Hello.\n") -> bytes:
    return headers.strip().replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


PLAIN = mail(
    """
From: "Doe, Jane" <Jane.Doe@Example.COM>
To: Support <support@example.com>, other@example.org
Cc: =?utf-8?q?J=C3=BCrgen?= <j@example.de>
Reply-To: replies@example.com
Subject: Printer jam
Date: Mon, 03 Mar 2025 11:32:34 +0300
Message-ID: <abc@example.com>
In-Reply-To: <p1@example.com>
References: <p0@example.com>
 <p1@example.com>
"""
)


def test_plain_mail_headers_and_body() -> None:
    """A plain mail's addresses, subject, date and body are read."""
    m = parse(PLAIN)
    assert isinstance(m, ParsedMail)
    assert (m.from_name, m.from_addr) == ("Doe, Jane", "jane.doe@example.com")
    assert m.to == [("Support", "support@example.com"), ("", "other@example.org")]
    assert m.cc == [("Jürgen", "j@example.de")]
    assert m.reply_to == ["replies@example.com"]
    assert m.subject == "Printer jam"
    assert m.date == datetime(2025, 3, 3, 8, 32, 34, tzinfo=UTC)
    assert m.message_id == "<abc@example.com>"
    assert m.in_reply_to == ["<p1@example.com>"]
    assert m.references == ["<p0@example.com>", "<p1@example.com>"]
    assert m.text == "Hello."
    assert not m.from_html and m.attachments == []
    assert m.header("subject") == "Printer jam"
    assert m.header("X-Missing") == ""


def test_header_injection_subject_is_one_line() -> None:
    """An encoded line break in a subject stays on one line."""
    m = parse(mail("From: a@example.com\nSubject: =?UTF-8?Q?hi=0ABcc:_victim@example.com?="))
    assert m.subject == "hi Bcc: victim@example.com"
    assert m.header("Subject") == "hi Bcc: victim@example.com"


def test_missing_headers() -> None:
    """A mail without headers reads as empty fields, not an error."""
    m = parse(b"\r\n\r\n")
    assert (m.message_id, m.subject, m.from_addr, m.date, m.text) == ("", "", "", None, "")


def test_html_only_is_readable_text() -> None:
    """An HTML-only mail reads as text, with its links."""
    body = b"<html><body><p>Hello <b>Bob</b>,</p><p>see <a href='https://x.example/'>site</a></p>"
    m = parse(mail("From: a@example.com\nContent-Type: text/html; charset=utf-8", body))
    assert m.from_html
    assert m.text == "Hello Bob,\n\nsee site <https://x.example/>"


def test_alternative_prefers_plain() -> None:
    """multipart/alternative gives the plain-text part."""
    body = b"""--b\r
Content-Type: text/plain; charset=utf-8\r
\r
plain text\r
--b\r
Content-Type: text/html; charset=utf-8\r
\r
<p>html text</p>\r
--b--\r
"""
    m = parse(mail('From: a@example.com\nContent-Type: multipart/alternative; boundary="b"', body))
    assert m.text == "plain text"
    assert not m.from_html and m.attachments == []


def nested(depth: int) -> bytes:
    head = "".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'
        for i in range(depth)
    )
    tail = "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
    top = 'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n'
    return (
        top + head + f"--b{depth}\r\nContent-Type: text/plain\r\n\r\nx\r\n--b{depth}--\r\n" + tail
    ).encode()


def test_deep_nesting_is_a_parse_error() -> None:
    """MIME nesting past the cap is a ParseError, not a crash."""
    assert parse(nested(20)).text == "x"
    with pytest.raises(ParseError, match="nesting deeper than 100"):
        parse(nested(200))


def test_too_many_parts_is_a_parse_error() -> None:
    """More MIME parts than the cap is a ParseError."""
    part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    top = b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    with pytest.raises(ParseError, match="more than 10000 MIME parts"):
        parse(top + part * 10_001 + b"--b--\r\n")


def test_deep_message_rfc822_nesting_is_a_parse_error() -> None:
    """message/rfc822 nested past the cap is a ParseError."""
    inner = b"From: x@example.com\r\nSubject: core\r\n\r\ncore\r\n"
    for _ in range(200):
        inner = b"From: x@example.com\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    with pytest.raises(ParseError, match="nesting deeper than 100"):
        parse(inner)


def test_many_forwarded_siblings_are_not_deep() -> None:
    """Many forwarded messages side by side are not deep nesting."""
    part = (
        b"--d\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: x@example.com\r\nSubject: one\r\n\r\nbody\r\n"
    )
    top = b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="d"\r\n\r\n'
    mail = parse(top + part * 150 + b"--d--\r\n")
    assert len(mail.attachments) == 150
    assert mail.attachments[1].filename == "forwarded-2.eml"


def test_caps_are_parameters() -> None:
    """The depth and part caps are parameters."""
    with pytest.raises(ParseError, match="nesting deeper than 5"):
        parse(nested(6), max_depth=5)
    part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    top = b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    with pytest.raises(ParseError, match="more than 10 MIME parts"):
        parse(top + part * 11 + b"--b--\r\n", max_parts=10)


def test_tree_check_after_parse_catches_what_the_scan_missed() -> None:
    """The tree check after parsing catches what the byte scan missed."""
    from email import message_from_bytes, policy

    from mailgated.message.structure import StructureError, check_tree

    tree = message_from_bytes(nested(30), policy=policy.default)
    check_tree(tree, 100, 10_000)
    with pytest.raises(StructureError, match="deeper than 10"):
        check_tree(tree, 10, 10_000)
    with pytest.raises(StructureError, match="more than 5"):
        check_tree(tree, 100, 5)


@pytest.mark.parametrize(
    "error",
    [
        RecursionError(),
        AttributeError("x"),
        IndexError(),
        LookupError("bogus"),
        UnicodeEncodeError("ascii", "é", 0, 1, "no"),
        ValueError("bad"),
    ],
)
def test_any_parser_exception_becomes_a_parse_error(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Any exception inside the stdlib parser becomes a ParseError with a reason."""
    from mailgated.message import parse as parse_module

    def explode(raw: bytes) -> None:
        raise error

    monkeypatch.setattr(parse_module._PARSER, "parsebytes", explode)
    with pytest.raises(ParseError, match=f"unreadable message \\({type(error).__name__}"):
        parse(PLAIN)


def test_non_text_single_part_message_is_an_attachment() -> None:
    """A single-part PDF message is an attachment with no text."""
    raw = mail("From: a@example.com\nContent-Type: application/pdf", b"%PDF-1.4\n")
    m = parse(raw)
    assert m.text == ""
    assert [(a.filename, a.data) for a in m.attachments] == [("attachment-1.pdf", b"%PDF-1.4\n")]


def test_named_inline_text_is_the_body_when_there_is_no_other() -> None:
    """A named inline text part is the body when there is no other."""
    headers = (
        "From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
        'Content-Disposition: inline; filename="message.txt"'
    )
    assert parse(mail(headers, b"the text\n")).text == "the text"
    attached = headers.replace("inline;", "attachment;")
    m = parse(mail(attached, b"the text\n"))
    assert m.text == "" and [a.filename for a in m.attachments] == ["message.txt"]


def test_nul_in_a_charset_name_is_read_by_detection() -> None:
    """A NUL in a charset name falls back to detection."""
    headers = 'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"'
    body = (
        b'--b\r\nContent-Type: text/plain; charset="ut\x00f-8"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n\r\nh\xc3\xa9\r\n--b--\r\n"
    )
    assert parse(mail(headers, body)).text == "hé"


def test_unparseable_content_type_is_read_as_plain_text() -> None:
    """An unparseable Content-Type is read as plain text."""
    m = parse(mail("From: a@example.com\nContent-Type: text/html; x*", b"still readable\n"))
    assert m.text == "still readable"


def test_encoded_word_with_colon_and_at_does_not_change_the_sender() -> None:
    """A forged display name `=?UTF-8?Q?Evil=0ABcc:_x@evil?=` must not become the address."""
    raw = (
        b"From: =?UTF-8?Q?Evil=0ABcc:_x@evil.example?= <p@partner.example>\r\n"
        b"Cc: =?utf-8?q?A?= =?utf-8?q?B?= <ab@x.example>, c@d.example\r\n"
        b"Subject: t\r\n\r\nhi\r\n"
    )
    mail = parse(raw)
    assert (mail.from_name, mail.from_addr) == ("Evil Bcc: x@evil.example", "p@partner.example")
    assert mail.cc == [("AB", "ab@x.example"), ("", "c@d.example")]


def test_plain_mime_headers_answer_as_the_parsed_header_does() -> None:
    """The MIME headers read without the full parse (`_PLAIN_MIME`) answer every question
    processing asks — type, charset, boundary, file name, disposition, encoding — as the
    fully parsed header does, for every message of the test data."""
    import email

    from mailgated.message import parse as module

    plain = 0
    for path in sorted(DATA.rglob("*.eml")):
        raw = path.read_bytes()
        fast = email.message_from_bytes(raw, policy=module._MimePolicy())
        full = email.message_from_bytes(raw, policy=email.policy.default)
        for ours, theirs in zip(fast.walk(), full.walk(), strict=True):
            asked = [
                (p.get_content_type(), p.get_content_charset(), p.get_boundary(),
                 p.get_filename(), p.get_content_disposition(),
                 str(p.get("content-transfer-encoding", "")).lower())
                for p in (ours, theirs)
            ]  # fmt: skip
            assert asked[0] == asked[1], path.name
            plain += sum(
                isinstance(ours.get(name), str) and not hasattr(ours.get(name), "params")
                for name in ("content-type", "content-disposition")
                if ours.get(name) is not None
            )
    assert plain > 20  # the fast way was taken, not only the parse


def test_addresses_read_the_same_from_a_long_list_and_again_from_a_short_one() -> None:
    """A To of 60 addresses (read without the memo) gives every address; a short Cc read
    twice gives the same answer each time, and changing one answer leaves the next."""
    many = ", ".join(f"Person {n} <person{n}@partner.example>" for n in range(60))
    raw = (
        f"From: Sylvie <s@partner.example>\r\nTo: {many}\r\nCc: Team <team@partner.example>\r\n"
        "Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n"
    ).encode()
    first, second = parse(raw), parse(raw)
    assert len(many) > 1000 and [a for _, a in first.to][-1] == "person59@partner.example"
    assert first.to == second.to and len(first.to) == 60
    first.cc.append(("x", "x@y"))
    assert second.cc == [("Team", "team@partner.example")]


def test_a_hostile_content_type_is_read_without_stalling() -> None:
    """A Content-Type of 200,000 spaces before a stray character (a regular expression
    that backtracks takes minutes on it) is read at once, and as the same header with a
    few spaces is: the part kept as a file, nothing lost."""
    import subprocess
    import sys

    def message(spaces: int) -> bytes:
        return (
            b"From: s@partner.example\r\nSubject: x\r\nMessage-ID: <a@b>\r\n"
            b"Content-Type: text/plain" + b" " * spaces + b"x\r\n\r\nbody\r\n"
        )

    def reading(mail: ParsedMail) -> str:
        return repr((mail.text, [(a.filename, a.size, a.data) for a in mail.attachments]))

    # in a process of its own: a regular expression holds the interpreter while it runs
    child = (
        "import sys; from mailgated.message.parse import parse; m = parse(sys.stdin.buffer.read());"
        " print(repr((m.text, [(a.filename, a.size, a.data) for a in m.attachments])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=message(200_000), capture_output=True, timeout=60
    )  # not a timing: the backtracking expression needed about 300 s here
    short = parse(message(20))
    assert done.stdout.decode().strip() == reading(short)
    assert [a.data for a in short.attachments] == [b"body\r\n"]
