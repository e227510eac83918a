"""`mailgated init` and `mailgated run`."""

from __future__ import annotations

import asyncio
import logging

import click

from mailgated.context import Context


@click.command()
@click.pass_obj
def init(ctx: Context) -> None:
    """Create or upgrade the database."""
    from mailgated import migrate
    from mailgated.db import display_url

    db = ctx.database(create=True)  # fails with one line when no migration could be applied
    click.echo(f"database ready at revision {migrate.current(db.engine)}: {display_url(db.url)}")


@click.command()
@click.pass_obj
def run(ctx: Context) -> None:
    """Run the daemon: listeners, pollers, processing, rules timer, sender."""
    from mailgated.daemon import Daemon

    if ctx.verbosity == 0:
        logging.getLogger().setLevel(logging.INFO)
    ctx.database(create=True)  # created or upgraded before the daemon starts
    daemon = Daemon(ctx.app)
    try:
        asyncio.run(daemon.run())
    except KeyboardInterrupt:
        pass
