"""`mailgated import mbox|maildir PATH --section NAME` and `mailgated spool
list|show|retry|delete`.

They work on the spool (`[spool] path`) and do not need the database; only `spool
retry --section` opens it, to check that the section exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from mailgated.context import Context
from mailgated.errors import MailgatedError
from mailgated.intake.spool import Spool, SpoolEntry


def _spool(ctx: Context) -> Spool:
    return ctx.app.spool


@click.command("import")
@click.argument("kind", type=click.Choice(["mbox", "maildir"]))
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--section", required=True, metavar="NAME", help="Section the mail is for.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--notify",
    is_flag=True,
    help="Send the mail new messages would (acknowledgements, forwards); default: none.",
)
@click.pass_obj
def import_(ctx: Context, kind: str, path: Path, section: str, quiet: bool, notify: bool) -> None:
    """Spool every message of an mbox file or Maildir (safe to run twice); sends no mail
    unless --notify."""
    from tqdm import tqdm

    from mailgated.intake.mbox import open_messages, spool_all

    count, messages = open_messages(kind, path)
    spool = _spool(ctx)
    skipped: list[str] = []
    limit = ctx.config.listen.max_message_size
    ids = spool_all(messages, f"import:{path.resolve()}", section, spool, notify, limit, skipped)
    bar = tqdm(ids, total=count, unit="msg", disable=quiet, file=sys.stderr)
    done = sum(1 for spool_id in bar if spool_id)
    click.echo(f"spooled {done} messages from {path} for section {section!r}")
    for line in skipped:
        click.echo(f"skipped {line}", err=True)
    if skipped:
        click.echo(f"skipped {len(skipped)} message(s) over max_message_size {limit}")


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
@click.argument("ids", nargs=-1, metavar="ID...")
@click.option("--all", "every", is_flag=True, help="Every quarantined message.")
@click.option(
    "--section",
    metavar="NAME",
    help="Process it for this section instead (a mis-routed message, a mistyped --section).",
)
@click.pass_obj
def retry(ctx: Context, ids: tuple[str, ...], every: bool, section: str | None) -> None:
    """Put quarantined messages back for processing (failures reset)."""
    if every == bool(ids):
        raise click.UsageError("give the spool IDs to retry, or --all")
    if section:
        from mailgated.directory import Directory

        with ctx.db.session() as session:
            section = Directory(session).section(section).name
    spool_ = _spool(ctx)
    quarantined = spool_.entries(quarantined=True) if every else []
    targets = [e.id for e in quarantined if not e.too_large] if every else list(ids)
    if left := sum(e.too_large for e in quarantined):
        click.echo(f"{left} too-large record(s) left as they are (only their header was kept)")
    for_section = f" for section {section!r}" if section else ""
    _each(targets, lambda id: spool_.retry(id, section), f"back in the spool{for_section}")
    if every and not quarantined:
        click.echo("nothing is quarantined")


@spool.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def delete(ctx: Context, ids: tuple[str, ...], yes: bool) -> None:
    """Remove waiting or quarantined messages for good (asks first)."""
    spool_ = _spool(ctx)
    if not yes:
        for id in ids:
            entry = spool_.get(id)
            click.echo(f"{id}  {entry.state}  {entry.envelope.source}  {entry.subject[:60]}")
        click.confirm(f"delete {len(ids)} spooled message(s) for good?", abort=True)
    _each(list(ids), spool_.delete, "deleted")


def _each(ids: list[str], action: Callable[[str], object], done: str) -> None:
    """`action` on every id; one line each; a failed one is said and the exit is 1."""
    failed = 0
    for id in ids:
        try:
            action(id)
        except MailgatedError as exc:
            click.echo(f"{id}: {exc}", err=True)
            failed += 1
            continue
        click.echo(f"{id}: {done}")
    if failed:
        sys.exit(1)
