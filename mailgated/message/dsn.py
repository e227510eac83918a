"""Read a bounce: which recipients failed and which of our messages it returns.

Standard delivery status notifications (RFC 3464, multipart/report) carry the failed
recipients in their message/delivery-status part (``Original-Recipient``, else
``Final-Recipient``, of the blocks whose ``Action`` is ``failed``) and the returned
message, or only its header, in a message/rfc822 or text/rfc822-headers part. Bounces of
older or non-standard software (Exim, qmail, plain Postfix notices) are text: the failed
addresses are the lines that hold an address and nothing else, above the copy of the
returned message; the returned Message-ID is the first Message-ID header in the body.
Nothing here raises on malformed input: what cannot be read is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from mailgated.message.parse import ParsedMail, message_ids
from mailgated.message.structure import children

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_RETURNED_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers")
_RECIPIENT = re.compile(r"^(original|final)-recipient\s*:\s*(?:[^;\n]*;)?\s*(.+)$", re.I | re.M)
_ACTION = re.compile(r"^action\s*:\s*(\S+)", re.I | re.M)
_MESSAGE_ID = re.compile(r"^message-id\s*:\s*(\S.*)$", re.I | re.M)
_ADDRESS_LINE = re.compile(r"^\s*<?([^\s<>@\"]+@[^\s<>@\"]+\.[^\s<>@\":]+)>?\s*:?\s*$")
_FIELD = re.compile(r"^([A-Za-z-]+)\s*:\s*(.*)$", re.M)
_HEADER_LINE = re.compile(r"^(received|return-path|message-id|from|to|subject|date):", re.I)


@dataclass
class Report:
    """What a bounce says: the failed recipients and the returned message's ID."""

    bounced: list[str] = field(default_factory=list)
    original_message_id: str | None = None
    standard: bool = False  # a message/delivery-status part was found


@dataclass
class Disposition:
    """What a read receipt (RFC 8098 message/disposition-notification) says."""

    disposition: str = ""  # "manual-action/MDN-sent-manually; displayed"
    original_message_id: str | None = None
    recipient: str = ""


def read_disposition(mail: ParsedMail) -> Disposition:
    """The disposition, the Message-ID it is about, and who read it."""
    found = Disposition()
    for part in _parts(mail.message):
        if part.get_content_type() != "message/disposition-notification":
            continue
        text = _text(part)
        fields = {k.lower(): v.strip() for k, v in _FIELD.findall(text)}
        found.disposition = fields.get("disposition", "")
        ids = message_ids(fields.get("original-message-id", ""))
        found.original_message_id = ids[0] if ids else None
        recipient = fields.get("final-recipient") or fields.get("original-recipient", "")
        found.recipient = recipient.rpartition(";")[2].strip().strip("<>").lower()
        break
    return found


def read_report(mail: ParsedMail) -> Report:
    """The failed recipients and the returned Message-ID of a bounce (standard or not)."""
    report = Report()
    for part in _parts(mail.message):
        content_type = part.get_content_type()
        if content_type in _STATUS_TYPES:
            report.standard = True
            report.bounced.extend(_failed_recipients(_text(part)))
        elif content_type in _RETURNED_TYPES and report.original_message_id is None:
            report.original_message_id = _returned_id(part)
    if not report.standard:
        report.bounced = _addresses_in_text(mail.text)
    if report.original_message_id is None:
        ids = message_ids(" ".join(_MESSAGE_ID.findall(mail.text)[:1]))
        report.original_message_id = ids[0] if ids else None
    report.bounced = list(dict.fromkeys(report.bounced))
    return report


def _failed_recipients(status: str) -> list[str]:
    """Per-recipient blocks of a delivery-status text whose Action is failed (or absent)."""
    failed = []
    for block in re.split(r"\n\s*\n", status.replace("\r\n", "\n")):
        recipients = {kind.lower(): addr for kind, addr in _RECIPIENT.findall(block)}
        if not recipients:
            continue
        action = _ACTION.search(block)
        if action and action.group(1).lower() != "failed":
            continue
        address = recipients.get("original") or recipients["final"]
        failed.append(address.strip().strip("<>").lower())
    return [a for a in failed if a]


def _returned_id(part: Message) -> str | None:
    subparts = children(part)
    if subparts:
        values = [v for k, v in subparts[0].raw_items() if k.lower() == "message-id"]
        text = values[0] if values else ""
    else:
        found = _MESSAGE_ID.search(_text(part))
        text = found.group(1) if found else ""
    ids = message_ids(str(text))
    return ids[0] if ids else None


def _addresses_in_text(text: str) -> list[str]:
    """Lines holding only an address, above the copy of the returned message's header."""
    found = []
    for line in text.splitlines():
        if _HEADER_LINE.match(line):
            break
        match = _ADDRESS_LINE.match(line)
        if match:
            found.append(match.group(1).lower())
    return found


def _text(part: Message) -> str:
    """A part's content as text (a parsed delivery-status: its blocks written back)."""
    blocks = children(part)
    if blocks is not None:
        return "\n".join(
            "\n".join(f"{k}: {v}" for k, v in block.raw_items()) + "\n" for block in blocks
        )
    data = part.get_payload(decode=True)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _parts(message: Message) -> list[Message]:
    """Every part of message in document order, not descending into returned messages."""
    result: list[Message] = []
    stack = [message]
    while stack:
        part = stack.pop()
        result.append(part)
        subparts = children(part)
        if subparts is not None and not part.get_content_type().startswith("message/"):
            stack.extend(reversed(subparts))
    return result
