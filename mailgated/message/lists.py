"""Mail through a mailing list or group, read as its author wrote it.

Lists rewrite mail on the way: for DMARC, Mailman and Google Groups send it `From: "Name
via List" <list@…>` with the author in `Reply-To` (Mailman 3), `X-Original-From`
(Google Groups) or, with Mailman 2.1's "wrap message", as a message/rfc822 part inside a
message from the list; and they append a footer ("_____ / Partners mailing list /
listinfo", Google's "You received this message because you are subscribed …").

``as_author`` gives the mail back with the author as sender, the wrapped message's text,
files and threading headers unwrapped, and the footer trimmed. The raw message, its
Message-ID and the outer header (``ParsedMail.message``: List-Id, our own
Authentication-Results) stay what was received. When From is not the list (the list
rewrote nothing), From is the author.
"""

from __future__ import annotations

import dataclasses
import re
from email.message import Message

from mailgated.message.headers import address_pairs, clean, decode_header_value
from mailgated.message.parse import ParsedMail, ParseError, parse
from mailgated.message.structure import children

_VIA = re.compile(r"^\s*['\"]?(.*?)['\"]?\s+(via|через|über|par l'intermédiaire de)\s+\S", re.I)
_MAILTO = re.compile(r"<mailto:([^>?]+)", re.IGNORECASE)
_RULE = re.compile(r"^\s*_{10,}\s*$")
_FOOTER_WORDS = re.compile(
    r"mailing list|listinfo|unsubscribe|subscribed to the google groups|abbestellen"
    r"|abmelden|désabonner|désinscri|отписаться|cancelar a inscrição|-leave@|-request@",
    re.IGNORECASE,
)
_FOOTER_LINES = 12


def as_author(mail: ParsedMail, max_attachment: int) -> ParsedMail:
    """mail as its author sent it (see the module docstring); mail itself if no list."""
    wrapped = _wrapped(mail)
    if wrapped is not None:
        mail = _unwrapped(mail, wrapped, max_attachment)
    elif _from_is_list(mail):
        name, address = _author(mail)
        if address:
            mail = dataclasses.replace(mail, from_name=name, from_addr=address)
    return dataclasses.replace(mail, text=strip_footer(mail.text))


def list_addresses(mail: ParsedMail) -> set[str]:
    """The list's own addresses: List-Post's mailto, and the address List-Id names."""
    found = {m.lower() for m in _MAILTO.findall(mail.header("List-Post"))}
    list_id = re.search(r"<([^<>@\s]+)>", mail.header("List-Id"))
    if list_id and "." in list_id.group(1):
        local, _, domain = list_id.group(1).partition(".")
        found.add(f"{local}@{domain}".lower())
    return found


def strip_footer(text: str) -> str:
    """text without a list footer at its end (a short block under a "_____" rule or a
    "-- " line that speaks of the list, its subscription or unsubscribing)."""
    lines = text.rstrip().split("\n")
    start = max(0, len(lines) - _FOOTER_LINES)
    for index in range(start, len(lines)):
        if not (_RULE.match(lines[index]) or lines[index] == "-- "):
            continue
        if _FOOTER_WORDS.search("\n".join(lines[index:])):
            return "\n".join(lines[:index]).rstrip()
    return text


def _from_is_list(mail: ParsedMail) -> bool:
    return mail.from_addr in list_addresses(mail) or bool(_VIA.match(mail.from_name))


def _author(mail: ParsedMail) -> tuple[str, str]:
    """(name, address) of the author a list put in X-Original-From, X-Original-Sender or
    Reply-To, or (Mailman 3 when replies go to the list) in Cc under the "via" name."""
    ours = list_addresses(mail) | {mail.from_addr}
    via = _via_name(mail)
    for header in ("X-Original-From", "X-Original-Sender", "Reply-To"):
        for name, address in address_pairs([mail.header(header)]):
            address = clean(decode_header_value(address)).lower()
            if "@" in address and address not in ours:
                return name or via, address
    for name, address in mail.cc:
        if via and name.strip().lower() == via.strip().lower() and address not in ours:
            return name, address
    return mail.from_name, ""


def _via_name(mail: ParsedMail) -> str:
    found = _VIA.match(mail.from_name)
    return found.group(1) if found else ""


def _wrapped(mail: ParsedMail) -> Message | None:
    """The author's message a list wrapped (Mailman 2.1): the top-level message/rfc822,
    or the only message/rfc822 part of a body with nothing else but text (the footer)."""
    top = mail.message
    if top.get_content_type() == "message/rfc822":
        inner = children(top)
        return inner[0] if inner else None
    if top.get_content_type() != "multipart/mixed" or not _from_is_list(mail):
        return None
    parts = children(top) or []
    messages = [p for p in parts if p.get_content_type() == "message/rfc822"]
    rest = [p for p in parts if p.get_content_type() != "message/rfc822"]
    if len(messages) != 1 or any(p.get_content_type() != "text/plain" for p in rest):
        return None
    inner = children(messages[0])
    return inner[0] if inner else None


def _unwrapped(mail: ParsedMail, inner: Message, max_attachment: int) -> ParsedMail:
    try:
        author = parse(inner.as_bytes(), max_attachment=max_attachment)
    except (ParseError, Exception):  # a wrapped part we cannot write back: keep the outer
        return mail
    if not author.from_addr:
        return mail
    return dataclasses.replace(
        author,
        message=mail.message,  # the header as received (List-Id, Authentication-Results)
        message_id=mail.message_id,  # what we received and store
        in_reply_to=author.in_reply_to or mail.in_reply_to,
        references=author.references or mail.references,
        text=author.text,
    )
