"""`mailgated rule …`: load the rules file, list, show, enable, disable, test, sweep."""

from __future__ import annotations

import json

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.commands.common import iso, parse_time, session_for, table
from mailgated.context import Context
from mailgated.db import chunks
from mailgated.errors import NotFound
from mailgated.models import Case, Rule, utcnow
from mailgated.rules import loader, mail


@click.group()
def rule() -> None:
    """Automation rules (managed as a TOML file)."""


@rule.command("load")
@click.argument("path", type=click.Path(dir_okay=False))
@click.pass_obj
def rule_load(ctx: Context, path: str) -> None:
    """Validate FILE and make the database's rules match it (nothing changes on any error)."""
    data = loader.parse_file(path)
    templates = mail.environment(ctx.config.outbound)
    with session_for(ctx) as session:
        specs = loader.validate(session, data, lambda n: mail.template_problem(templates, n))
        report = loader.store(session, specs)
    for what in ("added", "updated", "removed"):
        for name in report[what]:
            click.echo(f"{what}: {name}")
    click.echo(f"{len(specs)} rule(s) loaded from {path}")


@rule.command("list")
@click.pass_obj
def rule_list(ctx: Context) -> None:
    """Every rule in sequence order."""
    with session_for(ctx) as session:
        rows = session.scalars(select(Rule).order_by(Rule.sequence, Rule.name))
        table(
            [
                (
                    r.sequence,
                    r.name,
                    "yes" if r.active else "no",
                    f"{r.trigger} {r.delay or ''}".strip() if r.trigger else "event",
                    iso(r.swept_at) or "",
                )
                for r in rows
            ],
            ("seq", "name", "enabled", "when", "last sweep"),
        )


@rule.command("show")
@click.argument("name")
@click.pass_obj
def rule_show(ctx: Context, name: str) -> None:
    """A rule's criteria and actions, as in the TOML file."""
    with session_for(ctx) as session:
        found = _rule(session, name)
        click.echo(f"name: {found.name}")
        click.echo(f"sequence: {found.sequence}  stop: {str(found.stop).lower()}")
        click.echo(f"enabled: {'yes' if found.active else 'no'}")
        click.echo(f"last sweep: {iso(found.swept_at) or 'never'}")
        click.echo(f"when: {json.dumps(found.when, ensure_ascii=False)}")
        click.echo(f"then: {json.dumps(found.then, ensure_ascii=False)}")


@rule.command("enable")
@click.argument("name")
@click.pass_obj
def rule_enable(ctx: Context, name: str) -> None:
    """Turn a rule on."""
    _set_active(ctx, name, True)


@rule.command("disable")
@click.argument("name")
@click.pass_obj
def rule_disable(ctx: Context, name: str) -> None:
    """Turn a rule off (kept in the database; `rule load` keeps this unless the file says)."""
    _set_active(ctx, name, False)


@rule.command("test")
@click.argument("name")
@click.option("--now", "at", metavar="TIME", help="As if at this time (ISO 8601).")
@click.pass_obj
def rule_test(ctx: Context, name: str, at: str | None) -> None:
    """The cases the rule would fire on now (or at TIME); changes nothing."""
    now = parse_time(at, "--now") or utcnow()
    with ctx.db.sessions() as session:
        found = ctx.app.rules.would_fire(session, name, now)
        subjects = _subjects(session, [c for c, _ in found])
        timer = _rule(session, name).trigger is not None
        session.rollback()
    if timer:
        click.echo(f"rule '{name}' would fire on {len(found)} case(s) at {iso(now)}")
    else:
        click.echo(
            f"event rule '{name}': {len(found)} case(s) meet its criteria now"
            " (it fires on their next matching event, not in a sweep)"
        )
    for case_id, due in found:
        when = f"  due {iso(due)}" if due else ""
        click.echo(f"  case {case_id}{when}  {subjects.get(case_id, '')}")


@rule.command("sweep")
@click.option("--now", "at", metavar="TIME", help="Sweep as if at this time (ISO 8601).")
@click.pass_obj
def rule_sweep(ctx: Context, at: str | None) -> None:
    """Run one timer sweep now (or as if at TIME) and print what fired."""
    real = utcnow()
    now = parse_time(at, "--now") or real
    with session_for(ctx) as session:
        firings = ctx.app.rules.sweep(session, now, mark=real)
    for firing in firings:
        due = f" (due {iso(firing.due_at)})" if firing.due_at else " (event)"
        detail = "; ".join(firing.done)
        click.echo(
            f"case {firing.case_id}: rule '{firing.rule}'{due}" + (f": {detail}" if detail else "")
        )
    click.echo(f"{len(firings)} firing(s) in the sweep at {iso(now)}")


def _subjects(session: Session, case_ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in chunks(case_ids):
        rows = session.execute(select(Case.id, Case.subject).where(Case.id.in_(chunk)))
        found.update({case_id: subject for case_id, subject in rows})
    return found


def _rule(session: Session, name: str) -> Rule:
    found = session.scalar(select(Rule).where(Rule.name == name))
    if found is None:
        raise NotFound(f"no rule named '{name}' (see `mailgated rule list`)")
    return found


def _set_active(ctx: Context, name: str, active: bool) -> None:
    with session_for(ctx) as session:
        loader.set_active(_rule(session, name), active)
    click.echo(f"rule '{name}' {'enabled' if active else 'disabled'}")
