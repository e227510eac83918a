"""Cap MIME nesting depth and part count before and after the standard parser runs.

The standard library parses nested MIME by recursion: a message nested a few hundred
levels deep raises RecursionError (or worse, exhausts the C stack in code that walks the
result), and a message of many thousand parts costs seconds. ``check_structure`` scans
the raw bytes first: a cheap upper bound (every declared boundary and every
message/rfc822 header counted as one level, every line starting with "--" as one part)
clears almost every message at C speed; only when the bound is exceeded does a line scan
follow the boundaries exactly. ``check_tree`` then verifies the parsed tree iteratively.
"""

from __future__ import annotations

import re
from email.message import Message

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))', re.IGNORECASE)
_RFC822 = re.compile(rb"^content-type:\s*message/rfc822", re.IGNORECASE | re.MULTILINE)


class StructureError(Exception):
    """The message is nested too deep or has too many parts; str is the reason."""


def check_structure(raw: bytes, max_depth: int, max_parts: int) -> None:
    """Raise StructureError when raw nests deeper than max_depth or exceeds max_parts."""
    declared = len(_BOUNDARY.findall(raw))
    nested = len(_RFC822.findall(raw))
    delimiters = raw.count(b"\n--") + raw.startswith(b"--")
    if declared + nested <= max_depth and delimiters + nested < max_parts:
        return
    depth, parts = _scan(raw)
    _check(depth, parts, max_depth, max_parts)


def check_tree(message: Message, max_depth: int, max_parts: int) -> None:
    """Raise StructureError when the parsed tree is too deep or too big (no recursion)."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    parts = deepest = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        deepest = max(deepest, depth)
        _check(deepest, parts, max_depth, max_parts)
        stack.extend((child, depth + 1) for child in children(part) or [])


def _check(depth: int, parts: int, max_depth: int, max_parts: int) -> None:
    if depth > max_depth:
        raise StructureError(f"MIME nesting deeper than {max_depth} levels")
    if parts > max_parts:
        raise StructureError(f"more than {max_parts} MIME parts")


def _scan(raw: bytes) -> tuple[int, int]:
    """(deepest nesting, number of parts) by following the declared boundaries line by line.

    A stack holds the open multiparts (their boundaries) and message/rfc822 levels (None);
    a delimiter line of an open boundary closes every level opened after it.
    """
    stack: list[bytes | None] = []
    parts = 1
    deepest = 0
    for line in raw.splitlines():
        if line.startswith(b"--") and stack:
            closed = _delimiter(line, stack)
            if closed is not None:
                del stack[closed + 1 :]
                if line.rstrip().endswith(b"--") and line.rstrip()[2:-2] == stack[-1]:
                    stack.pop()
                else:
                    parts += 1
                continue
        for quoted, bare in _BOUNDARY.findall(line):
            stack.append(quoted or bare)
        if _RFC822.match(line):
            stack.append(None)
            parts += 1
        deepest = max(deepest, len(stack))
    return deepest, parts


def _delimiter(line: bytes, stack: list[bytes | None]) -> int | None:
    """Index in stack of the boundary that line delimits, or None."""
    token = line.rstrip()[2:]
    for index in range(len(stack) - 1, -1, -1):
        boundary = stack[index]
        if boundary is not None and (token == boundary or token == boundary + b"--"):
            return index
    return None


def children(part: Message) -> list[Message] | None:
    """The sub-parts of a multipart or message/* part, None for a leaf.

    Never get_payload() on a leaf: with 8-bit content it decodes in the declared charset
    and raises ValueError on a charset name with a NUL in it.
    """
    if not part.is_multipart():
        return None
    payload = part.get_payload()
    if not isinstance(payload, list):
        return None
    return [child for child in payload if isinstance(child, Message)]
