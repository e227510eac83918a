"""Commands for the directory: sections, categories, users, partners."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import func, select

from mailgated.commands.common import (
    ADDRESS,
    ADDRESS_OR_EMPTY,
    directory_for,
    emit_json,
    json_or_table,
    session_for,
    table,
)
from mailgated.context import Context
from mailgated.directory import Directory
from mailgated.directory_edit import DirectoryEdit
from mailgated.models import Case, Section, State

POLICIES = (
    "close_on_staff_reply",
    "reopen_on_partner_reply",
    "send_acknowledgement",
    "cc_become_watchers",
    "accept_automatic",
)


def section_dict(section: Section) -> dict[str, object]:
    return {
        "name": section.name,
        "code": section.code,
        "parent": section.parent.name if section.parent else None,
        "manager": section.manager.login if section.manager else None,
        "email": section.email,
        **{p: getattr(section, p) for p in POLICIES},
    }


@click.group()
def section() -> None:
    """Sections: the queues cases live in (a tree)."""


@section.command("add")
@click.argument("name")
@click.option("--parent", help="Parent section (created if it does not exist yet).")
@click.option("--manager", metavar="LOGIN", help="Manager user.")
@click.option("--email", type=ADDRESS, metavar="ADDR", help="The section's e-mail address.")
@click.option("--code", help="Short code.")
@click.pass_obj
def section_add(
    ctx: Context,
    name: str,
    parent: str | None,
    manager: str | None,
    email: str | None,
    code: str | None,
) -> None:
    """Create a section."""
    with session_for(ctx) as session:
        created, parents = Directory(session).add_section(name, parent, manager, email, code)
        for missing in parents:
            click.echo(f"created missing parent section '{missing}'")
        click.echo(f"created section '{created.name}'")


@section.command("set")
@click.argument("name")
@click.option("--name", "new_name", help="Rename the section.")
@click.option("--parent", help="New parent section ('' for none).")
@click.option("--manager", metavar="LOGIN", help="New manager ('' for none).")
@click.option("--email", type=ADDRESS_OR_EMPTY, metavar="ADDR", help="New address ('' for none).")
@click.option("--code", help="New code ('' for none).")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="NAME=on|off",
    help=f"Mail policy: {', '.join(POLICIES)}.",
)
@click.pass_obj
def section_set(
    ctx: Context,
    name: str,
    new_name: str | None,
    parent: str | None,
    manager: str | None,
    email: str | None,
    code: str | None,
    policies: tuple[str, ...],
) -> None:
    """Change a section (name, parent, manager, address, code, mail policies)."""
    parsed: dict[str, bool] = {}
    for item in policies:
        key, _, value = item.partition("=")
        if key not in POLICIES or value not in ("on", "off", "true", "false"):
            raise click.BadParameter(
                f"{item!r}: use NAME=on|off with NAME one of {', '.join(POLICIES)}",
                param_hint="--policy",
            )
        parsed[key] = value in ("on", "true")
    with directory_for(ctx) as directory:
        found = directory.section(name)
        if new_name is not None:
            DirectoryEdit(directory).rename_section(found, new_name)
        directory.update_section(
            found,
            parent=parent,
            manager=manager,
            email=email,
            code=code,
            policies=parsed,
        )
        click.echo(f"updated section '{found.name}'")


def _section_active(active: bool) -> click.Command:
    verb = "enable" if active else "disable"

    @click.command(verb)
    @click.argument("name")
    @click.pass_obj
    def command(ctx: Context, name: str) -> None:
        with session_for(ctx) as session:
            directory = Directory(session)
            found = directory.section(name)
            still_open = DirectoryEdit(directory).set_section_active(found, active)
            click.echo(f"section '{found.name}' {verb}d")
            if not active and found.email:
                click.echo(f"mail to {found.email} is refused from now on")
            if not active and still_open:
                click.echo(
                    f"{still_open} case(s) still open in it: `mailgated case list --section"
                    f' "{found.name}"`'
                )

    command.help = (
        "Take mail at the section's address again."
        if active
        else "Stop taking mail at the section's address (its cases stay)."
    )
    return command


section.add_command(_section_active(False))
section.add_command(_section_active(True))


@section.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def section_list(ctx: Context, as_json: bool) -> None:
    """List sections."""
    with session_for(ctx) as session:
        sections = Directory(session).sections()
        json_or_table(
            as_json,
            (section_dict(s) for s in sections),
            (
                (
                    s.name,
                    s.code,
                    s.parent.name if s.parent else "",
                    s.manager.login if s.manager else "",
                    s.email,
                )
                for s in sections
            ),
            ("name", "code", "parent", "manager", "email"),
        )


@section.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def section_show(ctx: Context, name: str, as_json: bool) -> None:
    """Show one section and its policies."""
    with session_for(ctx) as session:
        data = section_dict(Directory(session).section(name))
        if as_json:
            emit_json(data)
            return
        for key, value in data.items():
            click.echo(f"{key + ':':24} {'' if value is None else value}")


@section.command("tree")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def section_tree(ctx: Context, as_json: bool) -> None:
    """The section tree with open/pending/closed counts (the seed's "Cases by Section")."""
    with session_for(ctx) as session:
        counts: dict[tuple[int, str], int] = {
            (sid, state): n
            for sid, state, n in session.execute(
                select(Case.section_id, Case.state, func.count()).group_by(
                    Case.section_id, Case.state
                )
            )
        }
        sections = Directory(session).sections()
        children: dict[int | None, list[Section]] = {}
        for s in sections:
            children.setdefault(s.parent_id, []).append(s)
        states = [s.value for s in State]

        def node(s: Section) -> dict[str, object]:
            return {
                "name": s.name,
                **{st: counts.get((s.id, st), 0) for st in states},
                "children": [node(c) for c in children.get(s.id, [])],
            }

        roots = [node(s) for s in children.get(None, [])]
        if as_json:
            emit_json(roots)
            return
        rows: list[tuple[object, ...]] = []

        def walk(n: dict[str, object], depth: int) -> None:
            rows.append(
                (
                    "  " * depth + str(n["name"]),
                    n["draft"],
                    n["open"],
                    n["pending"],
                    n["closed"],
                    n["cancelled"],
                )
            )
            for child in n["children"]:  # type: ignore[attr-defined]
                walk(child, depth + 1)

        for root in roots:
            walk(root, 0)
        table(rows, ("section", "draft", "open", "pending", "closed", "cancelled"))


@click.group()
def category() -> None:
    """Categories of cases, per section."""


@category.command("add")
@click.argument("name")
@click.option("--section", "section_name", required=True, help="The section it belongs to.")
@click.option(
    "--probability",
    type=click.FloatRange(0, 100),
    help="Default probability (%) copied into new cases.",
)
@click.pass_obj
def category_add(ctx: Context, name: str, section_name: str, probability: float | None) -> None:
    """Create a category in a section."""
    with directory_for(ctx) as directory:
        directory.add_category(name, directory.section(section_name), probability)
        click.echo(f"created category '{name}' in section '{section_name}'")


@category.command("set")
@click.argument("name")
@click.option("--section", "section_name", required=True, help="The section it belongs to.")
@click.option("--name", "new_name", help="Rename the category.")
@click.option("--probability", type=click.FloatRange(0, 100), help="New default probability.")
@click.pass_obj
def category_set(
    ctx: Context, name: str, section_name: str, new_name: str | None, probability: float | None
) -> None:
    """Change a category (name, default probability)."""
    with directory_for(ctx) as directory:
        found = directory.category(directory.section(section_name), name)
        DirectoryEdit(directory).set_category(found, name=new_name, probability=probability)
        click.echo(f"updated category '{found.name}' in section '{found.section.name}'")


@category.command("remove")
@click.argument("name")
@click.option("--section", "section_name", required=True, help="The section it belongs to.")
@click.pass_obj
def category_remove(ctx: Context, name: str, section_name: str) -> None:
    """Remove a category that no case uses."""
    with directory_for(ctx) as directory:
        found = directory.category(directory.section(section_name), name)
        DirectoryEdit(directory).remove_category(found)
        click.echo(f"removed category '{name}' from section '{section_name}'")


@category.command("list")
@click.option("--section", "section_name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def category_list(ctx: Context, section_name: str | None, as_json: bool) -> None:
    """List categories."""
    with directory_for(ctx) as directory:
        cats = directory.categories(directory.section(section_name) if section_name else None)
        data = [
            {"name": c.name, "section": c.section.name, "probability": c.probability} for c in cats
        ]
        json_or_table(
            as_json,
            data,
            ((d["section"], d["name"], d["probability"]) for d in data),
            ("section", "category", "probability"),
        )


@click.group()
def user() -> None:
    """Staff users."""


@user.command("add")
@click.argument("login")
@click.option("--name", required=True)
@click.option("--email", type=ADDRESS, required=True)
@click.pass_obj
def user_add(ctx: Context, login: str, name: str, email: str) -> None:
    """Create a staff user."""
    with session_for(ctx) as session:
        Directory(session).add_user(login, name, email)
        click.echo(f"created user '{login}'")


@user.command("set")
@click.argument("login")
@click.option("--name", help="New full name.")
@click.option("--email", type=ADDRESS, help="New e-mail address.")
@click.pass_obj
def user_set(ctx: Context, login: str, name: str | None, email: str | None) -> None:
    """Change a user's name or e-mail address."""
    with directory_for(ctx) as directory:
        DirectoryEdit(directory).set_user(directory.user(login), name=name, email=email)
        click.echo(f"updated user '{login}'")


@user.command("disable")
@click.argument("login")
@click.pass_obj
def user_disable(ctx: Context, login: str) -> None:
    """Someone left: no more staff rights or mail; lists their open cases to reassign."""
    with directory_for(ctx) as directory:
        edit = DirectoryEdit(directory)
        found = directory.user(login)
        cases = edit.disable_user(found)
        click.echo(f"user '{login}' disabled: their replies no longer count, they get no mail")
        for managed in edit.managed_sections(found):
            click.echo(
                f"manager of section '{managed.name}': `mailgated section set"
                f' "{managed.name}" --manager LOGIN`'
            )
        if cases:
            click.echo(f"{len(cases)} open case(s) to reassign (`mailgated case assign ID LOGIN`):")
        for item in cases:
            click.echo(f"  {item.id}  {item.state:8} {item.section.name}: {item.subject[:60]}")


@user.command("enable")
@click.argument("login")
@click.pass_obj
def user_enable(ctx: Context, login: str) -> None:
    """A disabled user is staff again."""
    with directory_for(ctx) as directory:
        DirectoryEdit(directory).enable_user(directory.user(login))
        click.echo(f"user '{login}' enabled")


@user.command("rotate-token")
@click.argument("login")
@click.pass_obj
def user_rotate_token(ctx: Context, login: str) -> None:
    """Invalidate this user's reply addresses (e.g. one leaked); other users' stay valid."""
    with directory_for(ctx) as directory:
        generation = DirectoryEdit(directory).rotate_token(directory.user(login))
        click.echo(
            f"user '{login}': earlier reply addresses no longer verify (generation {generation});"
            " mail from now on carries new ones"
        )


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def user_list(ctx: Context, as_json: bool) -> None:
    """List staff users."""
    with session_for(ctx) as session:
        data = [
            {"login": u.login, "name": u.name, "email": u.email, "active": u.active}
            for u in Directory(session).users()
        ]
        json_or_table(
            as_json,
            data,
            ((d["login"], d["name"], d["email"], "" if d["active"] else "disabled") for d in data),
            ("login", "name", "email", "state"),
        )


@click.group()
def partner() -> None:
    """Partners (customers, suppliers), their contacts and categories."""


@partner.command("add")
@click.argument("name")
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="PATH",
    help='Partner category, e.g. "Support Contract / Gold" (repeatable).',
)
@click.pass_obj
def partner_add(ctx: Context, name: str, categories: tuple[str, ...]) -> None:
    """Create a partner."""
    with session_for(ctx) as session:
        Directory(session).add_partner(name, categories)
        click.echo(f"created partner '{name}'")


@partner.command("set")
@click.argument("name")
@click.option("--name", "new_name", help="Rename the partner.")
@click.option("--email", type=ADDRESS_OR_EMPTY, help="The partner's own address ('' for none).")
@click.pass_obj
def partner_set(ctx: Context, name: str, new_name: str | None, email: str | None) -> None:
    """Change a partner's name or address."""
    with directory_for(ctx) as directory:
        found = directory.partner(name)
        DirectoryEdit(directory).set_partner(found, name=new_name, email=email)
        click.echo(f"updated partner '{found.name}'")


@partner.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def partner_list(ctx: Context, as_json: bool) -> None:
    """List partners with their contacts and categories."""
    with session_for(ctx) as session:
        data: list[dict[str, Any]] = [
            {
                "name": p.name,
                "categories": [c.path for c in p.categories],
                "contacts": [{"name": c.name, "email": c.email} for c in p.contacts],
            }
            for p in Directory(session).partners()
        ]
        json_or_table(
            as_json,
            data,
            (
                (
                    d["name"],
                    ", ".join(d["categories"]),
                    ", ".join(f"{c['name']} <{c['email']}>" for c in d["contacts"]),
                )
                for d in data
            ),
            ("partner", "categories", "contacts"),
        )


@partner.group("contact")
def partner_contact() -> None:
    """A partner's contacts."""


@partner_contact.command("add")
@click.argument("partner_name", metavar="PARTNER")
@click.argument("name")
@click.option("--email", type=ADDRESS, required=True)
@click.pass_obj
def contact_add(ctx: Context, partner_name: str, name: str, email: str) -> None:
    """Add a contact to a partner."""
    with directory_for(ctx) as directory:
        directory.add_contact(directory.partner(partner_name), name, email)
        click.echo(f"added contact '{name}' to partner '{partner_name}'")


@partner_contact.command("set")
@click.argument("partner_name", metavar="PARTNER")
@click.argument("name")
@click.option("--name", "new_name", help="Rename the contact.")
@click.option("--email", type=ADDRESS_OR_EMPTY, help="New address ('' for none).")
@click.pass_obj
def contact_set(
    ctx: Context, partner_name: str, name: str, new_name: str | None, email: str | None
) -> None:
    """Change a contact's name or address."""
    with directory_for(ctx) as directory:
        found = directory.contact(directory.partner(partner_name), name)
        DirectoryEdit(directory).set_contact(found, name=new_name, email=email)
        click.echo(f"updated contact '{found.name}' of partner '{partner_name}'")


@partner_contact.command("remove")
@click.argument("partner_name", metavar="PARTNER")
@click.argument("name")
@click.pass_obj
def contact_remove(ctx: Context, partner_name: str, name: str) -> None:
    """Remove a contact that no case names."""
    with directory_for(ctx) as directory:
        found = directory.contact(directory.partner(partner_name), name)
        DirectoryEdit(directory).remove_contact(found)
        click.echo(f"removed contact '{name}' from partner '{partner_name}'")


@partner.group("category")
def partner_category() -> None:
    """The partner category tree."""


@partner_category.command("add")
@click.argument("path")
@click.pass_obj
def partner_category_add(ctx: Context, path: str) -> None:
    """Create a category such as "Support Contract / Gold" (missing parents too)."""
    with session_for(ctx) as session:
        node, created = Directory(session).add_partner_category(path)
        if not created:
            click.echo(f"partner category '{node.path}' already exists")
        for full in created:
            click.echo(f"created partner category '{full}'")


@partner_category.command("list")
@click.pass_obj
def partner_category_list(ctx: Context) -> None:
    """List partner categories."""
    with session_for(ctx) as session:
        for c in Directory(session).partner_categories():
            click.echo(c.path)


@partner.command("categorize")
@click.argument("partner_name", metavar="PARTNER")
@click.argument("path")
@click.pass_obj
def partner_categorize(ctx: Context, partner_name: str, path: str) -> None:
    """Put a partner in a category."""
    with directory_for(ctx) as directory:
        directory.categorize_partner(directory.partner(partner_name), path)
        click.echo(f"partner '{partner_name}' is in '{path}'")
