"""`case new` and `case set`: every field option, each change historized by the case service."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import MG


def directory(mg: MG) -> None:
    mg("section", "add", "Sales")
    mg("category", "add", "Installation Requests", "--section", "Sales", "--probability", "30")
    mg("category", "add", "Interest in Training", "--section", "Sales")
    mg("user", "add", "demo", "--name", "Demo User", "--email", "demo@example.com")
    mg("partner", "add", "Agrolait")
    mg("partner", "contact", "add", "Agrolait", "Sylvie Lelitre", "--email", "s.l@agrolait.com")
    mg("partner", "contact", "add", "Agrolait", "Luc Maurer", "--email", "l.m@agrolait.com")
    mg("partner", "add", "Camptocamp")


def new(mg: MG, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = mg("case", "new", "--section", "Sales", "--json", *args).json()
    return data


def show(mg: MG, case_id: int) -> dict[str, Any]:
    data: dict[str, Any] = mg("case", "show", str(case_id), "--json").json()
    return data


def test_case_new_takes_every_field(mg: MG) -> None:
    """case new sets every field of the seed's case form in one command."""
    directory(mg)
    case = new(mg, "--subject", "Install 20 posts", "--category", "Installation Requests",
               "--priority", "high", "--partner", "Agrolait", "--contact", "Sylvie Lelitre",
               "--user", "demo", "--deadline", "2026-12-01T17:00+01:00",
               "--date", "2026-11-20T09:00Z", "--duration", "1h30m", "--revenue", "12000",
               "--cost", "3000", "--probability", "60",
               "--watch", "Expert@Example.com")  # fmt: skip
    assert {k: case[k] for k in ("category", "priority", "partner", "contact", "user")} == {
        "category": "Installation Requests",
        "priority": "high",
        "partner": "Agrolait",
        "contact": "Sylvie Lelitre",
        "user": "demo",
    }
    assert case["email_from"] == "s.l@agrolait.com"  # from the contact
    assert case["deadline"] == "2026-12-01T16:00:00+00:00"
    assert case["date"] == "2026-11-20T09:00:00+00:00" and case["duration"] == 1.5
    assert (case["planned_revenue"], case["planned_cost"]) == (12000, 3000)
    assert case["probability"] == 60  # given: the category's 30 does not override it
    assert case["watchers"] == ["expert@example.com"]
    assert [h["kind"] for h in case["history"]] == ["state"]


def test_category_probability_fills_a_new_case(mg: MG) -> None:
    """A new case takes its category's probability unless one is given."""
    directory(mg)
    filled = new(mg, "--subject", "a", "--category", "Installation Requests")
    assert filled["probability"] == 30
    assert new(mg, "--subject", "b", "--category", "Interest in Training")["probability"] is None
    assert new(mg, "--subject", "c")["probability"] is None


@pytest.mark.parametrize(
    ("args", "field", "value", "line"),
    [
        (["--priority", "highest"], "priority", "highest", "priority: normal → highest"),
        (["--category", "Interest in Training"], "category", "Interest in Training",
         "category: none → Interest in Training"),
        (["--partner", "Camptocamp"], "partner", "Camptocamp", "partner: none → Camptocamp"),
        (["--email", "x@camptocamp.com"], "email_from", "x@camptocamp.com",
         "email: none → x@camptocamp.com"),
        (["--deadline", "2027-01-15"], "deadline", "2027-01-15T00:00:00+00:00",
         "deadline: none → 2027-01-15T00:00:00+00:00"),
        (["--date", "2027-01-10T14:00+02:00"], "date", "2027-01-10T12:00:00+00:00",
         "date: none → 2027-01-10T12:00:00+00:00"),
        (["--duration", "2"], "duration", 2.0, "duration: none → 2.0"),
        (["--revenue", "500"], "planned_revenue", 500.0, "revenue: none → 500.0"),
        (["--cost", "120.5"], "planned_cost", 120.5, "cost: none → 120.5"),
        (["--probability", "75"], "probability", 75.0, "probability: none → 75.0"),
        (["--user", "demo"], "user", "demo", "responsible: nobody → demo"),
        (["--watch", "boss@example.com"], "watchers", ["boss@example.com"],
         "watcher added: boss@example.com"),
    ],
)  # fmt: skip
def test_case_set_one_field_one_history_entry(
    mg: MG, args: list[str], field: str, value: Any, line: str
) -> None:
    """case set changes one field and records exactly one history entry saying so."""
    directory(mg)
    case_id = new(mg, "--subject", "Printer jams")["id"]
    assert mg("case", "set", str(case_id), *args, as_user="demo").out.strip() == (
        f"updated case {case_id}"
    )
    after = show(mg, case_id)
    assert after[field] == value
    entry = after["history"][-1]
    assert len(after["history"]) == 2 and entry["body"] == line and entry["author"] == "demo"


def test_case_set_contact_unwatch_and_no_change(mg: MG) -> None:
    """Setting a contact takes its address; unwatch removes a watcher; setting the same value
    records nothing."""
    directory(mg)
    case_id = str(
        new(mg, "--subject", "x", "--partner", "Agrolait", "--watch", "a@example.com")["id"]
    )
    mg("case", "set", case_id, "--contact", "Luc Maurer")  # under the case's own partner
    after = show(mg, case_id)
    assert after["contact"] == "Luc Maurer" and after["email_from"] == "l.m@agrolait.com"
    assert after["history"][-1]["body"] == (
        "contact: none → Luc Maurer; email: none → l.m@agrolait.com"
    )
    mg("case", "set", case_id, "--unwatch", "A@example.com")
    after = show(mg, case_id)
    assert (
        after["watchers"] == [] and after["history"][-1]["body"] == "watcher removed: a@example.com"
    )
    mg("case", "set", case_id, "--probability", "10")
    count = len(show(mg, case_id)["history"])
    mg("case", "set", case_id, "--probability", "10")  # the same value: nothing to record
    assert len(show(mg, case_id)["history"]) == count
    mg("case", "set", case_id, "--date", "2027-01-10T09:00Z", "--revenue", "9")
    entries = show(mg, case_id)["history"]
    assert len(entries) == count + 1  # two fields, one entry naming both
    assert sorted(entries[-1]["body"].split("; ")) == [
        "date: none → 2027-01-10T09:00:00+00:00",
        "revenue: none → 9.0",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deadline", "next friday"], "bad --deadline 'next friday'"),
        (["--duration", "two hours"], "bad duration 'two hours'"),
        (["--category", "Fault Fix"], "Fault Fix"),
        (["--partner", "Nobody Inc"], "Nobody Inc"),
        (["--contact", "Luc Maurer", "--partner", "Camptocamp"], "Luc Maurer"),
        (["--user", "ghost"], "no user with login 'ghost'"),
        (["--unwatch", "nobody@example.com"], "nobody@example.com is not a watcher"),
        (["--revenue", "10", "--unwatch", "nobody@example.com"], "is not a watcher"),
    ],
)
def test_case_set_bad_input_changes_nothing(mg: MG, args: list[str], message: str) -> None:
    """A bad value for case set is one line on stderr and leaves the case as it was."""
    directory(mg)
    case_id = str(new(mg, "--subject", "x")["id"])
    before = show(mg, case_id)
    result = mg("case", "set", case_id, *args, ok=False)
    assert result.code != 0 and message in result.err, result.err
    assert "Traceback" not in result.err
    assert show(mg, case_id) == before
