"""`mailgated import mbox|maildir PATH --section NAME` and `mailgated spool list|show|retry`.

Both work on the spool alone (`[spool] path`); neither opens the database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mailgated.context import Context
from mailgated.intake.spool import Spool, SpoolEntry


def _spool(ctx: Context) -> Spool:
    return Spool(ctx.config.spool.path)


@click.command("import")
@click.argument("kind", type=click.Choice(["mbox", "maildir"]))
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--section", required=True, metavar="NAME", help="Section the mail is for.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def import_(ctx: Context, kind: str, path: Path, section: str, quiet: bool) -> None:
    """Spool every message of an mbox file or Maildir (safe to run twice)."""
    from tqdm import tqdm

    from mailgated.intake.mbox import open_messages, spool_all

    count, messages = open_messages(kind, path)
    spool = _spool(ctx)
    ids = spool_all(messages, f"import:{path.resolve()}", section, spool)
    done = sum(1 for _ in tqdm(ids, total=count, unit="msg", disable=quiet, file=sys.stderr))
    click.echo(f"spooled {done} messages from {path} for section {section!r}")


@click.group()
def spool() -> None:
    """See and replay what is in the spool."""


def _row(entry: SpoolEntry) -> dict[str, object]:
    env = entry.envelope
    return {
        "id": entry.id,
        "source": env.source,
        "received_at": env.received_at.isoformat(),
        "message_id": env.message_id,
        "subject": entry.subject,
        "state": entry.state,
        "reason": env.reason,
    }


@spool.command("list")
@click.option("--quarantined", is_flag=True, help="Only quarantined messages.")
@click.option(
    "--duplicates", is_flag=True, help="Only copies dropped as already recorded (kept for a while)."
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def list_(ctx: Context, quarantined: bool, duplicates: bool, as_json: bool) -> None:
    """Messages waiting (new, processing) or, with --quarantined / --duplicates, set aside."""
    from mailgated.commands.common import emit_json, table

    entries = _spool(ctx).entries(quarantined=quarantined, duplicates=duplicates)
    rows = [_row(e) for e in entries]
    if as_json:
        emit_json(rows)
        return
    headers = ["id", "state", "received_at", "source", "subject"]
    if quarantined or duplicates:
        headers.append("reason")
    table([[str(r[h])[:60] for h in headers] for r in rows], headers)


@spool.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="The envelope as JSON, without the message.")
@click.pass_obj
def show(ctx: Context, id: str, as_json: bool) -> None:
    """The envelope and the raw message of one spooled message."""
    spool_ = _spool(ctx)
    entry = spool_.get(id)
    row = _row(entry) | {
        "envelope_from": entry.envelope.envelope_from,
        "recipients": entry.envelope.recipients,
        "section": entry.envelope.section,
        "failures": entry.envelope.failures,
    }
    if as_json:
        click.echo(json.dumps(row, indent=2, ensure_ascii=False))
        return
    for key, value in row.items():
        click.echo(f"{key + ':':15} {value}")
    click.echo("")
    click.echo(spool_.read(id).decode("utf-8", "replace"))


@spool.command()
@click.argument("id")
@click.pass_obj
def retry(ctx: Context, id: str) -> None:
    """Put a quarantined message back for processing (failures reset)."""
    _spool(ctx).retry(id)
    click.echo(f"{id}: back in the spool for processing")
