"""What makes two deliveries of one message recognisably the same.

`content_hash` is the sha256 of a message without its trace headers
(Received, Return-Path, Delivered-To, X-Original-To) and with line endings
normalised, so fetchmail handing the same message again with a fresh
`Received:` line (a poll killed after DELE, before QUIT) hashes the same.
`ensure_message_id` makes up a Message-ID for a message that has none, derived
from that hash: a retry of the same bytes gets the same Message-ID, so the
processing step can dedupe on (Message-ID, content hash).

Every reader here takes CR, LF and CRLF alike as a line end (issue 12 item 1:
a header block separated by bare CRs was once read as one trace-header line,
so every such message hashed the same, got the same made-up Message-ID and
all but the first were dropped as duplicates). `normalise_line_ends` is what
the spool applies before it writes a message with bare CRs.

Deliberately hand-rolled on bytes (no `email` package): `mailgated deliver`
runs once per message and must start fast, and the input may be garbage.
"""

from __future__ import annotations

import re

TRACE_HEADERS = frozenset({b"received", b"return-path", b"delivered-to", b"x-original-to"})
MADE_UP_DOMAIN = "mailgated.invalid"  # RFC 2606: never a real host

_EOL = rb"(?:\r\n|\n|\r(?!\n))"  # a CR before LF is never a line end of its own
_HEADER_END = re.compile(_EOL + _EOL)
_LINE_END = re.compile(_EOL)
_BARE_CR = re.compile(rb"\r(?!\n)")
_CHUNK = 1024 * 1024


def normalise_line_ends(raw: bytes) -> bytes:
    """raw unchanged unless it holds a bare CR; then every line end (CR, LF, CRLF) becomes LF.

    RFC 5322 allows CR only in CRLF: a message with bare CRs (old Mac clients,
    broken gateways) is rewritten once, at the door, so the parser, the hash
    and the made-up Message-ID all see the same lines.
    """
    if _BARE_CR.search(raw) is None:
        return raw
    return _LINE_END.sub(b"\n", raw)


_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body (without the blank line); all header when there is no body."""
    first = _LINE_END.match(raw)
    if first is not None:
        return b"", raw[first.end() :]
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def header_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, unfolded raw value) for each field; stray lines are kept nameless."""
    fields: list[tuple[bytes, bytes]] = []
    for line in _LINE_END.split(header):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
            continue
        match = _NAME.match(line)
        if match:
            fields.append((match.group(1).lower(), line[match.end() :].strip()))
        else:
            fields.append((b"", line))
    return fields


def header_value(raw: bytes, name: str) -> bytes | None:
    """The first value of header `name` (raw bytes, unfolded), or None."""
    wanted = name.lower().encode()
    for field, value in header_fields(split_message(raw)[0]):
        if field == wanted:
            return value
    return None


def content_hash(raw: bytes) -> str:
    """sha256 hex of the message minus trace headers, line endings normalised to LF.

    The body is hashed in chunks, never copied whole: a 150 MB message costs no
    150 MB of memory here (issue 12 item 15).
    """
    import hashlib  # here: loading OpenSSL costs the MDA's start-up when no hash is needed

    first = _LINE_END.match(raw)
    end = _HEADER_END.search(raw) if first is None else None
    if first is not None:
        header, body = b"", memoryview(raw)[first.end() :]
    elif end is not None:
        header, body = raw[: end.start()], memoryview(raw)[end.end() :]
    else:
        header, body = raw, memoryview(b"")
    digest = hashlib.sha256()
    skipping = False
    for line in _LINE_END.split(header):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                digest.update(line + b"\n")
            continue
        match = _NAME.match(line)
        skipping = bool(match and match.group(1).lower() in TRACE_HEADERS)
        if not skipping:
            digest.update(line + b"\n")
    digest.update(b"\n")
    held = b""  # a CR at the end of a chunk: its LF may start the next one
    for start in range(0, len(body), _CHUNK):
        chunk = held + bytes(body[start : start + _CHUNK])
        held = b"\r" if chunk.endswith(b"\r") else b""
        digest.update(_lf(chunk[:-1] if held else chunk))
    digest.update(_lf(held))
    return digest.hexdigest()


def _lf(data: bytes) -> bytes:
    """CRLF and bare CR as LF (what `_LINE_END.sub(b"\\n", …)` does, at C speed)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def message_id(raw: bytes) -> str:
    """The message's own Message-ID (with angle brackets), or "" when it has none."""
    value = header_value(raw, "message-id")
    if not value:
        return ""
    text = value.decode("ascii", "replace").strip()
    found = re.search(r"<[^<>\s]+>", text)
    if found:
        return found.group(0)
    return f"<{text.split()[0].strip('<>')}>" if text.split() else ""


def ensure_message_id(raw: bytes) -> tuple[bytes, str]:
    """The message with a Message-ID (made up from its content hash when missing) and that ID."""
    found = message_id(raw)
    if found:
        return raw, found
    made_up = f"<{content_hash(raw)[:40]}@{MADE_UP_DOMAIN}>"
    head = raw[:4096]
    newline = b"\r\n" if b"\r\n" in head or b"\n" not in head else b"\n"
    if b"\r" in head.replace(b"\r\n", b""):
        newline = b"\r"  # a bare-CR message that was not normalised: keep its own form
    return b"Message-ID: " + made_up.encode() + newline + raw, made_up
