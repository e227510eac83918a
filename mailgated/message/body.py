"""Split a parsed message into its leaf parts and pick the body text among them.

A leaf is a non-multipart part, or a message/* part (kept whole: a forwarded message, a
delivery report). Inline text/plain and text/html leaves without a file name are body
candidates; within one multipart/alternative only one is taken (text/plain preferred,
else HTML converted to text); candidates outside any alternative are all taken, in order
(Apple Mail splits a body around an inline image). Failing all that, an inline text part
with a file name is the body. Every other leaf is an attachment.
Packed content (opaque-signed S/MIME, TNEF's winmail.dat) is read in place of its part,
and encrypted content as a note (see packaged.py).
The tree is walked with an explicit stack (depth is capped before, but no recursion).
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import Message

from mailgated.message import packaged
from mailgated.message.charset import decode_bytes
from mailgated.message.headers import decode_header_value
from mailgated.message.htmltext import html_to_text
from mailgated.message.lift import Lifted
from mailgated.message.structure import children

_TEXT_TYPES = ("text/plain", "text/html")
_MAX_PACKED = 3  # a signature inside a signature inside a signature: enough


@dataclass
class Leaf:
    """One leaf of the MIME tree, in document order."""

    part: Message
    content_type: str
    filename: str  # as sent, decoded; "" if none (made safe by the caller)
    alternative: int | None  # the nearest multipart/alternative ancestor (a serial), if any
    is_body: bool = False
    is_alternative: bool = False  # another rendering of a body piece: neither body nor file
    lifted: Lifted | None = None  # large file bodies kept out of the parser (lift.py)

    @property
    def candidate(self) -> bool:
        """An inline text part without a file name: a piece of the body."""
        return (
            self.content_type in _TEXT_TYPES
            and not self.filename
            and _disposition(self.part) != "attachment"
        )

    def data(self) -> bytes:
        """The decoded content (message/* parts serialised whole)."""
        subparts = children(self.part)
        if subparts is not None:
            whole = b"".join(_serialise(child) for child in subparts)
            return self.lifted.restore(whole) if self.lifted is not None else whole
        if self.lifted is not None and self.lifted.bodies:
            try:
                decoded = self.lifted.decode(self.part.get_payload())
            except Exception:  # a payload we cannot look at was no marker of ours
                decoded = None
            if decoded is not None:
                return decoded
        data = self.part.get_payload(decode=True)
        return data if isinstance(data, bytes) else b""

    def size(self) -> int | None:
        """The decoded size when it is known without decoding (a lifted file), else None."""
        if self.lifted is None or not self.lifted.bodies:
            return None
        try:
            return self.lifted.size(self.part.get_payload())
        except Exception:
            return None

    def text(self) -> str:
        """The content as text, in its declared charset or a detected one."""
        return decode_bytes(self.data(), _charset(self.part))


def leaves(message: Message, lifted: Lifted | None = None) -> list[Leaf]:
    """The leaves of message in document order, the body pieces marked (`lifted`: the
    bodies `lift` took out of the message before it was parsed)."""
    result: list[Leaf] = []
    serial = 0
    # (part, its multipart/alternative, how many packages deep: see packaged.py)
    stack: list[tuple[Message, int | None, int]] = [(message, None, 0)]
    while stack:
        part, alternative, packed = stack.pop()
        content_type = part.get_content_type()
        subparts = children(part)
        if subparts is not None and not content_type.startswith("message/"):
            if content_type == "multipart/alternative":
                serial += 1
                alternative = serial
            if content_type == "multipart/encrypted":
                subparts = packaged.readable_children(part, subparts)
                packed = _MAX_PACKED  # its files are ciphertext: nothing to unpack
            stack.extend((child, alternative, packed) for child in reversed(subparts))
            continue
        if content_type.startswith("multipart/"):  # no boundary found: its text is all we have
            content_type = "text/plain"
        filename = _filename(part)
        leaf = Leaf(part, content_type, filename, alternative, lifted=lifted)
        unpacked = None
        if packed < _MAX_PACKED and packaged.is_packed(content_type, filename):
            unpacked = packaged.unpack(part, content_type, filename, leaf.data())
        if unpacked is not None:
            inner, keep = unpacked
            if keep:  # the package itself stays a file, never unpacked again
                stack.append((part, alternative, _MAX_PACKED))
            stack.extend((child, alternative, packed + 1) for child in reversed(inner))
            continue
        result.append(leaf)
    if any(leaf.candidate and not packaged.is_packed_body(leaf.part) for leaf in result):
        result = [leaf for leaf in result if not packaged.is_packed_body(leaf.part)]
    _mark_body(result)
    return result


def body_text(parts: list[Leaf]) -> tuple[str, bool]:
    """(body text, whether its first piece came from HTML) of the marked body leaves."""
    pieces: list[str] = []
    from_html = False
    for leaf in (p for p in parts if p.is_body):
        text = leaf.text()
        if leaf.content_type == "text/html":
            from_html = from_html or not pieces
            text = html_to_text(text)
        else:
            text = packaged.clear_armor(text)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip("\n")
        if text.strip():
            pieces.append(text)
    return "\n\n".join(pieces), from_html


def _mark_body(parts: list[Leaf]) -> None:
    """Mark the body pieces: every candidate, but one per multipart/alternative."""
    done: set[int] = set()
    for leaf in parts:
        if not leaf.candidate:
            continue
        if leaf.alternative is None:
            leaf.is_body = True
        elif leaf.alternative not in done:
            done.add(leaf.alternative)
            group = [p for p in parts if p.alternative == leaf.alternative and p.candidate]
            plain = [p for p in group if p.content_type == "text/plain"]
            for other in group:
                other.is_alternative = True
            chosen = (plain or group)[0]
            chosen.is_body, chosen.is_alternative = True, False
    if not any(leaf.is_body for leaf in parts):
        _mark_named_inline_text(parts)


def _mark_named_inline_text(parts: list[Leaf]) -> None:
    """With no other body, an inline text part with a file name is the body (mobile
    clients send "message.txt" inline); a text part marked as attachment stays one."""
    for leaf in parts:
        if leaf.content_type in _TEXT_TYPES and _disposition(leaf.part) == "inline":
            leaf.is_body = True
            return


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:  # a malformed Content-Disposition: no usable name
        return ""
    return decode_header_value(str(name)) if "=?" in str(name) else str(name)


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return str(charset) if charset else None


# Headers written back as they were read, never re-parsed to be refolded: the structured
# parse of some real-world values raises (a Microsoft `<[…=@microsoft.com]>` Message-ID
# makes the stdlib's msg-id parser raise IndexError, CPython gh-105802).
_VERBATIM = policy.default.clone(refold_source="none")


def _serialise(part: Message) -> bytes:
    """The part's bytes; a part the generator cannot refold is written with its headers as
    received, and only a part that cannot be written at all is reduced to lossy text."""
    try:
        return part.as_bytes()
    except Exception:
        pass
    try:
        return part.as_bytes(policy=_VERBATIM)
    except Exception:  # a part the generator cannot write back: its text, lossy
        pass
    try:
        return part.as_string(policy=_VERBATIM).encode("utf-8", "replace")
    except Exception:  # nothing to attach; the raw message is stored with the case anyway
        return b""
