"""The `mailgated` command line: thin — it parses, calls a service, prints.

Each command group lives in its own module under `mailgated.commands`; they are
listed in COMMAND_MODULES and imported lazily so that `mailgated deliver` (run
once per message by fetchmail) does not pay for SQLAlchemy or Jinja2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from mailgated.context import Context

# command name -> "module:attribute"; a module is imported only when its command runs.
COMMAND_MODULES: dict[str, str] = {
    "init": "mailgated.commands.admin:init",
    "run": "mailgated.commands.admin:run",
    "section": "mailgated.commands.directory:section",
    "category": "mailgated.commands.directory:category",
    "user": "mailgated.commands.directory:user",
    "partner": "mailgated.commands.directory:partner",
    "case": "mailgated.commands.case:case",
    "deliver": "mailgated.commands.deliver:deliver",
    "import": "mailgated.commands.intake:import_",
    "spool": "mailgated.commands.intake:spool",
    "outbox": "mailgated.commands.outbox:outbox",
    "rule": "mailgated.commands.rule:rule",
    "report": "mailgated.commands.report:report",
    "calendar": "mailgated.commands.calendar:calendar",
    "status": "mailgated.commands.status:status",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMAND_MODULES.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="MAILGATED_CONFIG",
    help="Configuration file (TOML). Default: $MAILGATED_CONFIG, else built-in defaults.",
)
@click.option("-v", "--verbose", count=True, help="-v for INFO detail, -vv for DEBUG.")
@click.option(
    "--as",
    "acting_login",
    metavar="LOGIN",
    envvar="MAILGATED_USER",
    help="Act as this staff user (history author). Default: $MAILGATED_USER.",
)
@click.version_option(package_name="mailgated")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, verbose: int, acting_login: str | None
) -> None:
    """mailgated — mail-centric case management daemon."""
    from mailgated import logs

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logs.setup(level)
    context = Context(config_path=config_path, verbosity=verbose, acting_login=acting_login)
    ctx.obj = context
    ctx.call_on_close(context.close)  # the command's database connections go back


def main(argv: list[str] | None = None) -> Any:
    """Entry point: turn every expected error into one line on stderr and exit 1."""
    from mailgated.config import ConfigError
    from mailgated.errors import MailgatedError, first_line

    try:
        result = cli.main(args=argv, prog_name="mailgated", standalone_mode=False)
        if isinstance(result, int) and result:  # click returns an Exit's code here
            sys.exit(result)
        return result
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "mailgated"
        hint = f" (try '{where} --help')"
        click.echo(f"{where}: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, MailgatedError) as exc:
        click.echo(f"mailgated: error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # database down, disk full…: one line, not a traceback
        if _is_db_error(exc):
            click.echo(f"mailgated: database error: {first_line(exc)}", err=True)
            sys.exit(1)
        raise


def _is_db_error(exc: BaseException) -> bool:
    mod = sys.modules.get("sqlalchemy.exc")
    return bool(mod and isinstance(exc, mod.SQLAlchemyError))
