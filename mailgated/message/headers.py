"""Decode raw header values to clean single-line text, never raising.

Values are taken raw from the parsed message (``raw_items``: no structured parsing, which
raises on malformed address lists and Message-IDs under ``policy.default``), unfolded, and
decoded: RFC 2047 encoded words in their declared charset (detected when the declaration
is unknown or wrong), undeclared 8-bit bytes (which the parser keeps as surrogate escapes)
by detection. ``clean`` removes what must never reach a header we write or a database
column: CR, LF and other control characters (header injection, CVE-2024-6923), NUL bytes
and lone surrogates.
"""

from __future__ import annotations

import inspect
import re
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses

from mailgated.message.charset import decode_bytes

# An addr-spec as plain as it gets: a dot-atom local part and an ASCII host name (RFC 5322
# 3.4.1, RFC 5321 4.1.2), which a header, MAIL and RCPT carry as it is, and what nearly
# every address is: the listener, the sender and the Composer take it without a parser.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
DOT_ATOM = rf"{ATEXT}(?:\.{ATEXT})*"
HOST = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
PLAIN_ADDRESS = re.compile(rf"{DOT_ATOM}@{HOST}")

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


# Python 3.13 (and security releases of 3.11 and 3.12: CVE-2023-27043) reads an address
# header strictly: one malformed address and the whole header gives [("", "")]. Mail we
# receive is read for what can be read, the same on every Python (the lenient reading).
_LENIENT = {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}


def address_pairs(values: list[str]) -> list[tuple[str, str]]:
    """(display name, address) of every address in these header values, as far as they can
    be read (`email.utils.getaddresses`, not strict)."""
    return getaddresses(values, **_LENIENT)


def raw_headers(message: Message) -> dict[str, list[str]]:
    """Every header's raw values by lower-cased name, unfolded, in header order."""
    headers: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        headers.setdefault(str(name).lower(), []).append(_FOLD.sub("", str(value)))
    return headers


def decode_header_value(value: str) -> str:
    """The text of a raw header value: encoded words and 8-bit bytes decoded."""
    if "=?" not in value:
        return _undeclared(value)
    try:
        chunks = decode_header(value)
    except Exception:  # a malformed encoded word: read the value as it stands
        return _undeclared(value)
    out = []
    for data, charset in chunks:
        if isinstance(data, str):
            out.append(_undeclared(data))
        elif charset is None:
            out.append(_undeclared(data.decode("raw-unicode-escape")))
        else:
            out.append(decode_bytes(data, charset))
    return "".join(out)


def clean(text: str) -> str:
    """Text on one line: control characters folded to single spaces, surrogates replaced."""
    if text.isprintable():
        return text.strip()
    text = _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", text))
    return " ".join(text.split())


def _undeclared(text: str) -> str:
    """Text whose non-ASCII characters are surrogate-escaped raw bytes of unknown charset."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    try:
        return decode_bytes(text.encode("utf-8", "surrogateescape"), None)
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return _SURROGATE.sub("\ufffd", text)
