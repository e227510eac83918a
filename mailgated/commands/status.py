"""`mailgated status [--json]`: one look at the whole system; exit 1 when a person is needed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from mailgated.commands.common import emit_json
from mailgated.context import Context
from mailgated.monitor import span


def _ago(value: str | None, now: dt.datetime) -> str:
    if not value:
        return "never"
    seconds = (now - dt.datetime.fromisoformat(value)).total_seconds()
    return f"{value[:19].replace('T', ' ')} UTC ({span(seconds)} ago)"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.pass_obj
def status(ctx: Context, as_json: bool) -> None:
    """Daemons, spool, outbox, mailboxes, rules; exit 1 when something needs a person."""
    from mailgated.status import gather

    with ctx.db.session() as session:
        report = gather(ctx.config, session)
    if as_json:
        emit_json(report)
    else:
        _print(report)
    if report["attention"]:
        raise click.exceptions.Exit(1)


def _print(report: dict[str, Any]) -> None:
    now = dt.datetime.now(dt.UTC)
    up = [d for d in report["daemons"] if d["up"]]
    for d in up:
        listeners = ", ".join(f"{k} {v}" for k, v in sorted(d["listeners"].items())) or "none"
        click.echo(
            f"daemon: up since {_ago(d['started_at'], now)} on {d['host']} (pid {d['pid']},"
            f" mailgated {d['version']}); listening: {listeners}"
        )
    if not up:
        last = report["daemons"][0] if report["daemons"] else None
        seen = f" (last seen {_ago(last['seen_at'], now)} on {last['host']})" if last else ""
        click.echo(f"daemon: not running{seen}")
    s = report["spool"]
    click.echo(
        f"spool: {s['new']} new, {s['processing']} processing, {s['quarantined']} quarantined,"
        f" {s['duplicates']} duplicates set aside"
    )
    o = report["outbox"]
    oldest = o["oldest_queued_seconds"]
    click.echo(
        f"outbox: {o['queued']} queued"
        + (f" (oldest {span(oldest)})" if oldest is not None else "")
        + f", {o['sent']} sent, {o['failed']} failed, {o['held']} held"
    )
    for m in report["mailboxes"]:
        line = f"mailbox {m['name']} ({m['section']}): last poll {_ago(m['last_poll'], now)}"
        if m["idle"]:
            line += ", waiting in IDLE"
        if m["last_error"]:
            line += f"; failing since {_ago(m['error_at'], now)}: {m['last_error']}"
        click.echo(line)
    r = report["rules"]
    click.echo(
        f"rules: last sweep {_ago(r['last_sweep'], now)}; {r['firings']} firings"
        f" ({r['firings_24h']} in 24 h, last {_ago(r['last_firing'], now)})"
    )
    for line in report["attention"]:
        click.echo(f"attention: {line}")
    if not report["attention"]:
        click.echo("all well")
