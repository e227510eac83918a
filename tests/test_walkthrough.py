"""The seed's own walkthrough, from the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

from conftest import MG


def build_directory(mg: MG) -> None:
    mg("section", "add", "Sales", "--email", "sales@example.com")
    out = mg("section", "add", "Support Level 1", "--parent", "Support Level 2").out
    assert "created missing parent section 'Support Level 2'" in out
    mg("section", "add", "Quality")
    for name in ("Installation Requests", "Potential Distributor", "Interest in Training"):
        mg("category", "add", name, "--section", "Sales")
    mg("category", "add", "Fault Fix", "--section", "Support Level 1")
    mg("category", "add", "Functional Problem", "--section", "Support Level 1")
    mg("category", "add", "Corrective Actions", "--section", "Quality")
    mg("category", "add", "Preventative Actions", "--section", "Quality")
    mg("user", "add", "demo", "--name", "Demo User", "--email", "demo@mycompany.com")
    mg("user", "add", "boss", "--name", "Support Boss", "--email", "boss@mycompany.com")
    mg("section", "set", "Support Level 2", "--manager", "boss")
    mg("partner", "category", "add", "Support Contract / Gold")
    mg("partner", "add", "Agrolait", "--category", "Support Contract / Gold")
    mg("partner", "contact", "add", "Agrolait", "Sylvie Lelitre", "--email", "s.l@agrolait.com")


def test_seed_walkthrough(mg: MG) -> None:
    """The seed's walkthrough from the README works command by command."""
    build_directory(mg)
    sections = {s["name"]: s for s in mg("section", "list", "--json").json()}
    assert sections["Support Level 1"]["parent"] == "Support Level 2"
    assert sections["Support Level 2"]["manager"] == "boss"
    cats = mg("category", "list", "--section", "Sales", "--json").json()
    assert [c["name"] for c in cats] == [
        "Installation Requests",
        "Interest in Training",
        "Potential Distributor",
    ]

    out = mg(
        "case",
        "new",
        "--section",
        "Sales",
        "--subject",
        "Install 20 posts",
        "--category",
        "Installation Requests",
        "--priority",
        "high",
        "--partner",
        "Agrolait",
        "--contact",
        "Sylvie Lelitre",
        "--user",
        "demo",
        "--revenue",
        "12000",
        "--probability",
        "40",
    ).out
    case_id = int(out.split()[2].rstrip(":"))
    mg("case", "open", str(case_id), as_user="demo")
    mg("case", "note", str(case_id), "Phoned Sylvie: installation next week.", as_user="demo")
    mg("case", "close", str(case_id), as_user="demo")

    shown = mg("case", "show", str(case_id), "--json").json()
    assert shown["state"] == "closed"
    assert shown["priority"] == "high"
    assert shown["partner"] == "Agrolait"
    assert shown["contact"] == "Sylvie Lelitre"
    assert shown["email_from"] == "s.l@agrolait.com"  # filled from the contact
    assert shown["user"] == "demo"
    assert shown["closed_at"] is not None
    kinds = [(h["kind"], h["author"]) for h in shown["history"]]
    assert kinds == [("state", kinds[0][1]), ("state", "demo"), ("note", "demo"), ("state", "demo")]
    assert shown["history"][2]["body"] == "Phoned Sylvie: installation next week."
    assert "open → closed" in shown["history"][3]["body"]
    assert all(h["at"].endswith("+00:00") for h in shown["history"])

    out = mg("case", "new", "--section", "Support Level 1", "--subject", "Printer jams").out
    bug = out.split()[2].rstrip(":")
    mg("case", "open", bug)
    assert "Support Level 2" in mg("case", "escalate", bug).out
    escalated = mg("case", "show", bug, "--json").json()
    assert escalated["section"] == "Support Level 2"
    assert escalated["user"] == "boss"
    assert escalated["history"][-1]["kind"] == "section"

    tree = mg("section", "tree", "--json").json()
    by_name = {n["name"]: n for n in tree}
    assert by_name["Sales"]["closed"] == 1
    assert by_name["Support Level 2"]["open"] == 1
    assert by_name["Support Level 2"]["children"][0]["name"] == "Support Level 1"
    text = mg("section", "tree").out
    assert "  Support Level 1" in text and "Quality" in text

    listed = mg("case", "list", "--section", "Support Level 2", "--json").json()
    assert [c["id"] for c in listed] == [int(bug)]
    assert mg("case", "list", "--user", "demo", "--json").json()[0]["id"] == case_id
    assert [c["id"] for c in mg("case", "list", "--unassigned", "--json").json()] == []
    assert [c["id"] for c in mg("case", "list", "--state", "closed", "--json").json()] == [case_id]
