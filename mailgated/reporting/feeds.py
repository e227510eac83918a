"""Calendar feeds over HTTP, for Thunderbird and Outlook to subscribe to.

Served by `mailgated run`'s HTTP listener (`mailgated/web.py`, aiohttp) when
`[listen] http` is set. Stable URLs:

    /calendar/all.ics?token=…              every dated case (the whole company)
    /calendar/section/<id>.ics?token=…     a section with its sub-sections
    /calendar/user/<login>.ics?token=…     the cases a user is responsible for

Calendars show customer names, so each URL carries a token: an HMAC of its
path under the site secret (`mailgated calendar --feed-url` prints them). A
missing or wrong token, like an unknown section or user, gets 404 — the
server does not say which feeds exist. The database is read in a worker thread
so the daemon's loop never blocks. Each fetch reads the database afresh, so a
case moved with `case set` shows in the next one.
"""

from __future__ import annotations

import hmac
import re
from hashlib import sha256

from mailgated.config import Config
from mailgated.db import Database
from mailgated.reporting.calendar import build_calendar, calendar_cases, uid_domain

FEED_PATH = re.compile(r"^/calendar/(?:(all)|(section)/(\d+)|(user)/([^/]+))\.ics$")


def feed_path(kind: str, key: str | int | None = None) -> str:
    """The path of a feed: kind is "all", "section" (key = id) or "user" (key = login)."""
    return "/calendar/all.ics" if kind == "all" else f"/calendar/{kind}/{key}.ics"


def feed_token(secret: bytes, path: str) -> str:
    """The token that opens one path; a token for one feed opens no other."""
    return hmac.new(secret, b"calendar-feed:" + path.encode(), sha256).hexdigest()[:32]


def feed_url(base: str, secret: bytes, path: str) -> str:
    return f"{base.rstrip('/')}{path}?token={feed_token(secret, path)}"


def render_feed(db: Database, config: Config, path: str) -> bytes | None:
    """The calendar a path names, or None when it names nothing (→ 404)."""
    from mailgated.directory import Directory
    from mailgated.errors import NotFound
    from mailgated.models import Section

    match = FEED_PATH.match(path)
    if match is None:
        return None
    _, section, section_id, user, login = match.groups()
    with db.session() as session:
        directory = Directory(session)
        try:
            if section:
                found = session.get(Section, int(section_id))
                if found is None:
                    return None
                cases = calendar_cases(session, section_ids=directory.subtree_ids(found))
                name = f"mailgated: {found.name}"
            elif user:
                person = directory.user(login)
                cases = calendar_cases(session, user_id=person.id)
                name = f"mailgated: {person.name}"
            else:
                cases, name = calendar_cases(session), "mailgated: all cases"
        except NotFound:
            return None
        return build_calendar(cases, uid_domain(config), name)
