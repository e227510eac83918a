"""iCalendar (RFC 5545) export of the cases that have a date or a deadline.

The seed's "Meeting Calendar": a case with a date is an event (start = date,
end = date + duration), a case with only a deadline is a to-do due then.
Made with the `icalendar` library, never by string templates, so escaping,
line folding and UTC times are right. The UID of a case never changes
(`case-<id>@<domain>`), and DTSTAMP/LAST-MODIFIED are the case's update time,
so exporting twice gives the same file and a client that subscribes updates
its entries instead of adding copies. This module only reads; feeds.py serves
what it makes over HTTP.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence

from icalendar import Calendar, Event, Todo, vCalAddress, vText
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from mailgated.config import Config
from mailgated.models import Case

DEFAULT_HOURS = 1.0  # a dated case without a duration shows as one hour

# case state -> STATUS (RFC 5545 3.8.1.11), for an event and for a to-do
EVENT_STATUS = {
    "draft": "TENTATIVE",
    "open": "CONFIRMED",
    "pending": "TENTATIVE",
    "closed": "CONFIRMED",
    "cancelled": "CANCELLED",
}
TODO_STATUS = {
    "draft": "NEEDS-ACTION",
    "open": "IN-PROCESS",
    "pending": "NEEDS-ACTION",
    "closed": "COMPLETED",
    "cancelled": "CANCELLED",
}


def uid_domain(config: Config) -> str:
    """The right-hand side of every UID: the configured mail domain, else this host's name."""
    return config.outbound.domain or config.listen.hostname or socket.getfqdn()


def calendar_cases(
    session: Session, section_ids: Sequence[int] | None = None, user_id: int | None = None
) -> list[Case]:
    """The cases to show: those with a date or a deadline, in the sections/for the user given."""
    query = (
        select(Case)
        .where(or_(Case.date.is_not(None), Case.deadline.is_not(None)))
        .options(selectinload(Case.user), selectinload(Case.section), selectinload(Case.partner))
        .order_by(Case.id)
    )
    if section_ids is not None:
        query = query.where(Case.section_id.in_(list(section_ids)))
    if user_id is not None:
        query = query.where(Case.user_id == user_id)
    return list(session.scalars(query))


def build_calendar(cases: Sequence[Case], domain: str, name: str) -> bytes:
    """The whole VCALENDAR as bytes (CRLF lines, UTF-8)."""
    cal = Calendar()
    cal.add("prodid", "-//mailgated//case calendar//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", name)
    for case in cases:
        cal.add_component(case_component(case, domain))
    return bytes(cal.to_ical())


def case_component(case: Case, domain: str) -> Event | Todo:
    """One case: an event when it has a date, else a to-do due at its deadline."""
    item: Event | Todo
    if case.date is not None:
        item = Event()
        item.add("dtstart", case.date)
        hours = case.duration if case.duration is not None else DEFAULT_HOURS
        item.add("dtend", case.date + dt.timedelta(hours=hours))
        item.add("status", EVENT_STATUS.get(case.state, "CONFIRMED"))
    else:
        item = Todo()
        item.add("due", case.deadline)
        item.add("status", TODO_STATUS.get(case.state, "NEEDS-ACTION"))
        if case.state == "closed" and case.closed_at is not None:
            item.add("completed", case.closed_at)
    item.add("uid", f"case-{case.id}@{domain}")
    item.add("dtstamp", case.updated_at)
    item.add("last-modified", case.updated_at)
    item.add("created", case.created_at)
    item.add("summary", f"[{case.id}] {case.subject}")
    item.add("description", _description(case))
    item.add("categories", [case.section.name])
    if case.user is not None:
        organizer = vCalAddress(f"mailto:{case.user.email}")
        organizer.params["cn"] = vText(case.user.name)
        item.add("organizer", organizer)
    return item


def _description(case: Case) -> str:
    lines = [f"Case {case.id} in {case.section.name}, {case.state}."]
    if case.partner is not None:
        lines.append(f"Partner: {case.partner.name}")
    if case.email_from:
        lines.append(f"E-mail: {case.email_from}")
    if case.date is not None and case.deadline is not None:
        lines.append(f"Deadline: {case.deadline.isoformat()}")
    if case.description:
        lines += ["", case.description[:2000]]
    return "\n".join(lines)
