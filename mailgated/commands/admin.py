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
    from mailgated import logs
    from mailgated.daemon import Daemon
    from mailgated.monitor import end_multiprocess, prepare_multiprocess
    from mailgated.secret import load_secret
    from mailgated.startup import check_listeners
    from mailgated.workers import settle_heap

    config = ctx.config
    level = logs.level_named(config.logging.level)
    if ctx.verbosity:
        level = min(level, logging.INFO if ctx.verbosity == 1 else logging.DEBUG)
    logs.setup(level, json_lines=config.logging.format == "json")
    logging.getLogger("mailgated").info("%s", logs.startup_line(config))
    check_listeners(config)  # a port in use: one line naming the key, not a traceback
    load_secret(config)  # made, or its mode checked, before anything needs it
    metrics_dir = prepare_multiprocess()  # before prometheus-client is imported
    try:
        # the schema is made ready by the daemon once intake runs: a database down at start
        # is waited for (with backoff) while mail is accepted into the spool
        daemon = Daemon(
            ctx.app,
            prepare=lambda: ctx.database(create=True, announce=False),
            settle=settle_heap,
        )
        try:
            asyncio.run(daemon.run())
        except KeyboardInterrupt:
            pass
    finally:
        end_multiprocess(metrics_dir)
