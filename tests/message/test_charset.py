"""decode_bytes(): declared, wrong, unknown and missing charsets, never mojibake for Russian."""

from __future__ import annotations

import pytest

from mailgated.message.charset import decode_bytes

RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю."


@pytest.mark.parametrize("codec", ["cp1251", "koi8-r", "utf-8", "iso-8859-5"])
def test_declared_charset(codec: str) -> None:
    """Text in its declared charset decodes exactly."""
    assert decode_bytes(RUSSIAN.encode(codec), codec) == RUSSIAN


@pytest.mark.parametrize("codec", ["cp1251", "koi8-r", "utf-8"])
@pytest.mark.parametrize("declared", [None, "", "us-ascii", "x-unknown", "iso-8859-1", "utf-8"])
def test_missing_unknown_or_wrong_declaration(codec: str, declared: str | None) -> None:
    """Russian text decodes right whatever the declaration says (none, unknown, wrong)."""
    assert decode_bytes(RUSSIAN.encode(codec), declared) == RUSSIAN


def test_cp1251_declared_as_koi8r_and_back() -> None:
    """cp1251 declared as koi8-r, and koi8-r declared as cp1251, still read as Russian."""
    assert decode_bytes(RUSSIAN.encode("cp1251"), "koi8-r") == RUSSIAN
    assert decode_bytes(RUSSIAN.encode("koi8-r"), "windows-1251") == RUSSIAN


def test_short_russian_words() -> None:
    """Even one short Russian word in cp1251 or koi8-r is detected right."""
    for word in ("Привет", "Счёт", "Отпуск"):
        for codec in ("cp1251", "koi8-r"):
            assert decode_bytes(word.encode(codec), None) == word


def test_western_text_keeps_its_latin_declaration() -> None:
    """Western European text stays Latin-1/cp1252, never mistaken for Cyrillic."""
    text = "Grüße aus München, à bientôt, ñandú."
    assert decode_bytes(text.encode("iso-8859-1"), "iso-8859-1") == text
    german = "Sehr geehrte Damen und Herren, die Lieferung für München ist größer als erwartet."
    assert decode_bytes(german.encode("cp1252"), None) == german


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("Müller", "iso-8859-1"),
        ("Straße", "iso-8859-1"),
        ("Café", "cp1252"),
        ("Über uns", "iso-8859-1"),
        ("Año nuevo", "iso-8859-1"),
        ("Réunion à 15h", "cp1252"),
        ("Olá, está?", "iso-8859-1"),
        ("Søren Ærø", "iso-8859-1"),
        ("Grüße aus Köln", "iso-8859-1"),
        ("Zażółć gęślą jaźń", "cp1250"),
    ],
)
def test_short_undeclared_western_text_reads_right(text: str, codec: str) -> None:
    """A short undeclared value in a Latin-script single-byte charset (a raw 8-bit Subject
    or name from an old mail client) reads as written: detection alone took "Müller" for
    UTF-16 ("ﱍ汬牥"), "Año" for Big5 and "Réunion" for an Arabic code page."""
    assert decode_bytes(text.encode(codec), None) == text


def test_other_scripts_in_mostly_english_text_keep_what_detection_reads() -> None:
    """Mostly English text with Greek words in an undeclared single-byte charset is still
    read as detection reads it, not forced into windows-1252."""
    text = (
        "Hello team, the Greek client wrote: Καλημέρα σας, ευχαριστώ πολύ for the quick "
        "answer. Best regards, Nick from Athens office today."
    )
    assert decode_bytes(text.encode("iso-8859-7"), None) == text


def test_an_undeclared_latin_1_subject_reads_right_in_the_parsed_mail() -> None:
    """A message whose Subject and From name are raw Latin-1 bytes reads right."""
    from mailgated.message.parse import parse

    raw = (
        "From: Jürgen Müller <jm@example.de>\nTo: support@example.com\n"
        "Subject: Straße gesperrt\nMessage-ID: <1@example.de>\n\nHallo.\n"
    ).encode("latin-1")
    mail = parse(raw)
    assert (mail.subject, mail.from_name) == ("Straße gesperrt", "Jürgen Müller")


def test_charset_aliases_and_garbage_never_raise() -> None:
    """Charset aliases work, and garbage bytes or a bogus charset never raise."""
    assert decode_bytes("Привет".encode("cp1251"), "cp-1251") == "Привет"
    assert isinstance(decode_bytes(bytes(range(256)), "utf-8"), str)
    assert decode_bytes(b"", "bogus") == ""
