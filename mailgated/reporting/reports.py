"""The managers' statistics: "Cases by Section" and cases per month, user and section.

The numbers come from report_sql (one aggregation in the database); this module
names the ids, builds the section tree and turns rows into a terminal table,
CSV or JSON. Charts are drawn from the very same rows by charts.py. A row of
`report users` can always be drilled into with `case list` and the filters
that `drill_command` prints.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.models import Category, Section, State, User
from mailgated.reporting.filters import Filters
from mailgated.reporting.report_sql import UserRow, state_counts, user_rows

STATES = [s.value for s in State]

UserReportRow = UserRow[str]
"""One line of `report users`, with names (the JSON/CSV keys are its fields)."""

USER_COLUMNS = [f.name for f in fields(UserRow)]


@dataclass
class SectionReportRow:
    """One section of `report sections`: its own counts and those with its sub-sections."""

    section: str
    parent: str | None
    depth: int
    own: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)


def users_report(
    session: Session, filters: Filters, by_category: bool = False
) -> list[UserReportRow]:
    """Aggregate in SQL, then put names on the ids (directory tables are small)."""
    users = dict(session.execute(select(User.id, User.login)).tuples().all())
    sections = dict(session.execute(select(Section.id, Section.name)).tuples().all())
    categories = dict(session.execute(select(Category.id, Category.name)).tuples().all())
    rows = [
        UserReportRow(
            month=r.month,
            user=users.get(r.user) if r.user is not None else None,
            section=sections[r.section],
            category=categories.get(r.category) if r.category is not None else None,
            cases=r.cases,
            closed=r.closed,
            avg_close_seconds=None if r.avg_close_seconds is None else round(r.avg_close_seconds),
            revenue=round(r.revenue, 2),
            cost=round(r.cost, 2),
            weighted_revenue=round(r.weighted_revenue, 2),
            avg_probability=None if r.avg_probability is None else round(r.avg_probability, 2),
        )
        for r in user_rows(session, filters, by_category)
    ]
    return sorted(rows, key=_row_order)


def _row_order(row: UserReportRow) -> tuple[str, bool, str, str, bool, str]:
    """Month, then user, section and category by name; "nobody"/"none" first in each."""
    return (
        row.month,
        row.user is not None,
        row.user or "",
        row.section,
        row.category is not None,
        row.category or "",
    )


def sections_report(session: Session, filters: Filters) -> list[SectionReportRow]:
    """The section tree in depth-first order, each with own and sub-tree counts per state."""
    counts = state_counts(session, filters)
    tree = list(session.execute(select(Section.id, Section.name, Section.parent_id)))
    names = {sid: name for sid, name, _ in tree}
    children: dict[int | None, list[tuple[str, int]]] = {}
    for sid, name, parent in tree:
        children.setdefault(parent, []).append((name, sid))
    rows: list[SectionReportRow] = []

    def walk(sid: int, parent: int | None, depth: int) -> dict[str, int]:
        own = {s: counts.get(sid, {}).get(s, 0) for s in STATES}
        row = SectionReportRow(names[sid], names.get(parent) if parent else None, depth, own)
        rows.append(row)
        total = dict(own)
        for _, child in sorted(children.get(sid, [])):
            for state, n in walk(child, sid, depth + 1).items():
                total[state] += n
        row.total = total
        return total

    for _, root in sorted(children.get(None, [])):
        walk(root, None, 0)
    return rows


# output -------------------------------------------------------------------------


def format_delay(seconds: float | None) -> str:
    """ "3 d 4 h" (or "2 h 5 min" under a day, "45 s" under a minute): what a manager reads."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {rest // 60} min"
    return f"{rest // 60} min" if rest >= 60 else f"{rest} s"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def users_table_rows(
    rows: Sequence[UserReportRow], by_category: bool
) -> tuple[list[str], list[list[str]]]:
    """Headers and cells for the terminal, with a total line."""
    headers = ["month", "user", "section", *(["category"] if by_category else [])]
    headers += ["cases", "closed", "avg delay", "revenue", "cost", "weighted", "avg prob %"]
    cells = []
    for r in rows:
        key = [r.month, r.user or "(nobody)", r.section]
        if by_category:
            key.append(r.category or "(none)")
        cells.append(
            key
            + [
                str(r.cases),
                str(r.closed),
                format_delay(r.avg_close_seconds),
                _money(r.revenue),
                _money(r.cost),
                _money(r.weighted_revenue),
                "" if r.avg_probability is None else f"{r.avg_probability:.1f}",
            ]
        )
    if rows:
        cells.append(_total_line(rows, len(headers) - 7))
    return headers, cells


def _total_line(rows: Sequence[UserReportRow], key_width: int) -> list[str]:
    closed = sum(r.closed for r in rows)
    delay = sum((r.avg_close_seconds or 0) * r.closed for r in rows) / closed if closed else None
    return (
        ["total"]
        + [""] * (key_width - 1)
        + [
            str(sum(r.cases for r in rows)),
            str(closed),
            format_delay(delay),
            _money(sum(r.revenue for r in rows)),
            _money(sum(r.cost for r in rows)),
            _money(sum(r.weighted_revenue for r in rows)),
            "",
        ]
    )


def users_csv(rows: Sequence[UserReportRow], by_category: bool) -> str:
    """Machine-readable: delays in seconds, money unformatted, empty cells for none."""
    columns = [c for c in USER_COLUMNS if by_category or c != "category"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(r).items()})
    return out.getvalue()


def users_json(rows: Sequence[UserReportRow], by_category: bool) -> str:
    data = [{k: v for k, v in asdict(r).items() if by_category or k != "category"} for r in rows]
    return json.dumps(data, indent=2, ensure_ascii=False)


DRILL_HINT = """\
to list the cases of a row, give `case list` its section, user and month (and the
report's --state), e.g. for the first row:"""


def drill_command(row: UserReportRow, filters: Filters, by_category: bool = False) -> str:
    """The `case list` that lists exactly the cases counted in `row` under `filters`."""
    first = dt.date.fromisoformat(row.month + "-01")
    last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    if filters.first_day is not None:
        first = max(first, filters.first_day)
    if filters.last_day is not None:
        last = min(last, filters.last_day)
    parts = ["mailgated case list --section", shlex.quote(row.section), "--no-subsections"]
    if by_category:
        parts += ["--category", shlex.quote(row.category)] if row.category else ["--no-category"]
    parts += ["--user", shlex.quote(row.user)] if row.user else ["--unassigned"]
    parts += ["--created-from", first.isoformat(), "--created-to", last.isoformat()]
    for state in filters.states:
        parts += ["--state", state]
    return " ".join(parts)


def sections_csv(rows: Sequence[SectionReportRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["section", "parent", "depth"]
        + [f"own_{s}" for s in STATES]
        + ["own_total"]
        + [f"all_{s}" for s in STATES]
        + ["all_total"]
    )
    for r in rows:
        writer.writerow(
            [r.section, r.parent or "", r.depth]
            + [r.own[s] for s in STATES]
            + [sum(r.own.values())]
            + [r.total[s] for s in STATES]
            + [sum(r.total.values())]
        )
    return out.getvalue()


def sections_json(rows: Sequence[SectionReportRow]) -> str:
    data = [
        {
            "section": r.section,
            "parent": r.parent,
            "depth": r.depth,
            "own": {**r.own, "total": sum(r.own.values())},
            "with_subsections": {**r.total, "total": sum(r.total.values())},
        }
        for r in rows
    ]
    return json.dumps(data, indent=2, ensure_ascii=False)


def sections_table_rows(rows: Sequence[SectionReportRow]) -> tuple[list[str], list[list[str]]]:
    """Each cell is "own", or "own (with sub-sections)" where the two differ."""
    headers = ["section", *STATES, "total"]
    cells = []
    for r in rows:
        line = ["  " * r.depth + r.section]
        for state in [*STATES, "total"]:
            own = sum(r.own.values()) if state == "total" else r.own[state]
            total = sum(r.total.values()) if state == "total" else r.total[state]
            line.append(str(own) if own == total else f"{own} ({total})")
        cells.append(line)
    return headers, cells
