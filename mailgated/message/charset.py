"""Turn bytes of a declared, wrong or missing charset into text, never raising.

The declared charset is trusted when it decodes cleanly and the result is plausible;
otherwise the charset is detected. Detection is the expensive path (charset-normalizer),
so two cheap rules come first: strict UTF-8 (which almost never decodes text that is not
UTF-8), then a Cyrillic rule for the single-byte encodings Russian mail still arrives in
(windows-1251 and koi8-r): text in the right one of the two is mostly lower case, text in
the wrong one mostly upper case, because koi8-r puts lower-case letters where
windows-1251 puts upper-case ones. Text of mostly ASCII letters that neither rule reads
(a raw 8-bit "Müller" in a Subject) is read in a single-byte charset mail is written in:
windows-1252 unless detection names another such one (Greek words in English text
stay Greek).
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

# Latin single-byte charsets: a declaration of one of these over text that is mostly
# high bytes is the classic Russian mail mistake (cp1251 text labelled iso-8859-1).
_LATIN = frozenset({"ascii", "latin-1", "iso8859-1", "iso8859-15", "cp1252", "iso8859-2", "cp1250"})
_CYRILLIC_SINGLE_BYTE = ("cp1251", "koi8-r")
_HIGH = bytes(range(0x80, 0x100))
# the 64 letters at 0xC0-0xFF in both cp1251 and koi8-r, and their "ё"/"Ё"
_HIGH_LETTERS = bytes(range(0xC0, 0x100)) + b"\xa8\xb8\xa3\xb3"
_ASCII_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_LOWER_CYRILLIC = re.compile("[\u0430-\u044f\u0450-\u045f]")
_UPPER_CYRILLIC = re.compile("[\u0400-\u042f]")
_ALIASES = {"cp-1251": "cp1251", "win-1251": "cp1251", "x-cp1251": "cp1251", "koi8": "koi8-r"}
# The single-byte charsets mail is written in (charset-normalizer's names): the Windows
# code pages, the ISO 8859 parts, KOI8, Mac Roman, Thai. Text that is mostly ASCII letters
# with a few others ("Müller", "Réunion à 15h") and no UTF-8 is in one of these; on such
# short input charset-normalizer often answers UTF-16 (of text without a NUL byte), Big5
# or an old IBM code page instead: "Müller" came out "ﱍ汬牥", "Réunion" "Rﻠunion"
# (cp1006). Its answer is taken only when it is one of these; else windows-1252.
_MAIL_SINGLE_BYTE = frozenset(
    {
        "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257",
        "cp1258", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_5", "iso8859_6",
        "iso8859_7", "iso8859_8", "iso8859_9", "iso8859_10", "iso8859_11", "iso8859_13",
        "iso8859_14", "iso8859_15", "iso8859_16", "koi8_r", "koi8_u", "mac_roman", "cp874",
        "tis_620",
    }
)  # fmt: skip


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Decode data that claims to be in charset declared (None: no declaration)."""
    if data.isascii():
        return data.decode("ascii")
    codec = _codec(declared)
    if codec is not None:
        try:
            text = data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if _plausible(codec, data, text):
                return text
    return detect(data)


def detect(data: bytes) -> str:
    """Decode data of unknown charset: UTF-8, then Cyrillic single-byte, then detection;
    text of mostly ASCII letters only ever as a single-byte charset mail is written in
    (windows-1252 unless detection names another such one)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    cyrillic = _cyrillic_guess(data)
    if cyrillic is not None:
        return cyrillic
    best = charset_normalizer.from_bytes(data).best()
    if _high_byte_ratio(data) < 0.5 and (best is None or best.encoding not in _MAIL_SINGLE_BYTE):
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:  # one of its five unassigned bytes
            return data.decode("latin-1")
    if best is not None:
        return str(best)
    return data.decode("utf-8", "replace")


def _codec(declared: str | None) -> str | None:
    """The Python codec name of a declared charset, or None if unknown or absent."""
    if not declared:
        return None
    name = declared.strip().strip('"').lower()
    name = _ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _plausible(codec: str, data: bytes, text: str) -> bool:
    """False when a clean decode still looks like the wrong charset."""
    if codec in _LATIN:
        return _high_byte_ratio(data) < 0.5
    if codec in _CYRILLIC_SINGLE_BYTE:
        return _lower_ratio(text) >= 0.5
    return True


def _high_byte_ratio(data: bytes) -> float:
    """Share of high bytes among letters (ASCII letters plus all bytes >= 0x80)."""
    high = len(data) - len(data.translate(None, _HIGH))
    ascii_letters = len(data) - len(data.translate(None, _ASCII_LETTERS))
    return high / max(1, high + ascii_letters)


def _lower_ratio(text: str) -> float:
    """Share of lower-case letters among the Cyrillic letters of text (1.0 if none)."""
    sample = text[:4000]
    lower = len(_LOWER_CYRILLIC.findall(sample))
    upper = len(_UPPER_CYRILLIC.findall(sample))
    return lower / (lower + upper) if lower + upper else 1.0


def _cyrillic_guess(data: bytes) -> str | None:
    """cp1251 or koi8-r text when the bytes look like one of them, else None."""
    high = len(data) - len(data.translate(None, _HIGH))
    letters = len(data) - len(data.translate(None, _HIGH_LETTERS))
    if _high_byte_ratio(data) < 0.5 or letters < 0.8 * high:
        return None
    candidates = []
    for codec in _CYRILLIC_SINGLE_BYTE:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        candidates.append((_lower_ratio(text), text))
    if not candidates:
        return None
    ratio, text = max(candidates, key=lambda c: c[0])
    return text if ratio >= 0.5 else None
