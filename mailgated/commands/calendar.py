"""`mailgated calendar`: the cases with dates as an iCalendar file, or the URL of its feed."""

from __future__ import annotations

from pathlib import Path

import click

from mailgated.commands.common import session_for
from mailgated.context import Context
from mailgated.directory import Directory
from mailgated.errors import Invalid
from mailgated.reporting.calendar import build_calendar, calendar_cases, uid_domain


@click.command()
@click.option("--section", metavar="S", help="Only this section, with its sub-sections.")
@click.option("--user", metavar="LOGIN", help="Only the cases this user is responsible for.")
@click.option("--output", metavar="FILE.ics", help="Write here instead of standard output.")
@click.option(
    "--feed-url",
    is_flag=True,
    help="Print the secret URL of this calendar's feed (served by `mailgated run`).",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="With --feed-url: where people reach the feeds (a reverse proxy).",
)
@click.pass_obj
def calendar(
    ctx: Context,
    section: str | None,
    user: str | None,
    output: str | None,
    feed_url: bool,
    base_url: str | None,
) -> None:
    """Write an RFC 5545 calendar: an event per dated case, a to-do per deadline."""
    if feed_url and section and user:
        raise Invalid("a feed is per section or per user: give --section or --user, not both")
    with session_for(ctx) as session:
        directory = Directory(session)
        found = directory.section(section) if section else None
        person = directory.user(user) if user else None
        if feed_url:
            click.echo(_feed_url(ctx, found.id if found else None, user, base_url))
            return
        cases = calendar_cases(
            session,
            section_ids=directory.subtree_ids(found) if found else None,
            user_id=person.id if person else None,
        )
        parts = [x.name for x in (found, person) if x is not None]
        name = f"mailgated: {', '.join(parts) or 'all cases'}"
        data = build_calendar(cases, uid_domain(ctx.config), name)
    if output is None:
        click.echo(data.decode("utf-8"), nl=False)
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise Invalid(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"{len(cases)} cases written to {output}", err=True)


def _feed_url(ctx: Context, section_id: int | None, login: str | None, base: str | None) -> str:
    """The URL under `[listen] http` (or `base`, the proxy in front of it)."""
    from mailgated.reporting.feeds import feed_path, feed_url

    listen = ctx.config.listen.http
    if not listen:
        raise Invalid("[listen] http is empty: set it (e.g. 127.0.0.1:8080) to serve feeds")
    if base is not None and not base.startswith(("http://", "https://")):
        raise Invalid(f"--base-url {base}: give an http:// or https:// URL")
    if section_id is not None:
        path = feed_path("section", section_id)
    elif login is not None:
        path = feed_path("user", login)
    else:
        path = feed_path("all")
    return feed_url(base or f"http://{listen}", ctx.app.secret, path)
