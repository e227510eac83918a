"""Calendar feeds over HTTP, for Thunderbird and Outlook to subscribe to.

A `mailgated run` service when `[listen] http` is set. Stable URLs:

    /calendar/all.ics?token=…              every dated case (the whole company)
    /calendar/section/<id>.ics?token=…     a section with its sub-sections
    /calendar/user/<login>.ics?token=…     the cases a user is responsible for

Calendars show customer names, so each URL carries a token: an HMAC of its
path under the site secret (`mailgated calendar --feed-url` prints them). A
missing or wrong token, like an unknown section or user, gets 404 — the
server does not say which feeds exist. Only GET and HEAD are served, one
request per connection; the database is read in a worker thread so the
daemon's loop never blocks. Each fetch reads the database afresh, so a case
moved with `case set` shows in the next one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from hashlib import sha256
from urllib.parse import parse_qs, urlsplit

from mailgated.config import Config, parse_listen
from mailgated.db import Database
from mailgated.reporting.calendar import build_calendar, calendar_cases, uid_domain

log = logging.getLogger("mailgated.reporting.feeds")

FEED_PATH = re.compile(r"^/calendar/(?:(all)|(section)/(\d+)|(user)/([^/]+))\.ics$")
MAX_HEADER_LINES = 100
READ_TIMEOUT = 10.0


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


class FeedServer:
    """The HTTP listener; a daemon service."""

    def __init__(self, db: Database, config: Config, secret: bytes) -> None:
        self.name = f"calendar feeds {config.listen.http}"
        self.db = db
        self.config = config
        self.secret = secret
        self.server: asyncio.AbstractServer | None = None
        self.port: int | None = None

    async def start(self) -> None:
        host, port = parse_listen(self.config.listen.http)
        self.server = await asyncio.start_server(self._handle, host, int(port))
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("calendar feeds on http://%s:%s/calendar/", host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, target = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            status, body = await self._answer(method, target)
            _write(writer, status, body, head=method == "HEAD")
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that hangs up or speaks nonsense gets nothing
        except Exception:
            log.exception("calendar feed request failed")
            _write(writer, "500 Internal Server Error", b"")
        finally:
            writer.close()

    async def _answer(self, method: str, target: str) -> tuple[str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b""
        url = urlsplit(target)
        token = (parse_qs(url.query).get("token") or [""])[0]
        if not hmac.compare_digest(token, feed_token(self.secret, url.path)):
            return "404 Not Found", b"not found\n"
        body = await asyncio.to_thread(render_feed, self.db, self.config, url.path)
        if body is None:
            return "404 Not Found", b"not found\n"
        log.debug("served %s (%d bytes)", url.path, len(body))
        return "200 OK", body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The request line; the headers are read and ignored (nothing in them matters here)."""
    line = (await reader.readuntil(b"\n")).decode("latin-1").split()
    if len(line) != 3 or not line[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request")
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readuntil(b"\n")).strip() == b"":
            return line[0], line[1]
    raise ValueError("too many header lines")


def _write(writer: asyncio.StreamWriter, status: str, body: bytes, head: bool = False) -> None:
    headers = [
        f"HTTP/1.1 {status}",
        "Content-Type: text/calendar; charset=utf-8"
        if status.startswith("200")
        else "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-cache",
        "Connection: close",
    ]
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head else body))
