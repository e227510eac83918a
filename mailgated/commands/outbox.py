"""`mailgated outbox list|retry`: what we sent, what waits, what failed."""

from __future__ import annotations

import click

from mailgated.commands.common import emit_json, iso, session_for, table
from mailgated.context import Context
from mailgated.models import Outbox
from mailgated.outbound import outbox as queue


def outbox_dict(row: Outbox) -> dict[str, object]:
    return {
        "id": row.id,
        "case_id": row.case_id,
        "to": row.recipients or [row.to_addr],
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
@click.option("--failed", is_flag=True, help="Only messages we gave up on.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def outbox_list(ctx: Context, failed: bool, as_json: bool) -> None:
    """List queued, sent and failed messages (newest 500)."""
    with session_for(ctx) as session:
        rows = queue.listing(session, failed)
        if as_json:
            emit_json([outbox_dict(r) for r in rows])
            return
        table(
            [
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
            ],
            ("id", "state", "tries", "case", "to", "subject", "last error"),
        )


@outbox.command("retry")
@click.argument("outbox_id", type=int)
@click.pass_obj
def outbox_retry(ctx: Context, outbox_id: int) -> None:
    """Queue a failed message again, now."""
    with session_for(ctx) as session:
        queue.retry(session, outbox_id)
    click.echo(f"outbox {outbox_id}: queued again")
