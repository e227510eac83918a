"""`mailgated case …`: create, list, show and move cases through their lifecycle."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.cases import PLAN_FIELDS, CaseService
from mailgated.commands.common import (
    ADDRESS,
    ADDRESS_OR_EMPTY,
    case_service,
    emit_json,
    iso,
    json_or_table,
    parse_duration,
    parse_time,
    session_for,
)
from mailgated.context import Context
from mailgated.directory import Directory
from mailgated.errors import Invalid
from mailgated.models import PRIORITIES, PRIORITY_NAMES, Case, Partner, State, User
from mailgated.reporting.filters import Filters, day_range


def case_dict(case: Case, history: bool = True) -> dict[str, Any]:
    """A case with the JSON keys of the DESIGN contract."""
    data: dict[str, Any] = {
        "id": case.id,
        "subject": case.subject,
        "description": case.description,
        "state": case.state,
        "section": case.section.name,
        "category": case.category.name if case.category else None,
        "priority": PRIORITY_NAMES[case.priority],
        "partner": case.partner.name if case.partner else None,
        "contact": case.contact.name if case.contact else None,
        "email_from": case.email_from,
        "watchers": [w.email for w in case.watchers],
        "user": case.user.login if case.user else None,
        "created_at": iso(case.created_at),
        "updated_at": iso(case.updated_at),
        "closed_at": iso(case.closed_at),
        "deadline": iso(case.deadline),
        "date": iso(case.date),
        "duration": case.duration,
        "planned_revenue": case.planned_revenue,
        "planned_cost": case.planned_cost,
        "probability": case.probability,
        "last_action_at": iso(case.last_action_at),
        "next_action_at": iso(case.next_action_at),
    }
    if history:
        data["history"] = [
            {
                "at": iso(h.at),
                "kind": h.kind,
                "author": h.author,
                "body": h.body,
                **(
                    {
                        "email_from": h.email_from,
                        "email_to": h.email_to,
                        "subject": h.subject,
                        "message_id": h.message_id,
                    }
                    if h.message_id or h.email_from
                    else {}
                ),
            }
            for h in case.history
        ]
    return data


def field_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The editable fields, shared by `case new` and `case set`."""
    options = [
        click.option("--description"),
        click.option("--category", help="Category of the case's section."),
        click.option(
            "--priority",
            type=click.Choice(list(PRIORITIES)),
            help="highest, high, normal, low or lowest.",
        ),
        click.option("--partner"),
        click.option("--contact", help="Contact of the partner (fills the e-mail)."),
        click.option("--email", type=ADDRESS_OR_EMPTY, help="Partner e-mail address."),
        click.option("--user", "user_login", metavar="LOGIN", help="Responsible user."),
        click.option("--deadline", metavar="TIME", help="ISO 8601."),
        click.option("--date", metavar="TIME", help="Start time, ISO 8601 (calendar)."),
        click.option("--duration", help="Hours: 1.5 or 1h30m."),
        click.option("--revenue", type=float, help="Planned revenue."),
        click.option("--cost", type=float, help="Planned cost."),
        click.option("--probability", type=click.FloatRange(0, 100), help="Percent."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_fields(
    session: Session, section_name: str, values: dict[str, Any], partner: Partner | None = None
) -> dict[str, Any]:
    """Turn option strings into model objects and typed values (only those given).

    A --contact is looked up under --partner, else under `partner` (the case's own).
    """
    directory = Directory(session)
    out: dict[str, Any] = {}
    if values.get("partner"):
        out["partner"] = directory.partner(values["partner"])
    if values.get("contact"):
        partner = out.get("partner", partner)
        if partner is None:
            raise click.BadParameter("needs --partner", param_hint="--contact")
        out["contact"] = directory.contact(partner, values["contact"])
    if values.get("category"):
        out["category"] = directory.category(directory.section(section_name), values["category"])
    for key in ("email", "priority", "revenue", "cost", "probability", "description"):
        if values.get(key) is not None:
            out[key] = values[key]
    for key in ("deadline", "date"):
        if values.get(key) is not None:
            out[key] = parse_time(values[key], f"--{key}")
    if values.get("duration") is not None:
        out["duration"] = parse_duration(values["duration"])
    return out


@click.group()
def case() -> None:
    """Cases: create, list, show, change state, assign, note, reply."""


@case.command("new")
@click.option("--section", "section_name", required=True)
@click.option("--subject", required=True)
@field_options
@click.option(
    "--watch", "watch", multiple=True, type=ADDRESS, metavar="ADDR", help="Watcher (repeatable)."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def case_new(
    ctx: Context,
    /,
    section_name: str,
    subject: str,
    user_login: str | None,
    watch: tuple[str, ...],
    as_json: bool,
    **values: Any,
) -> None:
    """Create a case (state draft)."""
    with session_for(ctx) as session:
        directory = Directory(session)
        section = directory.section(section_name)
        fields = resolve_fields(session, section_name, values)
        description = fields.pop("description", "")
        created = case_service(ctx, session).create(
            section,
            subject,
            description,
            user=directory.user(user_login) if user_login else None,
            watchers=watch,
            **fields,
        )
        if as_json:
            emit_json(case_dict(created))
        else:
            click.echo(f"created case {created.id}: [{created.id}] {created.subject}")


@case.command("set")
@click.argument("case_id", type=int)
@field_options
@click.option(
    "--watch", "watch", multiple=True, type=ADDRESS, metavar="ADDR", help="Add a watcher."
)
@click.option(
    "--unwatch", "unwatch", multiple=True, type=ADDRESS, metavar="ADDR", help="Remove a watcher."
)
@click.pass_obj
def case_set(
    ctx: Context,
    /,
    case_id: int,
    user_login: str | None,
    watch: tuple[str, ...],
    unwatch: tuple[str, ...],
    **values: Any,
) -> None:
    """Change fields of a case (each change is historized)."""
    with session_for(ctx) as session:
        service = case_service(ctx, session)
        target = service.get(case_id)
        fields = resolve_fields(session, target.section.name, values, target.partner)
        if user_login is not None:
            service.assign(target, Directory(session).user(user_login))
        service.set_fields(target, **fields)
        for address in watch:
            service.watch(target, address)
        for address in unwatch:
            service.unwatch(target, address)
        click.echo(f"updated case {case_id}")


@case.command("list")
@click.option("--section", "section_name", help="Section, with its sub-sections.")
@click.option("--no-subsections", is_flag=True, help="Only the --section itself.")
@click.option("--category", metavar="C", help="Category of --section.")
@click.option("--no-category", is_flag=True, help="Only cases without a category.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in State]),
    help="Repeatable.",
)
@click.option("--user", "user_login", metavar="LOGIN", help="Responsible user (my cases).")
@click.option("--unassigned", is_flag=True, help="Only cases nobody is responsible for.")
@click.option("--created-from", metavar="DATE", help="Created on or after this day (UTC).")
@click.option("--created-to", metavar="DATE", help="Created on or before this day (UTC).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def case_list(
    ctx: Context,
    section_name: str | None,
    no_subsections: bool,
    category: str | None,
    no_category: bool,
    states: tuple[str, ...],
    user_login: str | None,
    unassigned: bool,
    created_from: str | None,
    created_to: str | None,
    as_json: bool,
) -> None:
    """List cases; the filters are those of `report users`, to drill into its rows."""
    if user_login and unassigned:
        raise click.UsageError("--user and --unassigned exclude each other")
    if category and no_category:
        raise click.UsageError("--category and --no-category exclude each other")
    if (no_subsections or category) and not section_name:
        raise click.UsageError("--no-subsections and --category need --section")
    start, end = day_range(created_from, created_to, ("--created-from", "--created-to"))
    with session_for(ctx) as session:
        directory = Directory(session)
        section = directory.section(section_name) if section_name else None
        filters = Filters(
            created_from=start,
            created_to=end,
            section_ids=None
            if section is None
            else [section.id]
            if no_subsections
            else directory.subtree_ids(section),
            category_id=directory.category(section, category).id if section and category else None,
            uncategorized=no_category,
            user_id=directory.user(user_login).id if user_login else None,
            unassigned=unassigned,
            states=states,
        )
        query = select(Case).where(filters.where()).order_by(Case.id)
        found = list(session.scalars(query))
        json_or_table(
            as_json,
            (case_dict(c, history=False) for c in found),
            (
                (
                    c.id,
                    c.state,
                    PRIORITY_NAMES[c.priority],
                    c.section.name,
                    c.user.login if c.user else "",
                    c.partner.name if c.partner else "",
                    c.subject[:60],
                )
                for c in found
            ),
            ("id", "state", "priority", "section", "user", "partner", "subject"),
        )


@case.command("mail")
@click.argument("case_id", type=int)
@click.option("--message-id", metavar="ID", help="Only this message (its Message-ID).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE, not stdout.")
@click.pass_obj
def case_mail(ctx: Context, case_id: int, message_id: str | None, output: str | None) -> None:
    """Write the case's mail as received (raw, untrimmed), as an mbox."""
    from mailgated.messages import stored, write_mbox

    with session_for(ctx) as session:
        messages = stored(session, case_id, message_id)
    if output is None:
        write_mbox(messages, sys.stdout.buffer)
        return
    with open(output, "wb") as out:
        write_mbox(messages, out)
    click.echo(f"wrote {len(messages)} message(s) of case {case_id} to {output}")


@case.command("show")
@click.argument("case_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def case_show(ctx: Context, case_id: int, as_json: bool) -> None:
    """Show a case and its history."""
    with session_for(ctx) as session:
        data = case_dict(CaseService(session, actor=None).get(case_id))  # type: ignore[arg-type]
        if as_json:
            emit_json(data)
            return
        click.echo(f"[{data['id']}] {data['subject']}")
        for key in (
            "state",
            "section",
            "category",
            "priority",
            "user",
            "partner",
            "contact",
            "email_from",
            "created_at",
            "closed_at",
            *PLAN_FIELDS,
        ):
            if data[key] is not None:
                click.echo(f"  {key + ':':17}{data[key]}")
        if data["watchers"]:
            click.echo(f"  {'watchers:':17}{', '.join(data['watchers'])}")
        if data["description"]:
            click.echo(f"\n{data['description']}")
        click.echo("\nhistory:")
        for h in data["history"]:
            click.echo(f"  {h['at']}  {h['kind']:<10} {h['author']}")
            for line in (h["body"] or "").splitlines():
                click.echo(f"      {line}")


def _button(name: str) -> click.Command:
    @click.command(name, help=f"{name.capitalize()} a case.")
    @click.argument("case_id", type=int)
    @click.pass_obj
    def command(ctx: Context, case_id: int) -> None:
        with session_for(ctx) as session:
            service = case_service(ctx, session)
            target = service.get(case_id)
            getattr(service, name)(target)
            click.echo(
                f"case {case_id}: {target.state}"
                + (f" in {target.section.name}" if name == "escalate" else "")
            )

    return command


for _name in ("open", "pending", "close", "cancel", "reset", "escalate"):
    case.add_command(_button(_name))


@case.command("assign")
@click.argument("case_id", type=int)
@click.argument("login")
@click.pass_obj
def case_assign(ctx: Context, case_id: int, login: str) -> None:
    """Make LOGIN responsible for a case."""
    with session_for(ctx) as session:
        service = case_service(ctx, session)
        service.assign(service.get(case_id), Directory(session).user(login))
        click.echo(f"case {case_id}: responsible {login}")


@case.command("note")
@click.argument("case_id", type=int)
@click.argument("text")
@click.pass_obj
def case_note(ctx: Context, case_id: int, text: str) -> None:
    """Historize: add an internal note to a case (TEXT "-" reads it from stdin)."""
    text = text_argument(text)
    with session_for(ctx) as session:
        service = case_service(ctx, session)
        service.note(service.get(case_id), text)
        click.echo(f"case {case_id}: note added")


@case.command("reply")
@click.argument("case_id", type=int)
@click.argument("text")
@click.pass_obj
def case_reply(ctx: Context, case_id: int, text: str) -> None:
    """Send partner and historize: mail TEXT ("-": stdin) to the partner from the section's
    address, as staff user --as / $MAILGATED_USER; closes the case like a reply by mail."""
    from mailgated.outbound.case_mail import reply

    text = text_argument(text)
    composer = ctx.app.composer
    with session_for(ctx) as session:
        service = case_service(ctx, session)
        staff = staff_user(session, service)
        target = service.get(case_id)
        to = reply(session, ctx.config, composer, service, target, text, staff.name)
        closed = ", closed" if service.close_after_staff_reply(target) else ""
        click.echo(f"case {case_id}: reply queued for {to}{closed}")


def text_argument(text: str) -> str:
    """The TEXT argument, or standard input when it is "-" (without its final newlines)."""
    return sys.stdin.read().rstrip("\r\n") if text == "-" else text


def staff_user(session: Session, service: CaseService) -> User:
    """The staff user the command acts as; mail to a partner is never signed by an OS user."""
    user = session.get(User, service.actor.user_id) if service.actor.user_id else None
    if user is None:
        raise Invalid(
            "mail to a partner needs a staff user: give --as LOGIN or set $MAILGATED_USER"
        )
    if not user.active:
        raise Invalid(f"user '{user.login}' is disabled (`mailgated user enable {user.login}`)")
    return user
