"""The new part of a reply: the quoted earlier message and the signature trimmed.

Conservative by design, since the raw message is stored and nothing here is a loss, but a
history that hides an answer is: only what is certainly old goes.

- An Outlook block ends the new text: a "-----Original Message-----" separator (in the
  common languages), or a header block "From: … Sent: … To: …" (also "Von:/Gesendet:",
  "От:/Отправлено:", …), with the "____" line Outlook on the web draws above it. A header
  block right after a forward marker ("---------- Forwarded message ---------") is the
  forwarded content, which is new to us, and stays.
  Zimbra's "----- Ursprüngliche Mail -----" and Outlook's "-----Original Appointment-----"
  are such separators too.
- A forwarded block ("-------- Пересылаемое сообщение --------" of Yandex, "----------
  Forwarded message ---------" of Gmail) is new to us and stays — unless it forwards
  our own mail back (its header names one of ``own``, the addresses the mail was
  delivered to): then it is a quote and goes.
- A signature starts at the "-- " line (RFC 3676 4.3), or at a mobile client's line
  ("Sent from my iPhone", "Von meinem iPhone gesendet", "Отправлено с iPhone", "Sent
  with Proton Mail secure email.", "Get Outlook for Android" …) under some text.
- A *trailing* block of ">" quotes goes, together with the attribution line that leads it
  ("On … wrote:", possibly wrapped over two or three lines, "Am … schrieb:", "… пишет:",
  "Le … a écrit :", "Em … escreveu:"), and with a disclaimer the sender's server put
  under it ("This e-mail … confidential …"). So does a trailing attribution followed only
  by indented lines (Yahoo indents its quote with spaces, not ">").
- Bottom-posting: one ">" block at the top that is a whole earlier message (it holds a
  signature, or an attribution leads it and it has four lines or more), the answer under
  it and no other quote — the block goes. Quotes interleaved with answers stay: they are
  the context of the answers; so do a short single quote above a short answer (the
  question answered) and a pasted log quoted at the top.
- A text that is nothing but quote comes back whole (never an empty history entry).
"""

from __future__ import annotations

import re
from collections.abc import Collection

_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|исходное сообщение"
    r"|message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht"
    r"|original meddelelse|ursprungligt meddelande|alkuperäinen viesti"
    r"|wiadomość oryginalna|původní zpráva|ursprüngliche mail|mail original|mensagem original"
    r"|originalnachricht|original appointment|ursprünglicher termin|rendez-vous d'origine)"
    r"\s*-{2,}\s*$",
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
_RULE = re.compile(r"^\s*(_{10,}|\* \* \*)\s*$")  # "* * *": an <hr> made text
_ATTRIBUTION = re.compile(
    r"(\bwrote|\bschrieb|\bпишет|\bнаписал|\bнаписала|\ba écrit|\bescribió|\bha scritto"
    r"|\bescreveu"
    r"|\bschreef|\bskrev|\bkirjoitti|\bpisze|\bnapsal|\byazdı|\bírta)\b[^:]{0,80}:\s*$",
    re.IGNORECASE,
)
# Verbless forms (Gmail and Yandex in Russian, mail.ru): a date, then "Name <addr>:".
_DATED_ADDRESS = re.compile(r"^\s*(\S+,\s*)?\d{1,2}[\s./].{0,120}<[^<>\s]+@[^<>\s]+>:\s*$")
# The first line of an attribution wrapped over several lines.
_OPENER = re.compile(r"^\s*(on|am|le|el|il|op|den|på|w dniu|dne|\d|\S+,\s*\d)\b", re.IGNORECASE)
_SIGNATURE = "-- "
_MOBILE = re.compile(
    r"^\s*(sent (from|with|via) (my )?|get outlook for |(von|gesendet von|gesendet mit) (meinem )?"
    r"|envoyé (de|depuis) (mon )?|enviado (do|desde|de) (meu |mi |o )?|inviato da(l mio)? "
    r"|verzonden met |skickat från (min )?|отправлено (с|из|со) (моего )?)"
    r"(?P<device>[\w .«»\"'-]{2,60}?)(\s+gesendet)?\s*\.?\s*$",
    re.IGNORECASE,
)
_MOBILE_ANYWHERE = re.compile(_MOBILE.pattern, re.IGNORECASE | re.MULTILINE)
# what the mobile line must name: a device or a mail app, never a sentence about anything
_DEVICE = re.compile(
    r"\b(iphone|ipad|android|samsung|galaxy|blackberry|huawei|xiaomi|pixel|nokia|mobile"
    r"|smartphone|handy|tablet|phone|proton ?mail|outlook|yahoo mail|aol|mail for windows"
    r"|gmail|k-9|fairemail|spark|bluemail|телефон|смартфон|мобильн|почты|айфон)",
    re.IGNORECASE,
)
_DISCLAIMER = re.compile(
    r"confidential|privileged|intended (solely )?(for the )?(use of the )?(addressee|recipient)"
    r"|vertraulich|rechtlich geschützte|nicht der richtige adressat|confidentiel"
    r"|destinataire|confidencial|destinatário|конфиденциальн|адресат",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def new_text(text: str, own: Collection[str] = ()) -> str:
    """The new part of a reply (quotes and signature trimmed); text itself if all quote.
    `own`: the addresses the mail was delivered to (ours), whose forwarded mail is a quote.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = _outlook_block(lines)
    end = min(end, _own_forward(lines, end, {a.lower() for a in own}))
    end = _signature(lines, end, mobile=_MOBILE_ANYWHERE.search(text) is not None)
    end = _trailing_quote(lines, end)
    end = _indented_quote(lines, end)
    start = _bottom_post(lines, end)
    new = "\n".join(lines[start:end]).strip("\n").rstrip()
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


def _own_forward(lines: list[str], end: int, own: set[str]) -> int:
    """Index of a forward marker whose forwarded header names one of `own` (our mail
    coming back: a quote), else end."""
    if not own:
        return end
    for index in range(end):
        if not _FORWARD.match(lines[index]):
            continue
        header = " ".join(lines[index + 1 : index + 8]).lower()
        if any(address in own for address in _ADDRESS.findall(header)):
            return index
    return end


def _signature(lines: list[str], end: int, *, mobile: bool = True) -> int:
    """Index of the first "-- " signature line, or of a mobile client's signature line
    under some text, before end (end if none)."""
    seen_text = False
    for index in range(end):
        line = lines[index]
        if line == _SIGNATURE:
            return index
        if mobile and seen_text and _mobile(line):
            return index
        seen_text = seen_text or bool(line.strip()) and not _quoted(line)
    return end


def _mobile(line: str) -> bool:
    """A mobile client's signature line: "Sent from my iPhone", "Von meinem iPhone
    gesendet", "Отправлено с iPhone" — short, and naming a device or a mail app."""
    found = _MOBILE.match(line)
    return bool(found and len(line.split()) <= 8 and _DEVICE.search(found.group("device")))


def _trailing_quote(lines: list[str], end: int) -> int:
    """end moved up over a trailing ">" block (and a disclaimer under it) and the
    attribution line(s) leading it."""
    end = _disclaimer_under_quote(lines, end)
    index = end
    while index > 0 and (not lines[index - 1].strip() or _quoted(lines[index - 1])):
        index -= 1
    if not any(_quoted(line) for line in lines[index:end]):
        return end
    return _attribution_above(lines, index)


def _disclaimer_under_quote(lines: list[str], end: int) -> int:
    """The start of a disclaimer (the last paragraphs, up to a "____"/"--" rule) right under
    a ">" block, else end."""
    index = end
    while index > 0 and not lines[index - 1].strip():
        index -= 1
    paragraph_end = index
    while index > 0 and lines[index - 1].strip() and not _quoted(lines[index - 1]):
        index -= 1
    if index == paragraph_end or not _DISCLAIMER.search(" ".join(lines[index:paragraph_end])):
        return end
    above = _previous_nonblank(lines, index)
    if above is not None and (_RULE.match(lines[above]) or lines[above].strip() in ("--", "---")):
        index = above
        above = _previous_nonblank(lines, index)
    return index if above is not None and _quoted(lines[above]) else end


def _indented_quote(lines: list[str], end: int) -> int:
    """The start of a trailing attribution followed only by indented lines (Yahoo's
    quote, indented with spaces instead of ">"), else end."""
    block = end
    while block > 0 and (not lines[block - 1].strip() or lines[block - 1][:1].isspace()):
        block -= 1
    first = next((i for i in range(block, end) if lines[i].strip()), None)
    if first is None:
        return end
    if lines[first].rstrip().endswith(":") and _attribution(lines[first].strip()):
        start = first  # Yahoo indents the attribution too
    elif (
        block > 0
        and lines[block - 1].rstrip().endswith(":")
        and _attribution(lines[block - 1].strip())
    ):
        start = block - 1
    else:
        return end
    rest = [line for line in lines[start + 1 : end] if line.strip()]
    if not rest or _previous_nonblank(lines, start) is None:
        return end
    return start


def _bottom_post(lines: list[str], end: int) -> int:
    """Where the answer starts when it was written *under* the quote: one ">" block that is
    a whole earlier message (it holds a signature, or an attribution leads it and it has
    four lines or more), then the answer, and no other quote; else 0."""
    first = next((i for i in range(end) if lines[i].strip()), end)
    start = first
    attributed = False
    if start < end and not _quoted(lines[start]):
        for span in (3, 2, 1):
            if start + span <= end and _attribution(
                " ".join(line.strip() for line in lines[start : start + span])
            ):
                start += span
                attributed = True
                break
        else:
            return 0
    block = start
    while block < end and (not lines[block].strip() or _quoted(lines[block])):
        block += 1
    quoted = [line for line in lines[start:block] if _quoted(line)]
    rest = lines[block:end]
    if not quoted or not any(r.strip() for r in rest) or any(_quoted(r) for r in rest):
        return 0
    signed = any(q.lstrip("> ").rstrip() == "--" for q in quoted)
    return block if signed or (attributed and len(quoted) >= 4) else 0


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
