"""Helpers shared by command modules: sessions, the acting user, times, output."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.orm import Session

from mailgated.addresses import one_address
from mailgated.cases import Actor, CaseService
from mailgated.context import Context
from mailgated.directory import Directory
from mailgated.errors import Invalid


@contextmanager
def session_for(ctx: Context) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


@contextmanager
def directory_for(ctx: Context) -> Iterator[Directory]:
    """The directory in one transaction, for the commands that read or edit it."""
    with ctx.db.session() as session:
        yield Directory(session)


def actor_for(ctx: Context, session: Session) -> Actor:
    """`--as LOGIN` (or $MAILGATED_USER), else the OS user if that is a staff login."""
    directory = Directory(session)
    if ctx.acting_login:
        return Actor.for_user(directory.user(ctx.acting_login))
    os_user = getpass.getuser()
    found = next((u for u in directory.users() if u.login == os_user), None)
    return Actor.for_user(found) if found else Actor(label=os_user or "admin")


def case_service(ctx: Context, session: Session) -> CaseService:
    """The acting user's CaseService; rules run on every change it makes in `session`."""
    rules = ctx.app.rules.cascade(session)
    return CaseService(session, actor_for(ctx, session), events=rules)


def parse_time(value: str | None, what: str = "time") -> dt.datetime | None:
    """ISO 8601; a time without an offset is taken as UTC; a bare date is midnight UTC."""
    if value is None or value == "":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"bad {what} {value!r}: use ISO 8601, e.g. 2026-12-01T14:30+01:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+)\s*m)?\s*$")


def parse_duration(value: str | None) -> float | None:
    """Hours: "1.5", "2h", "90m", "1h30m"."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        raise Invalid(f"bad duration {value!r}: use hours (1.5) or 1h30m")
    hours, minutes = match.groups()
    return float(hours or 0) + int(minutes or 0) / 60


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def json_or_table(
    as_json: bool, items: Iterable[Any], rows: Iterable[Sequence[Any]], headers: Sequence[str]
) -> None:
    """A list command's output: `items` as a JSON list with --json, else `rows` as a table
    (each is read only when it is shown)."""
    if as_json:
        emit_json(list(items))
    else:
        table(list(rows), headers)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], right: Sequence[int] = ()) -> None:
    """A plain aligned table for the terminal; the columns in `right` (numbers) align right."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(line).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


class AddressType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """An option that takes exactly one e-mail address (`addresses.one_address`);
    with `empty_ok`, '' too (for "none")."""

    name = "address"

    def __init__(self, empty_ok: bool = False) -> None:
        self.empty_ok = empty_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if self.empty_ok and value == "":
            return ""
        try:
            return one_address(str(value), "address")
        except Invalid as exc:
            self.fail(str(exc).removeprefix("address: "), param, ctx)


ADDRESS = AddressType()
ADDRESS_OR_EMPTY = AddressType(empty_ok=True)
