"""The new part of a reply: the quoted earlier message and the signature trimmed.

Conservative by design, since the raw message is stored and nothing here is a loss, but a
history that hides an answer is: only what is certainly old goes.

- An Outlook block ends the new text: a "-----Original Message-----" separator (in the
  common languages), or a header block "From: … Sent: … To: …" (also "Von:/Gesendet:",
  "От:/Отправлено:", …), with the "____" line Outlook on the web draws above it. A header
  block right after a forward marker ("---------- Forwarded message ---------") is the
  forwarded content, which is new to us, and stays.
- A signature starts at the "-- " line (RFC 3676 4.3).
- A *trailing* block of ">" quotes goes, together with the attribution line that leads it
  ("On … wrote:", possibly wrapped over two or three lines, "Am … schrieb:", "… пишет:",
  "Le … a écrit :"). Quotes interleaved with answers stay: they are the context of the
  answers.
- A text that is nothing but quote comes back whole (never an empty history entry).
"""

from __future__ import annotations

import re

_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|исходное сообщение"
    r"|message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht"
    r"|original meddelelse|ursprungligt meddelande|alkuperäinen viesti"
    r"|wiadomość oryginalna|původní zpráva)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_FROM = re.compile(
    r"^\s*\**(from|von|от|de|van|da|fra|från|od|kimden|feladó|lähettäjä)\s*:\**\s*\S",
    re.IGNORECASE,
)
_SENT = re.compile(
    r"^\s*\**(sent|gesendet|отправлено|envoyé|enviado|inviato|verzonden|sendt|skickat"
    r"|wysłano|odesláno|gönderildi|date|datum|дата|fecha|data|lähetetty)\s*:",
    re.IGNORECASE,
)
_TO_OR_SUBJECT = re.compile(
    r"^\s*\**(to|an|кому|à|para|a|aan|til|till|do|komu|kime|címzett|vastaanottaja"
    r"|subject|betreff|тема|objet|asunto|oggetto|onderwerp|emne|ämne|temat|předmět|konu"
    r"|tárgy|aihe)\s*:",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"^\s*(-{2,}.*(forwarded|weitergeleitete|пересылаемое|пересланное|transféré|reenviado"
    r"|inoltrato|doorgestuurd).*-{2,}|begin forwarded message:)\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*_{10,}\s*$")
_ATTRIBUTION = re.compile(
    r"(\bwrote|\bschrieb|\bпишет|\bнаписал|\bнаписала|\ba écrit|\bescribió|\bha scritto"
    r"|\bschreef|\bskrev|\bkirjoitti|\bpisze|\bnapsal|\byazdı|\bírta)\b[^:]{0,80}:\s*$",
    re.IGNORECASE,
)
# Verbless forms (Gmail and Yandex in Russian, mail.ru): a date, then "Name <addr>:".
_DATED_ADDRESS = re.compile(r"^\s*(\S+,\s*)?\d{1,2}[\s./].{0,120}<[^<>\s]+@[^<>\s]+>:\s*$")
# The first line of an attribution wrapped over several lines.
_OPENER = re.compile(r"^\s*(on|am|le|el|il|op|den|på|w dniu|dne|\d|\S+,\s*\d)\b", re.IGNORECASE)
_SIGNATURE = "-- "


def new_text(text: str) -> str:
    """The new part of a reply (quotes and signature trimmed); text itself if all quote."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = _outlook_block(lines)
    end = _signature(lines, end)
    end = _trailing_quote(lines, end)
    new = "\n".join(lines[:end]).rstrip()
    return new if new.strip() else text.strip()


def _outlook_block(lines: list[str]) -> int:
    """Index of the first line of an Outlook-style earlier message (len(lines) if none)."""
    for index, line in enumerate(lines):
        if _SEPARATOR.match(line):
            return _rule_above(lines, index)
        if _FROM.match(line) and _header_block(lines, index) and not _forwarded(lines, index):
            return _rule_above(lines, index)
    return len(lines)


def _header_block(lines: list[str], start: int) -> bool:
    """Whether a "Sent:"/"Date:" and a "To:"/"Subject:" line follow lines[start] closely."""
    block = lines[start + 1 : start + 7]
    return any(_SENT.match(line) for line in block) and any(
        _TO_OR_SUBJECT.match(line) for line in block
    )


def _forwarded(lines: list[str], index: int) -> bool:
    """Whether the nearest non-blank line above index is a forward marker."""
    above = _previous_nonblank(lines, index)
    return above is not None and bool(_FORWARD.match(lines[above]))


def _rule_above(lines: list[str], index: int) -> int:
    """index, or the index of the "______" line Outlook on the web draws above a block."""
    above = _previous_nonblank(lines, index)
    return above if above is not None and _RULE.match(lines[above]) else index


def _signature(lines: list[str], end: int) -> int:
    """Index of the first "-- " signature line before end (end if none)."""
    for index in range(end):
        if lines[index] == _SIGNATURE:
            return index
    return end


def _trailing_quote(lines: list[str], end: int) -> int:
    """end moved up over a trailing ">" block and the attribution line(s) leading it."""
    index = end
    while index > 0 and (not lines[index - 1].strip() or _quoted(lines[index - 1])):
        index -= 1
    if not any(_quoted(line) for line in lines[index:end]):
        return end
    return _attribution_above(lines, index)


def _attribution_above(lines: list[str], index: int) -> int:
    """index, or the first line of an attribution (up to 3 wrapped lines) ending there."""
    for span in (3, 2, 1):
        start = index - span
        if start < 0 or not all(line.strip() for line in lines[start:index]):
            continue
        if span > 1 and not _wrapped_start(lines[start]):
            continue
        if _attribution(" ".join(line.strip() for line in lines[start:index])):
            return start
    return index


def _attribution(text: str) -> bool:
    return bool(_ATTRIBUTION.search(text) or _DATED_ADDRESS.match(text))


def _wrapped_start(line: str) -> bool:
    """Whether line can begin an attribution that a mail client wrapped: long, an opener
    word or a date first, no sentence end (so "Thanks." above "On … wrote:" stays)."""
    line = line.strip()
    return len(line) >= 30 and bool(_OPENER.match(line)) and line[-1] not in ".!?"


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _previous_nonblank(lines: list[str], index: int) -> int | None:
    for above in range(index - 1, -1, -1):
        if lines[above].strip():
            return above
    return None
