"""`mailgated deliver`: one message on stdin into the spool (see mailgated.intake.mda).

The console script sends `deliver` to the MDA's fast path before click is
even imported; this click command is the same thing for `python -m mailgated`,
in-process callers and `--help` listings.
"""

from __future__ import annotations

import sys

import click

from mailgated.context import Context
from mailgated.intake import mda


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--section", metavar="NAME", help="Section recorded in the envelope.")
@click.option(
    "--recipient", "recipients", metavar="ADDR", multiple=True, help="Envelope recipient."
)
@click.option(
    "--bounce-too-large",
    is_flag=True,
    help="Exit 65 for a message over max_message_size (Postfix pipe(8) bounces it) instead "
    "of recording its header in the quarantine and exiting 0.",
)
@click.pass_obj
def deliver(
    ctx: Context, section: str | None, recipients: tuple[str, ...], bounce_too_large: bool
) -> None:
    """MDA: spool one message from stdin; exit 0 (spooled), 75 (retry later), 65 (empty input)."""
    code = mda.spool_stdin(
        ctx.config_path,
        section,
        list(recipients),
        verbose=ctx.verbosity,
        bounce_too_large=bounce_too_large,
    )
    sys.exit(code)
