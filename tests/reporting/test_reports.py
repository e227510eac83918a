"""`report users` and `report sections`: arithmetic on crafted cases, shapes, drill-down, errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shlex
from pathlib import Path
from typing import Any

import pytest
from conftest import MG
from report_helpers import seed

from mailgated.db import Database

KEYS = [
    "month",
    "user",
    "section",
    "cases",
    "closed",
    "avg_close_seconds",
    "revenue",
    "cost",
    "weighted_revenue",
    "avg_probability",
]


def test_report_users_arithmetic(db: Database, mg: MG) -> None:
    """report users counts, closes, delays and money add up per month, user and section."""
    seed(db)
    rows = mg("report", "users", "--format", "json").json()
    assert [list(r) for r in rows] == [KEYS] * 4
    assert [(r["month"], r["user"], r["section"]) for r in rows] == [
        ("2025-12", "demo", "Support Level 1"),  # the year turns inside the data
        ("2026-01", "demo", "Support Level 1"),  # 2026-02 has no cases: no row
        ("2026-03", None, "Sales"),
        ("2026-03", "boss", "Support Level 2"),
    ]
    december, january, sales, boss = rows
    assert december["cases"] == 3 and december["closed"] == 2
    # (3 d 4 h + 1 d) / 2 = 2 d 2 h; #1 was closed by a later state change
    assert december["avg_close_seconds"] == (3 * 86400 + 4 * 3600 + 86400) / 2
    assert december["revenue"] == 1800 and december["cost"] == 200
    assert december["weighted_revenue"] == pytest.approx(1000 * 0.4 + 500 * 1.0 + 300 * 0.1)
    assert december["avg_probability"] == pytest.approx(50)
    # #3 was closed, then reset: it no longer counts as closed
    assert january["closed"] == 0 and january["avg_close_seconds"] is None
    assert january["weighted_revenue"] == 1000
    assert boss["cost"] == 100 and boss["revenue"] == 0 and boss["avg_probability"] is None
    assert sales["cases"] == 1 and sales["closed"] == 0


def test_report_users_table(db: Database, mg: MG) -> None:
    """report users as a table lines up its columns."""
    seed(db)
    out = mg("report", "users").out
    first = out.splitlines()[2]
    assert first.split()[:5] == ["2025-12", "demo", "Support", "Level", "1"]
    assert "2 d 2 h" in first and "1,800.00" in first and "930.00" in first
    total = out.splitlines()[6].split()
    assert total[:3] == ["total", "6", "2"] and "2 d 2 h" in out.splitlines()[6]
    assert "to list the cases of a row, give `case list`" in out  # how to drill down


def drill_args(row: dict[str, Any], args: list[str], by_category: bool) -> list[str]:
    """The README's recipe: a row's keys and month, narrowed by the report's own filters."""
    first = dt.date.fromisoformat(row["month"] + "-01")
    last = (first + dt.timedelta(days=31)).replace(day=1) - dt.timedelta(days=1)
    options = dict(zip(args[::2], args[1::2], strict=True))
    if "--from" in options:
        first = max(first, dt.date.fromisoformat(options["--from"]))
    if "--to" in options:
        last = min(last, dt.date.fromisoformat(options["--to"]))
    found = ["--section", row["section"], "--no-subsections"]
    if by_category:
        found += ["--category", row["category"]] if row["category"] else ["--no-category"]
    found += ["--user", row["user"]] if row["user"] else ["--unassigned"]
    found += ["--created-from", first.isoformat(), "--created-to", last.isoformat()]
    if "--state" in options:
        found += ["--state", options["--state"]]
    return found


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--by", "category"],
        ["--state", "closed"],
        ["--from", "2025-12-06", "--to", "2026-03-15"],  # cuts into the first and last month
        ["--section", "Support Level 2", "--user", "demo"],
    ],
)
def test_every_row_drills_down_to_its_cases(db: Database, mg: MG, args: list[str]) -> None:
    """`case list` with a row's filters lists exactly as many cases as the row counts."""
    seed(db)
    mg("category", "add", "Fault Fix", "--section", "Support Level 1")
    mg("case", "set", "1", "--category", "Fault Fix")
    by_category = "--by" in args
    rows = mg("report", "users", "--format", "json", *args).json()
    assert rows
    for row in rows:
        listed = mg("case", "list", *drill_args(row, args, by_category), "--json").json()
        assert len(listed) == row["cases"], (row, listed)
        assert sum(c["state"] == "closed" for c in listed) == row["closed"]
        assert sum(c["planned_revenue"] or 0 for c in listed) == row["revenue"]
    # the table's footer prints the first row's command, by the same recipe
    printed = mg("report", "users", *args).out.strip().splitlines()[-1]
    assert shlex.split(printed)[3:] == drill_args(rows[0], args, by_category)


def test_case_list_bad_dates_are_one_line(db: Database, mg: MG) -> None:
    """A bad date for case list is one line naming the option."""
    for args, message in [
        (["--created-from", "2026-13-01"], "bad --created-from '2026-13-01'"),
        (["--created-to", "yesterday"], "bad --created-to 'yesterday'"),
        (
            ["--created-from", "2026-02-01", "--created-to", "2026-01-31"],
            "--created-to 2026-01-31 is before --created-from 2026-02-01",
        ),
    ]:
        result = mg("case", "list", *args, ok=False)
        assert result.code != 0 and message in result.err
        assert len(result.err.strip().splitlines()) == 1, result.err


def test_report_users_filters(db: Database, mg: MG) -> None:
    """report users filters by section, user, state and dates."""
    seed(db)

    def keys(*args: str) -> list[tuple[str, str | None, str]]:
        rows = mg("report", "users", "--format", "json", *args).json()
        return [(r["month"], r["user"], r["section"]) for r in rows]

    assert keys("--section", "Support Level 2") == [
        ("2025-12", "demo", "Support Level 1"),  # the sub-section is included
        ("2026-01", "demo", "Support Level 1"),
        ("2026-03", "boss", "Support Level 2"),
    ]
    assert keys("--user", "boss") == [("2026-03", "boss", "Support Level 2")]
    assert keys("--from", "2026-01-01", "--to", "2026-01-31") == [
        ("2026-01", "demo", "Support Level 1")
    ]
    assert keys("--to", "2025-12-31") == [("2025-12", "demo", "Support Level 1")]
    closed = mg("report", "users", "--format", "json", "--state", "closed").json()
    assert [(r["cases"], r["closed"]) for r in closed] == [(2, 2)]


def test_report_users_csv_and_by_category(db: Database, mg: MG) -> None:
    """report users writes CSV and splits by category on request."""
    seed(db)
    mg("category", "add", "Fault Fix", "--section", "Support Level 1", "--probability", "25")
    mg("case", "set", "1", "--category", "Fault Fix")
    text = mg("report", "users", "--format", "csv").out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == KEYS
    assert rows[0]["avg_close_seconds"] == "180000" and rows[1]["avg_close_seconds"] == ""
    by = list(
        csv.DictReader(
            io.StringIO(mg("report", "users", "--by", "category", "--format", "csv").out)
        )
    )
    assert "category" in by[0]
    december = [(r["category"], r["cases"]) for r in by if r["month"] == "2025-12"]
    assert december == [("", "2"), ("Fault Fix", "1")] or december == [
        ("Fault Fix", "1"),
        ("", "2"),
    ]


def test_report_sections_counts_own_and_with_subsections(db: Database, mg: MG) -> None:
    """report sections counts each section's own cases and those with its sub-sections."""
    seed(db)
    rows = {r["section"]: r for r in mg("report", "sections", "--format", "json").json()}
    l2, l1 = rows["Support Level 2"], rows["Support Level 1"]
    assert l1["parent"] == "Support Level 2" and l1["depth"] == 1
    assert l1["own"] == {
        "draft": 1,
        "open": 1,
        "pending": 0,
        "closed": 2,
        "cancelled": 0,
        "total": 4,
    }
    assert l2["own"]["draft"] == 1 and l2["own"]["total"] == 1
    assert l2["with_subsections"]["draft"] == 2 and l2["with_subsections"]["total"] == 5
    assert rows["Sales"]["own"]["cancelled"] == 1
    out = mg("report", "sections").out
    assert "  Support Level 1" in out and "1 (2)" in out
    text = mg("report", "sections", "--format", "csv").out
    header = text.splitlines()[0].split(",")
    assert header[:4] == ["section", "parent", "depth", "own_draft"] and header[-1] == "all_total"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "01/02/2026"], "bad --from '01/02/2026': use a date as YYYY-MM-DD"),
        (["--to", "2026-02-30"], "bad --to '2026-02-30'"),
        (["--from", "2026-02-01", "--to", "2026-01-01"], "--to 2026-01-01 is before --from"),
        (["--user", "ghost"], "no user with login 'ghost'"),
        (["--section", "Nowhere"], "no section named 'Nowhere'"),
        (["--chart", "out.pdf"], "must end in .png or .svg"),
    ],
)
def test_bad_input_is_one_clear_line(db: Database, mg: MG, args: list[str], message: str) -> None:
    """A bad report option is one clear line."""
    seed(db)
    for command in ("users", "sections"):
        result = mg("report", command, *args, ok=False)
        assert result.code != 0
        assert message in result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert "Traceback" not in result.err


@pytest.mark.parametrize("by_category", [False, True])
def test_sqlite_report_reads_the_covering_index(db: Database, by_category: bool) -> None:
    """On SQLite `report users` must not read the table (the 1M-case target)."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the month index exists on SQLite only")
    import datetime as dt

    from sqlalchemy import text

    from mailgated.reporting.report_sql import Filters, user_query

    for filters in (Filters(), Filters(created_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))):
        query = user_query(filters, by_category)
        sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
        with db.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "COVERING INDEX ix_cases_report_month" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # grouped in index order: no sort


def test_a_case_closed_by_a_rule_counts_with_its_delay(
    db: Database, mg: MG, tmp_path: Path
) -> None:
    """A timer rule closes #2 (open since 2025-12-31 23:30) two days later, in a sweep."""
    seed(db)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "Close after two days"\n'
        '[rule.when]\nstate_from = "open"\nsection = "Support Level 1"\n'
        'trigger = "created"\ndelay = "2d"\n'
        '[rule.then]\nset_state = "closed"\n'
    )
    mg("rule", "load", str(rules))
    assert "case 2: rule 'Close after two days'" in mg("rule", "sweep", "--now", "2026-01-03").out
    december = mg("report", "users", "--format", "json").json()[0]
    assert december["month"] == "2025-12" and december["closed"] == 3
    two_days_30_min = 2 * 86400 + 1800  # closed at the sweep's time
    assert december["avg_close_seconds"] == ((3 * 86400 + 4 * 3600) + 86400 + two_days_30_min) / 3
