"""`mailgated rule …` from the command line, with the example rules file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conftest import MG
from rules_helpers import EXAMPLE
from test_walkthrough import build_directory


def test_load_list_show_test_sweep(mg: MG) -> None:
    """rule load, list, show, test and sweep work on the example file."""
    build_directory(mg)
    out = mg("rule", "load", str(EXAMPLE)).out
    assert "added: Copy to an expert after 2 days" in out
    assert "6 rule(s) loaded" in out

    listing = mg("rule", "list").out
    assert "Copy to an expert after 2 days" in listing and "created 2d" in listing
    shown = mg("rule", "show", "Priority to Gold Partners").out
    assert '"partner_category": "Support Contract / Gold"' in shown

    # event rules: a Gold partner's new case is high, new Support Level 1 cases go to demo
    out = mg(
        "case", "new", "--section", "Support Level 1", "--subject", "Down", "--partner", "Agrolait"
    ).out
    case_id = out.split()[2].strip(":")
    case = mg("case", "show", case_id, "--json").json()
    assert (case["priority"], case["user"]) == ("high", "demo")
    assert "rule" in [h["kind"] for h in case["history"]]

    assert "would fire on 0 case(s)" in mg("rule", "test", "Copy to an expert after 2 days").out
    mg("case", "open", case_id, as_user="demo")
    created = dt.datetime.fromisoformat(case["created_at"])
    due = (created + dt.timedelta(days=2)).isoformat()
    at = later(3)
    tested = mg("rule", "test", "Copy to an expert after 2 days", "--now", at).out.splitlines()
    assert tested == [
        f"rule 'Copy to an expert after 2 days' would fire on 1 case(s) at {at}",
        f"  case {case_id}  due {due}  Down",
    ]
    assert mg("case", "show", case_id, "--json").json()["watchers"] == []  # test changed nothing
    event = mg("rule", "test", "Priority to Gold Partners").out.splitlines()
    assert event[0].startswith("event rule 'Priority to Gold Partners': 0 case(s)")  # open now

    swept = mg("rule", "sweep", "--now", at).out.splitlines()
    assert swept == [
        f"case {case_id}: rule 'Copy to an expert after 2 days' (due {due}):"
        " watchers + expert@mycompany.com; reminder mail to demo@mycompany.com",
        f"1 firing(s) in the sweep at {at}",
    ]
    again = later(3.1)
    assert mg("rule", "sweep", "--now", again).out == f"0 firing(s) in the sweep at {again}\n"
    assert "would fire on 0 case(s)" in mg("rule", "test", "Copy to an expert after 2 days").out
    case = mg("case", "show", case_id, "--json").json()
    assert case["watchers"] == ["expert@mycompany.com"]
    outbox = mg("outbox", "list", "--json").json()
    assert [m["to"] for m in outbox] == [["demo@mycompany.com"]]


def later(days: float) -> str:
    """A time `days` from now, as the CLI prints it (cases are created at the real time)."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


def test_enable_disable(mg: MG) -> None:
    """A disabled rule stops firing; enabled again, it fires."""
    build_directory(mg)
    mg("rule", "load", str(EXAMPLE))
    assert "disabled" in mg("rule", "disable", "Priority to Gold Partners").out
    out = mg("case", "new", "--section", "Sales", "--subject", "Hi", "--partner", "Agrolait").out
    case_id = out.split()[2].strip(":")
    assert mg("case", "show", case_id, "--json").json()["priority"] == "normal"
    mg("rule", "load", str(EXAMPLE))  # the file does not say: the admin's choice stays
    assert "enabled: no" in mg("rule", "show", "Priority to Gold Partners").out
    mg("rule", "enable", "Priority to Gold Partners")
    assert "enabled: yes" in mg("rule", "show", "Priority to Gold Partners").out
    result = mg("rule", "enable", "No such rule", ok=False)
    assert result.code == 1 and "no rule named 'No such rule'" in result.err


def test_bad_file_reports_every_error_and_changes_nothing(mg: MG, tmp_path: Path) -> None:
    """A bad rules file reports every error and loads nothing."""
    build_directory(mg)
    mg("rule", "load", str(EXAMPLE))
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[rule]]\nname = "A"\n[rule.when]\nsection = "Nowhere"\n[rule.then]\nuser = "ghost"\n'
        '[[rule]]\nname = "B"\n[rule.when]\ndelay = "soon"\n[rule.then]\npriority = "high"\n'
    )
    result = mg("rule", "load", str(bad), ok=False)
    assert result.code == 1
    assert "rule 'A': when.section: no section named 'Nowhere'" in result.err
    assert "rule 'A': then.user: no user with login 'ghost'" in result.err
    assert "rule 'B': when.delay: bad delay 'soon'" in result.err
    assert "nothing changed" in result.err
    assert "Traceback" not in result.err
    assert "Copy to an expert after 2 days" in mg("rule", "list").out
    missing = mg("rule", "load", str(tmp_path / "nope.toml"), ok=False)
    assert missing.code == 1 and "does not exist" in missing.err
