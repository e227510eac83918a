"""Bad input: one clear line, a non-zero exit, and nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MG
from test_walkthrough import build_directory

NEW_IN_SALES = ("case", "new", "--section", "Sales", "--subject", "x")


def fails(mg: MG, *args: str, says: str) -> None:
    result = mg(*args, ok=False)
    assert result.code != 0, result.out
    assert says in result.err, result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err


def snapshot(mg: MG) -> tuple[object, ...]:
    return (
        mg("section", "list", "--json").json(),
        mg("case", "list", "--json").json(),
        mg("user", "list", "--json").json(),
        mg("category", "list", "--json").json(),
    )


def test_bad_input_changes_nothing(mg: MG) -> None:
    """Each bad command line is one error line and leaves the data as it was."""
    build_directory(mg)
    mg("case", "new", "--section", "Support Level 2", "--subject", "top")
    mg("case", "new", "--section", "Sales", "--subject", "gone")
    mg("case", "cancel", "2")
    before = snapshot(mg)
    fails(mg, "case", "new", "--section", "Nope", "--subject", "x", says="no section named 'Nope'")
    fails(mg, *NEW_IN_SALES, "--user", "ghost", says="no user with login 'ghost'")
    fails(
        mg,
        *NEW_IN_SALES,
        "--category",
        "Fault Fix",
        says="no category 'Fault Fix' in section 'Sales'",
    )
    fails(mg, "section", "add", "Sales", says="already exists")
    fails(mg, "section", "set", "Support Level 2", "--parent", "Support Level 1", says="cycle")
    fails(mg, "case", "escalate", "1", says="has no parent")
    fails(mg, "case", "close", "2", says="cannot close case 2: it is cancelled")
    fails(mg, "case", "show", "99", says="no case with ID 99")
    fails(mg, *NEW_IN_SALES, "--deadline", "tomorrow", says="bad --deadline")
    fails(mg, "--as", "ghost", "case", "open", "1", says="no user with login 'ghost'")
    fails(mg, "user", "add", "demo", "--name", "D", "--email", "other@x.com", says="already exists")
    assert snapshot(mg) == before


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[database]\nurl = 3\n", "configuration key 'database.url' must be a string"),
        ("[databse]\nurl = 'x'\n", "unknown configuration key 'databse'"),
        (
            "[listen]\nsmtp = '127.0.0.1:2525'\nsmpt = 'x'\n",
            "unknown configuration key 'listen.smpt'",
        ),
        ("[rules]\nsweep_interval = 'soon'\n", "'rules.sweep_interval' must be an integer"),
        ("[database\n", "is not valid TOML"),
        (
            "[[mailbox]]\nsection = 'S'\nurl = 'imap://x'\nintervall = 5\n",
            "unknown configuration key 'mailbox[0].intervall'",
        ),
    ],
)
def test_malformed_config(mg: MG, tmp_path: Path, content: str, says: str) -> None:
    """A malformed config file is one line naming the key and what is wrong."""
    config = tmp_path / "mailgated.toml"
    config.write_text(content)
    mg.config = config
    fails(mg, "section", "list", says=says)


def test_missing_config_file(mg: MG, tmp_path: Path) -> None:
    """A config path that does not exist is one line, not a traceback."""
    mg.config = tmp_path / "absent.toml"
    fails(mg, "section", "list", says="does not exist")


def test_usage_errors_are_one_line(mg: MG) -> None:
    """Mistakes click catches (bad choice, missing option, unknown command) are one line too."""
    fails(mg, "case", "list", "--state", "bogus", says="mailgated case list: error: Invalid value")
    fails(mg, "case", "new", says="Missing option '--section'")
    fails(mg, "bogus", says="No such command 'bogus'")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("case", "new", "--section", "Sales", "--subject", "x", "--email",
          "a@x.example\r\nBcc: victim@y.example"), "contains CR"),
        (("case", "new", "--section", "Sales", "--subject", "x", "--email",
          "a@x.example, victim@y.example"), "contains a comma"),
        (("case", "new", "--section", "Sales", "--subject", "x", "--email",
          "a@x.example\nvictim@y.example"), "contains LF"),
        (("case", "new", "--section", "Sales", "--subject", "x", "--watch", "a@x\0.example"),
         "contains NUL"),
        (("case", "set", "1", "--watch", "w@x.example, victim@y.example"), "contains a comma"),
        (("case", "set", "1", "--email", "not an address"), "is not a valid e-mail address"),
        (("case", "set", "1", "--email", "a@b@c.example"), "is not one e-mail address"),
        (("user", "add", "eve", "--name", "Eve", "--email", "eve@x.example;v@y.example"),
         "not one e-mail address"),
        (("partner", "contact", "add", "Agrolait", "Mal", "--email", "m@x.example,v@y.example"),
         "contains a comma"),
        (("section", "set", "Sales", "--email", "a@localhost"), "special-use or reserved name"),
        (("section", "add", "Evil\r\nBcc: v@y.example"), "contains a control character"),
        (("user", "add", "eve\n", "--name", "Eve", "--email", "eve@x.example"),
         "contains a control character"),
        (("partner", "add", "Evil\x1b[31m"), "contains a control character"),
        (("user", "set", "demo", "--email", "d@x.example\r\nBcc: v@y.example"), "contains CR"),
        (("partner", "set", "Agrolait", "--email", "a@x.example, v@y.example"), "a comma"),
        (("partner", "contact", "set", "Agrolait", "Sylvie Lelitre", "--email", "s@x\0.ex"),
         "contains NUL"),
        (("partner", "set", "Agrolait", "--name", "Agro\nlait"), "contains a control character"),
        (("section", "set", "Sales", "--name", "Sa\rles"), "contains a control character"),
        (("user", "set", "demo", "--name", "Demo\x07"), "contains a control character"),
    ],
)  # fmt: skip
def test_address_and_name_options_refuse_injection(
    mg: MG, args: tuple[str, ...], says: str
) -> None:
    """Every address option takes exactly one valid address and names refuse control
    characters: one line, non-zero exit, nothing changed (issue 12 item 12)."""
    build_directory(mg)
    mg("case", "new", "--section", "Sales", "--subject", "seed", "--email", "p@partner.example")
    before = snapshot(mg)
    fails(mg, *args, says=says)
    assert snapshot(mg) == before


def test_one_address_with_a_display_name_is_taken(mg: MG) -> None:
    """`Name <addr>` is one address: it is accepted and stored bare."""
    build_directory(mg)
    mg(*NEW_IN_SALES, "--email", "Pat <Pat@Partner.Example>")
    assert mg("case", "show", "1", "--json").json()["email_from"] == "Pat@partner.example"
