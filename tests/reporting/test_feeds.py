"""The calendar feeds of `mailgated run`: 200 with the path's token, 404 otherwise."""

from __future__ import annotations

import asyncio
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import icalendar
from conftest import MG
from daemon_helpers import run_daemon

from mailgated.app import App
from mailgated.config import Config, ListenConfig, SecurityConfig
from mailgated.db import Database
from mailgated.reporting.feeds import feed_path, feed_token
from mailgated.web import HttpServer

SECRET = b"x" * 64


def fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def seed(mg: MG) -> None:
    mg("user", "add", "demo", "--name", "Demo User", "--email", "demo@example.com")
    mg("section", "add", "Support Level 1", "--parent", "Support Level 2")
    mg("case", "new", "--section", "Support Level 1", "--subject", "Visit", "--user", "demo",
       "--date", "2026-12-01T10:00Z", "--duration", "1")  # fmt: skip


async def test_feed_answers_200_with_token_and_404_without(db_url: str, mg: MG) -> None:
    """The calendar feed answers with the right token and 404s without one."""
    seed(mg)
    config = Config(listen=ListenConfig(smtp="", http="127.0.0.1:0"))
    db = Database(db_url)
    server = HttpServer(db, config, SECRET)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"

        async def get(path: str, token: str | None) -> tuple[int, bytes, str]:
            query = "" if token is None else f"?token={token}"
            return await asyncio.to_thread(fetch, base + path + query)

        section = feed_path("section", 1)  # Support Level 2: its sub-section's case is in it
        status, body, kind = await get(section, feed_token(SECRET, section))
        assert status == 200 and kind.startswith("text/calendar")
        event = next(iter(icalendar.Calendar.from_ical(body).walk("VEVENT")))
        assert str(event["summary"]) == "[1] Visit"

        assert (await get(section, None))[0] == 404
        assert (await get(section, "0" * 32))[0] == 404
        other = feed_path("section", 2)
        assert (await get(other, feed_token(SECRET, section)))[0] == 404  # a token opens one path
        ghost = feed_path("user", "ghost")
        assert (await get(ghost, feed_token(SECRET, ghost)))[0] == 404  # valid token, no user

        # a date moved with `case set` shows in the next fetch
        mg("case", "set", "1", "--date", "2026-12-04T08:00Z")
        user = feed_path("user", "demo")
        status, body, _ = await get(user, feed_token(SECRET, user))
        event = next(iter(icalendar.Calendar.from_ical(body).walk("VEVENT")))
        assert status == 200 and event.decoded("dtstart").isoformat() == "2026-12-04T08:00:00+00:00"
        everything = feed_path("all")
        assert (await get(everything, feed_token(SECRET, everything)))[0] == 200
    finally:
        await server.stop()
        db.dispose()


def test_feed_url_command_and_service_switch(db_url: str, tmp_path: Path) -> None:
    """calendar --feed-url prints the feed's address, and an empty [listen] http switches it off."""
    secret_file = tmp_path / "secret.key"
    config = tmp_path / "mailgated.toml"
    config.write_text(
        f'[listen]\nsmtp = ""\nhttp = "127.0.0.1:8080"\n[security]\nsecret_file = "{secret_file}"\n'
    )
    mg = MG(tmp_path, db_url, config)
    seed(mg)
    url = mg("calendar", "--user", "demo", "--feed-url").out.strip()
    secret = secret_file.read_text().strip().encode()
    path = feed_path("user", "demo")
    assert url == f"http://127.0.0.1:8080{path}?token={feed_token(secret, path)}"
    assert (
        "/calendar/section/1.ics?token="
        in mg("calendar", "--section", "Support Level 2", "--feed-url").out
    )
    proxied = mg(
        "calendar", "--user", "demo", "--feed-url", "--base-url", "https://cal.example.com/"
    )
    assert proxied.out.strip() == f"https://cal.example.com{path}?token={feed_token(secret, path)}"
    both = mg("calendar", "--user", "demo", "--section", "Support Level 2", "--feed-url", ok=False)
    assert both.code != 0 and "per section or per user" in both.err

    def feeds(http: str) -> HttpServer | None:
        config = Config(
            listen=ListenConfig(http=http),
            security=SecurityConfig(secret_file=str(secret_file)),
        )
        return App(config).http()

    assert feeds("") is None
    assert isinstance(feeds("127.0.0.1:0"), HttpServer)
    no_http = MG(tmp_path, db_url)
    result = no_http("calendar", "--feed-url", ok=False)
    assert result.code != 0 and "[listen] http is empty" in result.err


def test_mailgated_run_serves_the_feed_the_command_names(db_url: str, tmp_path: Path) -> None:
    """The admin's path: `calendar --feed-url` prints a URL that `mailgated run` answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "mailgated.toml"
    config.write_text(
        f'[listen]\nsmtp = ""\nhttp = "127.0.0.1:{port}"\n'
        f'[security]\nsecret_file = "{tmp_path / "secret.key"}"\n'
    )
    mg = MG(tmp_path, db_url, config)
    seed(mg)
    url = mg("calendar", "--user", "demo", "--feed-url").out.strip()
    proc = run_daemon(tmp_path, config, MAILGATED_DATABASE_URL=db_url)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "mailgated ready" in line:
                break
        assert any("calendar feeds on" in line for line in lines), "".join(lines)

        status, body, _ = fetch(url)
        event = next(iter(icalendar.Calendar.from_ical(body).walk("VEVENT")))
        assert status == 200 and str(event["summary"]) == "[1] Visit"
        assert fetch(url.split("?")[0])[0] == 404
        mg("case", "set", "1", "--date", "2026-12-07T15:00Z")
        event = next(iter(icalendar.Calendar.from_ical(fetch(url)[1]).walk("VEVENT")))
        assert event.decoded("dtstart").isoformat() == "2026-12-07T15:00:00+00:00"
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest
