"""Large attachment bodies kept out of the standard parser, decoded once from the raw bytes.

The standard library parses a message by decoding it to text and splitting it into
lines: a 150 MB message with one base64 file cost about 8 times its size in memory
(issue 12 item 15). `lift` finds the body of every large base64 leaf that is a plain
file (not text, not a message, not a package we unpack: S/MIME, TNEF) by following
the declared boundaries in the raw bytes, and gives the parser the message with that
body replaced by a one-line marker; `Lifted` keeps each body as a view of the raw
bytes (no copy) for `decode`, which the leaf calls when its data is asked for.
A message with nothing large to lift is parsed as it is.
"""

from __future__ import annotations

import binascii
import os
import re
from dataclasses import dataclass, field

MIN_SIZE = 1024 * 1024  # smaller bodies cost little: parsed as usual
MARKER = "mailgated-lifted-body-"

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))', re.IGNORECASE)
_EOL = rb"(?:\r\n|\n)"
_HEADER_END = re.compile(_EOL + _EOL)
_CONTENT_TYPE = re.compile(rb"(?im)^content-type:[ \t]*([\w.+-]+)/([\w.+-]+)")
_BASE64 = re.compile(rb"(?im)^content-transfer-encoding:[ \t]*base64[ \t\r]*$")
_KEEP = re.compile(rb"(?i)pkcs7|tnef|winmail\.dat|\.p7m|smime")  # unpacked by packaged.py
_FILE_TYPES = frozenset({b"application", b"image", b"audio", b"video", b"font", b"model"})


@dataclass
class Lifted:
    """The bodies taken out of a message, by marker."""

    bodies: dict[str, memoryview] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)  # each body's offset in `source`
    source: bytes = b""  # the message as received

    def decode(self, payload: object) -> bytes | None:
        """The decoded body a leaf's payload stands for, or None if it is no marker."""
        if not isinstance(payload, str) or not payload.startswith(MARKER):
            return None
        body = self.bodies.get(payload.strip())
        if body is None:
            return None
        return binascii.a2b_base64(body)  # skips line breaks and stray characters

    def size(self, payload: object) -> int | None:
        """The decoded size of the body a marker stands for, without decoding it (for a
        file too large to keep, whose size is all that is recorded), or None."""
        if not isinstance(payload, str) or not payload.startswith(MARKER):
            return None
        marker = payload.strip()
        if marker not in self.starts:
            return None
        start = self.starts[marker]
        end = start + len(self.bodies[marker])
        raw = self.source
        spaces = sum(raw.count(c, start, end) for c in (b"\r", b"\n", b" ", b"\t"))
        tail = raw[max(start, end - 8) : end].rstrip()
        padding = len(tail) - len(tail.rstrip(b"="))
        return max(0, (end - start - spaces) * 3 // 4 - padding)

    def restore(self, data: bytes) -> bytes:
        """`data` (a part written back, such as an attached message) with each marker
        line replaced by the body it stands for, as it was received."""
        for marker, body in self.bodies.items():
            line = marker.encode()
            if line in data:
                # the generator writes LF line ends (policy.default): the body follows suit
                data = data.replace(line, bytes(body).rstrip(b"\r\n").replace(b"\r\n", b"\n"), 1)
        return data


def lift(raw: bytes, min_size: int = MIN_SIZE) -> tuple[bytes, Lifted]:
    """(raw with each large file body replaced by a marker line, the bodies)."""
    lifted = Lifted(source=raw)
    if len(raw) < min_size:
        return raw, lifted
    boundaries = {b"--" + (quoted or bare) for quoted, bare in _BOUNDARY.findall(raw)}
    if not boundaries:
        return raw, lifted
    view = memoryview(raw)
    pieces: list[bytes | memoryview] = []
    kept_to = 0
    nonce = os.urandom(6).hex()  # a marker the message itself cannot hold
    for start, end in _file_bodies(raw, boundaries, min_size):
        marker = f"{MARKER}{nonce}-{len(lifted.bodies) + 1}"
        lifted.bodies[marker] = view[start:end]
        lifted.starts[marker] = start
        pieces += [view[kept_to:start], marker.encode() + b"\r\n"]
        kept_to = end
    if not lifted.bodies:
        return raw, lifted
    pieces.append(view[kept_to:])
    return b"".join(pieces), lifted


def _file_bodies(raw: bytes, boundaries: set[bytes], min_size: int) -> list[tuple[int, int]]:
    """(start, end) of each base64 file body of at least `min_size` bytes, in order."""
    delimiters = _delimiter_lines(raw, boundaries)
    found = []
    for (_, after, closing), (next_start, _, _) in zip(delimiters, delimiters[1:], strict=False):
        if closing or next_start - after < min_size:  # after a close: an epilogue, no part
            continue
        header_end = _HEADER_END.search(raw, after, min(next_start, after + 64 * 1024))
        if header_end is None:
            continue
        header = raw[after : header_end.start()]
        kind = _CONTENT_TYPE.search(header)
        if kind is None or kind.group(1).lower() not in _FILE_TYPES:
            continue
        if _BASE64.search(header) is None or _KEEP.search(header):
            continue
        if _BOUNDARY.search(header):
            continue
        found.append((header_end.end(), next_start))
    return found


def _delimiter_lines(raw: bytes, boundaries: set[bytes]) -> list[tuple[int, int, bool]]:
    """(start of the line break before, end of the line, whether it closes its multipart)
    of every boundary delimiter line."""
    lines = []
    position = raw.find(b"\n--")
    while position != -1:
        line_end = raw.find(b"\n", position + 1)
        line_end = len(raw) if line_end == -1 else line_end + 1
        token = raw[position + 1 : line_end].rstrip()
        closing = token not in boundaries and token.endswith(b"--")
        if token in boundaries or (closing and token[:-2] in boundaries):
            start = position - 1 if position and raw[position - 1] == 13 else position
            lines.append((start, line_end, closing))
        position = raw.find(b"\n--", line_end - 1)
    return lines
