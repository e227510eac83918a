"""`mailgated outbox list|retry`: what we sent, what waits, what failed."""

from __future__ import annotations

import click

from mailgated.commands.common import iso, json_or_table, session_for
from mailgated.context import Context
from mailgated.models import Outbox
from mailgated.outbound import outbox as queue


def outbox_dict(row: Outbox) -> dict[str, object]:
    return {
        "id": row.id,
        "case_id": row.case_id,
        "to": row.recipients or [row.to_addr],
        "results": row.results or {},
        "subject": row.subject,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "queued_at": iso(row.queued_at),
        "sent_at": iso(row.sent_at),
    }


@click.group()
def outbox() -> None:
    """The outbound queue."""


@outbox.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(queue.STATES),
    help="Only messages in this state (repeat for several).",
)
@click.option("--failed", is_flag=True, help="Only messages we gave up on (= --state failed).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Show the newest N (0 = all).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def outbox_list(
    ctx: Context, states: tuple[str, ...], failed: bool, limit: int, as_json: bool
) -> None:
    """List queued, sent and failed messages, newest last, and the totals."""
    if failed:
        states = (*states, "failed")
    with session_for(ctx) as session:
        rows = queue.listing(session, tuple(dict.fromkeys(states)), limit or None)
        json_or_table(
            as_json,
            (outbox_dict(r) for r in rows),
            (
                (
                    r.id,
                    r.state,
                    r.attempts,
                    r.case_id or "",
                    ", ".join(r.recipients),
                    r.subject[:50],
                    (r.last_error or "")[:40],
                )
                for r in rows
            ),
            ("id", "state", "tries", "case", "to", "subject", "last error"),
        )
        if not as_json:
            click.echo(totals(queue.counts(session), len(rows)))


def totals(counts: queue.Counts, shown: int) -> str:
    line = (
        f"{shown} shown; queued {counts.queued}, sent {counts.sent}, failed {counts.failed}, "
        f"held {counts.held}"
    )
    if counts.oldest_queued_age is not None:
        line += f"; oldest queued {counts.oldest_queued_age:.0f} s ago"
    return line


@outbox.command("retry")
@click.argument("outbox_ids", type=int, nargs=-1)
@click.option("--failed", is_flag=True, help="Every message we gave up on.")
@click.pass_obj
def outbox_retry(ctx: Context, outbox_ids: tuple[int, ...], failed: bool) -> None:
    """Queue failed messages again, now: by ID, or all of them with --failed."""
    if not outbox_ids and not failed:
        raise click.UsageError("give outbox IDs, or --failed for every failed message")
    with session_for(ctx) as session:
        ids = list(dict.fromkeys([*outbox_ids, *(queue.failed_ids(session) if failed else [])]))
        queue.retry_many(session, ids)
    if not ids:
        click.echo("no failed messages")
    for outbox_id in ids:
        click.echo(f"outbox {outbox_id}: queued again")
