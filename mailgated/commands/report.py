"""`mailgated report sections|users`: statistics as a table, CSV, JSON or a chart file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.orm import Session

from mailgated.commands.common import session_for, table
from mailgated.context import Context
from mailgated.directory import Directory
from mailgated.errors import Invalid
from mailgated.models import State
from mailgated.reporting import reports
from mailgated.reporting.filters import Filters, day_range


def build_filters(
    session: Session,
    date_from: str | None,
    date_to: str | None,
    section: str | None,
    user: str | None,
    states: tuple[str, ...],
) -> Filters:
    """Check and resolve the shared filters; every mistake is one line naming the option."""
    start, end = day_range(date_from, date_to)
    directory = Directory(session)
    return Filters(
        created_from=start,
        created_to=end,
        section_ids=directory.subtree_ids(directory.section(section)) if section else None,
        user_id=directory.user(user).id if user else None,
        states=states,
    )


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The filters and outputs both reports share."""
    options = [
        click.option("--from", "date_from", metavar="DATE", help="Created on or after (UTC)."),
        click.option("--to", "date_to", metavar="DATE", help="Created on or before (UTC)."),
        click.option("--section", metavar="S", help="Section, with its sub-sections."),
        click.option("--user", metavar="LOGIN", help="Responsible user."),
        click.option(
            "--state",
            "states",
            multiple=True,
            type=click.Choice([s.value for s in State]),
            help="Only cases in this state (repeatable).",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["table", "csv", "json"]),
            default="table",
            show_default=True,
        ),
        click.option(
            "--chart",
            metavar="FILE",
            help="Also draw a chart: FILE.png or FILE.svg (needs the [charts] extra).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def report() -> None:
    """Statistics for managers: cases by section, cases per month, user and section."""


@report.command("users")
@filter_options
@click.option(
    "--by", "by", type=click.Choice(["category"]), help="Also split each row by category."
)
@click.pass_obj
def report_users(ctx: Context, /, by: str | None, fmt: str, chart: str | None, **kw: Any) -> None:
    """Per month of creation × responsible × section: cases, closed, delay, money."""
    by_category = by == "category"
    _check_chart(chart)
    with session_for(ctx) as session:
        filters = build_filters(session, **kw)
        rows = reports.users_report(session, filters, by_category)
    if fmt == "csv":
        click.echo(reports.users_csv(rows, by_category), nl=False)
    elif fmt == "json":
        click.echo(reports.users_json(rows, by_category))
    else:
        headers, cells = reports.users_table_rows(rows, by_category)
        numbers = range(len(headers) - 7, len(headers))
        table(cells, headers, right=numbers) if cells else click.echo("no cases match")
        if rows:
            click.echo(f"\n{reports.DRILL_HINT}")
            click.echo(f"  {reports.drill_command(rows[0], filters, by_category)}")
    if chart:
        from mailgated.reporting import charts

        charts.users_chart(rows, chart)
        click.echo(f"chart written to {chart}", err=True)


@report.command("sections")
@filter_options
@click.pass_obj
def report_sections(ctx: Context, /, fmt: str, chart: str | None, **kw: Any) -> None:
    """The section tree with cases per state: own (and with sub-sections)."""
    _check_chart(chart)
    with session_for(ctx) as session:
        rows = reports.sections_report(session, build_filters(session, **kw))
    if fmt == "csv":
        click.echo(reports.sections_csv(rows), nl=False)
    elif fmt == "json":
        click.echo(reports.sections_json(rows))
    else:
        headers, cells = reports.sections_table_rows(rows)
        numbers = range(1, len(headers))
        table(cells, headers, right=numbers) if cells else click.echo("no sections")
        click.echo("\nN (M): N cases in the section itself, M with its sub-sections")
    if chart:
        from mailgated.reporting import charts

        charts.sections_chart(rows, chart)
        click.echo(f"chart written to {chart}", err=True)


def _check_chart(path: str | None) -> None:
    """Fail before the query, not after it, on a chart file we cannot make."""
    if path is None:
        return
    if not path.lower().endswith((".png", ".svg")):
        raise Invalid(f"--chart {path}: the file name must end in .png or .svg")
    from mailgated.reporting import charts

    charts.require_matplotlib()
