"""The edit verbs of the directory: `user set`, `partner set`, `partner contact set|remove`,
`section set --name|disable|enable`, `category set|remove` — and their refusals."""

from __future__ import annotations

from conftest import MG

from mailgated.db import Database
from mailgated.directory import Directory


def seed(mg: MG) -> int:
    """A section with a category, a partner with two contacts, and one case using them."""
    mg("user", "add", "demo", "--name", "Demo User", "--email", "demo@mycompany.example")
    mg("section", "add", "Support", "--email", "support@mycompany.example")
    mg("category", "add", "Fault Fix", "--section", "Support", "--probability", "20")
    mg("category", "add", "Unused", "--section", "Support")
    mg("partner", "add", "Agrolait")
    mg("partner", "contact", "add", "Agrolait", "Sylvie Lelitre", "--email", "s.l@agrolait.example")
    mg("partner", "contact", "add", "Agrolait", "Old Contact", "--email", "old@agrolait.example")
    new = mg(
        "case", "new", "--section", "Support", "--subject", "Broken", "--category", "Fault Fix",
        "--partner", "Agrolait", "--contact", "Sylvie Lelitre",
    )  # fmt: skip
    return int(new.out.split()[2].rstrip(":"))


def test_user_set_changes_name_and_address(mg: MG) -> None:
    """`user set` changes what `user list` shows; an address another user has is refused."""
    seed(mg)
    mg("user", "add", "boss", "--name", "Big Boss", "--email", "boss@mycompany.example")
    mg("user", "set", "demo", "--name", "Dee Mo", "--email", "Dee@MyCompany.example")
    users = {u["login"]: u for u in mg("user", "list", "--json").json()}
    assert (users["demo"]["name"], users["demo"]["email"]) == ("Dee Mo", "dee@mycompany.example")
    taken = mg("user", "set", "demo", "--email", "boss@mycompany.example", ok=False)
    assert (taken.code, taken.err.strip()) == (
        1,
        "mailgated: error: user 'boss' already has the e-mail 'boss@mycompany.example'",
    )


def test_partner_and_contact_edits(mg: MG) -> None:
    """Rename a partner, give it an address, rename a contact; a contact on a case stays."""
    case_id = seed(mg)
    mg("partner", "set", "Agrolait", "--name", "Agrolait SA", "--email", "info@agrolait.example")
    mg(
        "partner",
        "contact",
        "set",
        "Agrolait SA",
        "Sylvie Lelitre",
        "--email",
        "sl@agrolait.example",
    )
    [partner] = mg("partner", "list", "--json").json()
    assert partner["name"] == "Agrolait SA"
    assert {"name": "Sylvie Lelitre", "email": "sl@agrolait.example"} in partner["contacts"]
    assert mg("case", "show", str(case_id), "--json").json()["partner"] == "Agrolait SA"

    used = mg("partner", "contact", "remove", "Agrolait SA", "Sylvie Lelitre", ok=False)
    assert used.code == 1
    assert used.err.strip().startswith(
        "mailgated: error: contact 'Sylvie Lelitre' of partner 'Agrolait SA' is on 1 case(s)"
    )
    mg("partner", "contact", "remove", "Agrolait SA", "Old Contact")
    [partner] = mg("partner", "list", "--json").json()
    assert [c["name"] for c in partner["contacts"]] == ["Sylvie Lelitre"]


def test_category_set_and_remove(mg: MG) -> None:
    """Rename a category and change its probability; one cases use is not removed."""
    case_id = seed(mg)
    mg(
        "category",
        "set",
        "Fault Fix",
        "--section",
        "Support",
        "--name",
        "Fault",
        "--probability",
        "35",
    )
    cats = mg("category", "list", "--section", "Support", "--json").json()
    assert {"name": "Fault", "section": "Support", "probability": 35.0} in cats
    assert mg("case", "show", str(case_id), "--json").json()["category"] == "Fault"

    used = mg("category", "remove", "Fault", "--section", "Support", ok=False)
    assert (used.code, used.err.count("\n")) == (1, 1)
    assert "category 'Fault' is used by 1 case(s) in section 'Support'" in used.err
    mg("category", "remove", "Unused", "--section", "Support")
    names = [c["name"] for c in mg("category", "list", "--json").json()]
    assert names == ["Fault"]


def test_section_rename_disable_enable(mg: MG, db_url: str) -> None:
    """Rename a section; a disabled one's address takes no mail (the listener's list), and
    enabling it brings the address back."""
    seed(mg)
    mg("section", "set", "Support", "--name", "Helpdesk")
    assert [s["name"] for s in mg("section", "list", "--json").json()] == ["Helpdesk"]
    out = mg("section", "disable", "Helpdesk").out
    assert "mail to support@mycompany.example is refused from now on" in out
    assert "1 case(s) still open in it" in out
    db = Database(db_url)
    try:
        with db.session() as session:
            assert Directory(session).section_addresses() == {}
        mg("section", "enable", "Helpdesk")
        with db.session() as session:
            assert Directory(session).section_addresses() == {
                "support@mycompany.example": "Helpdesk"
            }
    finally:
        db.dispose()
