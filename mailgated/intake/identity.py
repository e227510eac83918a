"""What makes two deliveries of one message recognisably the same.

`content_hash` is the sha256 of a message without its trace headers
(Received, Return-Path, Delivered-To, X-Original-To) and with line endings
normalised, so fetchmail handing the same message again with a fresh
`Received:` line (a poll killed after DELE, before QUIT) hashes the same.
`ensure_message_id` makes up a Message-ID for a message that has none, derived
from that hash: a retry of the same bytes gets the same Message-ID, so the
processing step can dedupe on (Message-ID, content hash).

Deliberately hand-rolled on bytes (no `email` package): `mailgated deliver`
runs once per message and must start fast, and the input may be garbage.
"""

from __future__ import annotations

import re

TRACE_HEADERS = frozenset({b"received", b"return-path", b"delivered-to", b"x-original-to"})
MADE_UP_DOMAIN = "mailgated.invalid"  # RFC 2606: never a real host

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body (without the blank line); all header when there is no body."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw[2:] if raw.startswith(b"\r\n") else raw[1:]
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def header_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, unfolded raw value) for each field; stray lines are kept nameless."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header.replace(b"\r\n", b"\n").split(b"\n"):
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
    """sha256 hex of the message minus trace headers, line endings normalised to LF."""
    import hashlib  # here: loading OpenSSL costs the MDA's start-up when no hash is needed

    text = raw.replace(b"\r\n", b"\n")
    header, body = split_message(text)
    digest = hashlib.sha256()
    skipping = False
    for line in header.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                digest.update(line + b"\n")
            continue
        match = _NAME.match(line)
        skipping = bool(match and match.group(1).lower() in TRACE_HEADERS)
        if not skipping:
            digest.update(line + b"\n")
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


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
    newline = b"\n" if b"\r\n" not in raw[:4096] and b"\n" in raw[:4096] else b"\r\n"
    return b"Message-ID: " + made_up.encode() + newline + raw, made_up
