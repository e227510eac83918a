"""Read an iMIP answer to an invitation (RFC 6047: text/calendar; method=REPLY).

Outlook ("Accepted:", "Angenommen:", "Accepté :"), Google Calendar, Apple Calendar and
Thunderbird answer an invitation with a text/calendar part whose METHOD is REPLY; the
ATTENDEE's PARTSTAT says the answer and an optional COMMENT carries what the person
typed into the answer dialog. The calendar is read with `icalendar` (imported on the
first such part, not by every worker and daemon at start); a part it cannot read is no
answer (the mail is then treated like any other).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from mailgated.message.charset import decode_bytes
from mailgated.message.parse import ParsedMail

_CALENDAR_TYPES = ("text/calendar", "application/ics")
_ANSWERS = {
    "ACCEPTED": "accepted",
    "DECLINED": "declined",
    "TENTATIVE": "tentatively accepted",
    "DELEGATED": "delegated",
}


@dataclass(frozen=True)
class CalendarReply:
    """Who answered which event how, and the comment they typed ("" if none)."""

    attendee: str
    answer: str
    summary: str
    comment: str

    def describe(self) -> str:
        who = self.attendee or "the attendee"
        what = f" {self.summary!r}" if self.summary else ""
        return f"{who} {self.answer}{what}"


def calendar_reply(mail: ParsedMail) -> CalendarReply | None:
    """The iMIP REPLY this mail carries, or None."""
    if not any(p.content_type in _CALENDAR_TYPES for p in mail.attachments):
        return None  # the calendar part of an answer is never the body
    for part in mail.message.walk():
        if part.get_content_type() != "text/calendar":
            continue
        method = str(part.get_param("method", "") or "").upper()
        text = _text(part)
        if method not in ("", "REPLY") or "METHOD:REPLY" not in text.upper():
            continue
        found = _read(text)
        if found is not None:
            return found
    return None


def _text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return decode_bytes(data, str(part.get_content_charset() or "utf-8"))


def _read(text: str) -> CalendarReply | None:
    from icalendar import Calendar  # here: ~4 MB in each process, for the rare iMIP answer

    try:
        calendar = Calendar.from_ical(text)
    except Exception:  # not a calendar we can read: no evidence
        return None
    if str(calendar.get("METHOD", "")).upper() != "REPLY":
        return None
    for event in calendar.walk("VEVENT"):
        attendee = event.get("ATTENDEE")
        if isinstance(attendee, list):
            attendee = attendee[0] if attendee else None
        state = str(attendee.params.get("PARTSTAT", "")).upper() if attendee is not None else ""
        name = str(attendee.params.get("CN", "")) if attendee is not None else ""
        address = str(attendee or "").removeprefix("mailto:").removeprefix("MAILTO:")
        return CalendarReply(
            attendee=name or address,
            answer=_ANSWERS.get(state, f"answered ({state.lower() or 'no status'})"),
            summary=str(event.get("SUMMARY", "")),
            comment=str(event.get("COMMENT", "")).strip(),
        )
    return None
