"""The odd real-world messages of tests/data: each reads correctly, or fails cleanly."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from mailgated.message.parse import ParsedMail, ParseError, parse

DATA = Path(__file__).parent.parent / "data"
CORPUS = sorted(DATA.glob("*.eml"))
RUSSIAN_SUBJECT = "Вопрос по счёту 1042"
RUSSIAN_BODY = "Добрый день!\n\nПрошу проверить счёт 1042: сумма не совпадает с договором."


def read(name: str) -> ParsedMail:
    return parse((DATA / name).read_bytes())


def no_line_breaks(mail: ParsedMail) -> None:
    names = [n for n, _ in mail.to + mail.cc]
    addrs = [a for _, a in mail.to + mail.cc] + mail.reply_to + mail.in_reply_to + mail.references
    fields = [mail.message_id, mail.subject, mail.from_name, mail.from_addr, *names, *addrs]
    fields += [a.filename for a in mail.attachments]
    for value in fields:
        assert "\r" not in value and "\n" not in value and "\x00" not in value, value


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_corpus_file_parses_to_clean_fields(path: Path) -> None:
    """Every corpus mail parses to clean one-line fields, or to a ParseError with a reason."""
    try:
        mail = parse(path.read_bytes())
    except ParseError as exc:  # allowed, with a reason an operator can read
        assert str(exc)
        return
    no_line_breaks(mail)
    assert "\x00" not in mail.text


def test_corpus_is_not_empty() -> None:
    """The corpus holds the mails these tests rely on."""
    assert len(CORPUS) >= 30


@pytest.mark.parametrize(
    "name",
    [
        "ru_cp1251_declared.eml",
        "ru_koi8r_declared.eml",
        "ru_cp1251_undeclared.eml",
        "ru_koi8r_undeclared.eml",
        "ru_cp1251_declared_utf8.eml",
        "ru_cp1251_declared_latin1.eml",
    ],
)
def test_russian_subject_and_body_decode(name: str) -> None:
    """Russian subjects and bodies decode in every charset of the corpus."""
    mail = read(name)
    assert mail.subject == RUSSIAN_SUBJECT
    assert mail.text.startswith(RUSSIAN_BODY)
    assert mail.text.endswith("С уважением,\nОльга Петрова")


@pytest.mark.parametrize("name", ["ru_cp1251_undeclared.eml", "ru_koi8r_declared.eml"])
def test_russian_display_name_decodes(name: str) -> None:
    """Russian display names decode."""
    assert read(name).from_name == "Ольга Петрова"


def test_unknown_charset_names_are_detected() -> None:
    """An unknown charset name is detected from the bytes."""
    mail = read("unknown_charset.eml")
    assert mail.subject == "Grüße"
    assert mail.text == "Grüße aus München, die Lieferung ist da."


def test_html_only_outlook_mail_reads_as_text() -> None:
    """Outlook's HTML-only mail reads as clean text."""
    mail = read("html_only_outlook.eml")
    assert mail.from_html
    assert mail.text == (
        "Hello,\n\norder 4711 has not arrived. Tracking: track.example/4711 "
        "<https://track.example/4711>\n\nThanks & regards,\nJane"
    )


def test_non_ascii_attachment_names() -> None:
    """RFC 2231 and encoded-word attachment names decode."""
    (rfc2231,) = read("attachment_rfc2231.eml").attachments
    assert rfc2231.filename == "Счёт №1042.pdf"
    assert rfc2231.content_type == "application/pdf" and rfc2231.size == 1040
    assert rfc2231.data is not None and rfc2231.data.startswith(b"%PDF")
    (rfc2047,) = read("attachment_rfc2047_filename.eml").attachments
    assert rfc2047.filename == "Lieferschein Übergabe.pdf"


def test_path_traversal_and_control_characters_in_names_are_made_safe() -> None:
    """Attachment names with paths or control characters are made safe."""
    names = [a.filename for a in read("attachment_traversal.eml").attachments]
    assert names == [
        "passwd",
        "C_Windowssystem32evil.dll",
        "htaccess",
        "attachment-4.bin",
        "invoicefdp.exe",
        "reportrnX-Evil_ 1.txt",
        "attachment-7.png",
    ]


def test_empty_body() -> None:
    """An empty body is empty text and no attachments."""
    mail = read("empty_body.eml")
    assert (mail.text, mail.attachments) == ("", [])


def test_nul_bytes_are_dropped() -> None:
    """NUL bytes are dropped from subject and text."""
    mail = read("nul_bytes.eml")
    assert (mail.subject, mail.text) == ("null byte", "beforeafter")


def test_bare_lf_and_mixed_line_endings() -> None:
    """Bare LF and mixed line endings read as ordinary lines."""
    mail = read("bare_lf.eml")
    assert (mail.subject, mail.text) == ("bare line feeds", "line one\nline two")
    assert read("mixed_line_endings.eml").text == "line one\nline two\nline three"


def test_header_injection_subject_stays_on_one_line() -> None:
    """A subject carrying an encoded Bcc line stays one line."""
    assert read("header_injection.eml").subject == "hi Bcc: victim@example.com"


def test_forwarded_message_is_an_eml_attachment() -> None:
    """A forwarded message is kept as an .eml attachment."""
    mail = read("forwarded_rfc822.eml")
    assert mail.text == "Please see the attached complaint."
    (forwarded,) = mail.attachments
    assert (forwarded.filename, forwarded.content_type) == ("forwarded.eml", "message/rfc822")
    assert forwarded.data is not None
    assert b"Message-ID: <orig-complaint@customer.example>" in forwarded.data
    assert b"Two of five boxes arrived damaged." in forwarded.data


def test_apple_mail_body_split_around_an_image() -> None:
    """Apple Mail's body split around an image is joined again."""
    mail = read("apple_mail_split_body.eml")
    assert mail.text == "The error looks like this:\n\nIt happens every morning."
    assert [a.filename for a in mail.attachments] == ["Screenshot.png"]


def test_malformed_headers_fall_back_to_what_can_be_read() -> None:
    """Malformed headers give what can be read of them."""
    mail = read("malformed_headers.eml")
    assert mail.from_addr == "broken@partner.example"
    assert mail.to == [("x", "y@example.com")]
    assert mail.cc == [("broken encoded", "cc@partner.example")]
    assert mail.message_id == "<no-brackets@partner.example>"
    assert mail.in_reply_to == ["<real@partner.example>"]
    assert mail.date is None
    assert mail.text == "body"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("multipart_without_boundary.eml", "just text really"),
        ("truncated_multipart.eml", "the beginning"),
        ("bad_base64.eml", "Hello world"),
    ],
)
def test_broken_structure_still_yields_the_text(name: str, text: str) -> None:
    """A broken MIME structure still yields the text."""
    assert read(name).text == text


def test_attachment_over_the_limit_is_truncated() -> None:
    """An attachment over the size limit is marked truncated, not kept whole."""
    big = b"x" * 3_000_000
    encoded = base64.encodebytes(big)
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--b\r\nContent-Type: application/zip\r\n"
        b'Content-Disposition: attachment; filename="big.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n"
    )
    (part,) = parse(raw, max_attachment=1_000_000).attachments
    assert (part.filename, part.size, part.data, part.truncated) == (
        "big.zip",
        3_000_000,
        None,
        True,
    )
    (whole,) = parse(raw).attachments
    assert whole.data == big and not whole.truncated


@pytest.mark.parametrize("path", CORPUS[::3], ids=[p.name for p in CORPUS[::3]])
def test_mutated_corpus_messages_parse_or_fail_cleanly(path: Path) -> None:
    """Seeded byte mutations: only ParsedMail or ParseError ever comes out."""
    rng = random.Random(path.name)
    original = path.read_bytes()
    for _ in range(40):
        data = bytearray(original)
        for _ in range(rng.randint(1, 12)):
            pos = rng.randrange(len(data))
            action = rng.random()
            if action < 0.5:
                data[pos] = rng.randrange(256)
            elif action < 0.75:
                data[pos:pos] = rng.choice([b"=?", b"?=", b"\r\n", b"--", b";", b'"', b"\x00"])
            else:
                del data[pos : pos + rng.randint(1, 20)]
        try:
            mail = parse(bytes(data))
        except ParseError as exc:
            assert str(exc)
            continue
        no_line_breaks(mail)
