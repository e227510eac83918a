"""Read one raw message into a ParsedMail, or raise ParseError with a readable reason.

The parse is guarded: the structure is checked before the standard library recurses into
it (MIME depth and part count caps), and any exception of the parser becomes ParseError,
which the processing worker turns into a quarantine with ``str(exc)`` as the reason.

Headers are read from their raw form (``raw_items``) and decoded here (RFC 2047 encoded
words, undeclared 8-bit bytes by detection), so a malformed header never raises and the
costly structured-header parsing of ``policy.default`` is only paid by code that asks the
``message`` object for it. Every string field is CR/LF-free: RFC 2047 can encode a line
break (``=?UTF-8?Q?hi=0ABcc:_x?=``), and a header built from it must not grow a new line.

The body ``text`` is text/plain when there is one (the plain alternative of a
multipart/alternative), else HTML converted to readable text; further inline text parts
without a file name (Apple Mail splits a body around inline images) are appended. Every
other leaf is an attachment, with a safe file name. A message/rfc822 part (a forward as
attachment, the returned message of a bounce) is kept whole as an attachment named
``forwarded.eml`` (its text is not appended: the history shows the attachment, and the
raw message is stored anyway); its inner parts are not extracted.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from typing import Any

from mailgated.message.body import Leaf, body_text, leaves
from mailgated.message.filenames import safe_filename
from mailgated.message.headers import address_pairs, clean, decode_header_value, raw_headers
from mailgated.message.lift import Lifted, lift
from mailgated.message.structure import StructureError, check_structure, check_tree


class ParseError(Exception):
    """The message cannot be read; str(exc) is the quarantine reason an operator reads."""


@dataclass(frozen=True)
class Part:
    """One attachment; data is None when it is larger than the limit (truncated)."""

    filename: str
    content_type: str
    size: int
    data: bytes | None
    truncated: bool


@dataclass(frozen=True)
class ParsedMail:
    """What threading, classification and storage read from one message."""

    message: EmailMessage
    message_id: str
    subject: str
    from_name: str
    from_addr: str
    reply_to: list[str]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    in_reply_to: list[str]
    references: list[str]
    date: datetime | None
    text: str
    from_html: bool
    attachments: list[Part]

    @functools.cached_property
    def headers(self) -> dict[str, list[str]]:
        """Every header's raw values by lower-cased name (read once: classification asks
        for a dozen headers of every message)."""
        return raw_headers(self.message)

    def header(self, name: str) -> str:
        """First value of a header, decoded, CR/LF-free, "" if absent (never raises)."""
        try:
            return clean(decode_header_value(_first(self.headers, name.lower())))
        except Exception:
            return ""

    def header_all(self, name: str) -> list[str]:
        """Every value of a header, decoded and CR/LF-free, in header order."""
        return [clean(decode_header_value(v)) for v in self.headers.get(name.lower(), [])]


class _MimePolicy(EmailPolicy):
    """policy.default with the MIME structure headers' parse memoised.

    The parser and the message methods re-parse Content-Type for every question asked
    (maintype, subtype, boundary, charset): that parse dominated the cost of a message.
    Header objects are immutable, so one per distinct (name, value) can be shared.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name") or name.lower() not in _MIME_HEADERS:
            return super().header_fetch_parse(name, value)
        unfolded = "".join(value.splitlines())
        if (
            len(unfolded) <= _PLAIN_MIME_MOST
            and unfolded.isascii()
            and "=?" not in unfolded
            and _PLAIN_MIME.fullmatch(unfolded)
        ):
            return unfolded
        return _mime_header(name, value)


_MIME_HEADERS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})
# A MIME header in the form nearly all mail has: a type/subtype, disposition or encoding,
# then parameters whose values are tokens or plain quoted strings (no RFC 2231 `name*=`,
# no comments, no escapes; encoded words are refused above). For such a value every
# question asked of it (type, boundary, charset, filename, encoding: all read from the
# text) has the answer the parsed header gives, without the parse: it cost 4 % of
# processing, since every multipart message brings a new boundary, which no cache holds.
# Every run of characters is possessive (`*+`, `++`): no backtracking, so a hostile value
# (thousands of spaces before a stray character) is refused in linear time, not quadratic.
_MIME_TOKEN = r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]++"
_PLAIN_MIME = re.compile(
    rf"\s*+{_MIME_TOKEN}(?:/{_MIME_TOKEN})?"
    rf"""(?:\s*+;\s*+[A-Za-z0-9_.-]++\s*+=\s*+(?:{_MIME_TOKEN}|"[^"\\]*+"))*+\s*+;?\s*+"""
)
_PLAIN_MIME_MOST = 2000  # characters: a longer MIME header is parsed in full


# 256: the questions repeat within one message and for the common values; each entry is
# ~10 KB (a parse tree and a class of its own), and real mail has a new boundary in every
# multipart Content-Type, so 4096 entries kept ~40 MB in each worker (issue 15).
@functools.lru_cache(maxsize=256)
def _mime_header(name: str, value: str) -> Any:
    try:
        return policy.default.header_fetch_parse(name, value)
    except Exception:  # unparseable: the RFC 2045 5.2 default, or the safe choice
        return policy.default.header_fetch_parse(name, _MIME_FALLBACK[name.lower()])


_MIME_FALLBACK = {
    "content-type": "text/plain; charset=us-ascii",  # RFC 2045 5.2
    "content-disposition": "attachment",  # keep the part as a file
    "content-transfer-encoding": "8bit",  # the content as it stands
}


_PARSER = BytesParser(policy=_MimePolicy())
_MSGID = re.compile(r"<[^<>\s]*>")
_LOCAL_ONLY = re.compile(r"[\w.+-]+")
_ADDRESS = re.compile(r"[^\s<>\"(),;:@]+@[^\s<>\"(),;:@]+")
# An encoded word outside quotes, whose encoded text may hold ":" or "@" (malformed in a
# phrase, RFC 2047 §5, but seen in forged mail): quoted before the address parser sees it.
_BARE_ENCODED_WORD = re.compile(r'(?<!")(=\?[^?\s"]+\?[QqBb]\?[^?\s"]*\?=)(?!")')


def parse(
    raw: bytes,
    *,
    max_attachment: int = 25 * 1024 * 1024,
    max_depth: int = 100,
    max_parts: int = 10_000,
) -> ParsedMail:
    """Parse raw; raises ParseError (only) when the message cannot be read."""
    try:
        source, lifted = lift(raw)  # large file bodies never go through the parser
        check_structure(source, max_depth, max_parts)
        message = _PARSER.parsebytes(source)
        del source
        assert isinstance(message, EmailMessage)
        check_tree(message, max_depth, max_parts)
        return _build(message, max_attachment, lifted)
    except StructureError as exc:
        raise ParseError(str(exc)) from exc
    except Exception as exc:  # any parser failure is a quarantine, never a crash
        raise ParseError(_reason(exc)) from exc


def _reason(exc: BaseException) -> str:
    detail = clean(str(exc))[:200]
    return f"unreadable message ({type(exc).__name__}{': ' + detail if detail else ''})"


def _build(message: EmailMessage, max_attachment: int, lifted: Lifted) -> ParsedMail:
    headers = raw_headers(message)
    sender = _addresses(headers, "from")
    parts = leaves(message, lifted)
    text, from_html = body_text(parts)
    mail = ParsedMail(
        message=message,
        message_id=_first_id(_first(headers, "message-id")),
        subject=clean(decode_header_value(_first(headers, "subject"))),
        from_name=sender[0][0] if sender else "",
        from_addr=sender[0][1] if sender else "",
        reply_to=[addr for _, addr in _addresses(headers, "reply-to")],
        to=_addresses(headers, "to"),
        cc=_addresses(headers, "cc"),
        in_reply_to=message_ids(_first(headers, "in-reply-to")),
        references=message_ids(" ".join(headers.get("references", []))),
        date=_date(_first(headers, "date")),
        text=text,
        from_html=from_html,
        attachments=_attachments(parts, max_attachment),
    )
    mail.__dict__["headers"] = headers  # the cached_property, already read above
    return mail


def header_value(message: Message, name: str) -> str:
    """First value of header name, decoded and CR/LF-free; "" if absent. Never raises."""
    try:
        return clean(decode_header_value(_first(raw_headers(message), name.lower())))
    except Exception:
        return ""


def _first(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name)
    return values[0] if values else ""


def _addresses(headers: dict[str, list[str]], name: str) -> list[tuple[str, str]]:
    """(decoded display name, bare lower-cased address) of every address in the header."""
    values = tuple(headers.get(name, ()))
    if sum(map(len, values)) > _CACHED_ADDRESSES:  # a long list is read each time
        return list(_read_addresses.__wrapped__(values))
    return list(_read_addresses(values))


# The same To and Cc come again and again (a section's address, a team's list), and a
# partner writes more than once: each distinct header value is read once (3 % of
# processing was reading addresses), if it is short: at most 1,024 of them, each kept
# with its answer, so at most a few MB whatever arrives.
_CACHED_ADDRESSES = 1000  # characters


@functools.lru_cache(maxsize=1024)
def _read_addresses(header_values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    result = []
    values = [_BARE_ENCODED_WORD.sub(r'"\1"', v) for v in header_values]
    for display, raw in address_pairs(values):
        addr = _bare_address(clean(decode_header_value(raw)))
        if addr:
            result.append((clean(decode_header_value(display)), addr))
    return tuple(result)


def _bare_address(text: str) -> str:
    """The address in text, lower-cased; a lone word stays (``From: MAILER-DAEMON``)."""
    found = _ADDRESS.search(text)
    if found:
        return found.group(0).lower()
    return text.lower() if _LOCAL_ONLY.fullmatch(text) else ""


def message_ids(value: str) -> list[str]:
    """Message-IDs in "<...>" form; bare tokens with an "@" are bracketed (sloppy clients)."""
    ids = _MSGID.findall(value)
    if not ids:
        ids = [f"<{token}>" for token in value.split() if "@" in token and "<" not in token]
    return [clean(i) for i in ids if len(i) > 2]


def _first_id(value: str) -> str:
    ids = message_ids(value)
    return ids[0] if ids else ""


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        date = parsedate_to_datetime(clean(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if date.tzinfo is None:  # RFC 5322 "-0000": UTC, origin unknown
        date = date.replace(tzinfo=UTC)
    return date.astimezone(UTC)


def _attachments(parts: list[Leaf], max_attachment: int) -> list[Part]:
    """Every leaf that is not the body, named safely and uniquely within the message."""
    result = []
    taken: set[str] = set()
    for index, leaf in enumerate(
        (p for p in parts if not (p.is_body or p.is_alternative)), start=1
    ):
        known = leaf.size()  # a large file's size, known without decoding it
        data = leaf.data() if known is None or known <= max_attachment else None
        size = len(data) if data is not None else known or 0
        name = leaf.filename
        if not name and leaf.content_type == "message/rfc822":
            name = "forwarded.eml"
        name = _unique(safe_filename(name, leaf.content_type, index), taken)
        big = size > max_attachment
        result.append(Part(name, leaf.content_type, size, None if big else data, big))
    return result


def _unique(name: str, taken: set[str]) -> str:
    """name, or name-2.ext, name-3.ext ... when an earlier attachment has it."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{dot}{ext}"
    taken.add(candidate)
    return candidate
