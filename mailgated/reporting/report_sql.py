"""The statistics as SQL aggregations: one GROUP BY per report, run in the database.

Cases are never loaded into Python here; what comes back is one row per group
(month × user × section [× category], or section × state). The two things SQL
dialects disagree on — the month of a time and the seconds between two times —
are small constructs compiled per dialect, so the same query runs on SQLite
and PostgreSQL. On SQLite the month is `substr(created_at, 1, 7)` on purpose:
it is the expression of the SQLite-only covering index `ix_cases_report_month`
(see models.py), which lets SQLite read the groups in order without sorting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Float, Select, String, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from mailgated.models import Case, State
from mailgated.reporting.filters import Filters


class month_of(FunctionElement[str]):
    """ "YYYY-MM" of a UTC time column."""

    type = String()
    inherit_cache = True


@compiles(month_of, "sqlite")
def _month_sqlite(element: month_of, compiler: Any, **kw: Any) -> str:
    # stored as "YYYY-MM-DD HH:MM:SS…" in UTC: the first 7 characters are the month
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 7)"


@compiles(month_of)
def _month_default(element: month_of, compiler: Any, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM')"


class seconds_between(FunctionElement[float]):
    """Seconds from the first time to the second (NULL when either is NULL)."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(seconds_between)
def _seconds_default(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


Key = TypeVar("Key", int, str)


@dataclass(frozen=True)
class UserRow(Generic[Key]):
    """One group of `report users`: UserRow[int] as the query returns it, with the ids of the
    user, section and category; UserRow[str] once reports.py has put names on them."""

    month: str
    user: Key | None
    section: Key
    category: Key | None
    cases: int
    closed: int
    avg_close_seconds: float | None
    revenue: float
    cost: float
    weighted_revenue: float
    avg_probability: float | None


def user_rows(session: Session, filters: Filters, by_category: bool = False) -> list[UserRow[int]]:
    """month × user × section [× category] aggregates, in no particular order."""
    width = 4 if by_category else 3
    rows = []
    for r in session.execute(user_query(filters, by_category)):
        key, values = tuple(r[:width]), tuple(r[width:])
        if not by_category:
            key = (*key, None)
        rows.append(UserRow[int](*key, *_user_values(values)))
    return rows


def user_query(filters: Filters, by_category: bool = False) -> Select[Any]:
    """The one GROUP BY behind `report users` (its SQLite plan is checked by a test)."""
    month = month_of(Case.created_at)
    keys: list[Any] = [month, Case.user_id, Case.section_id]
    if by_category:
        keys.append(Case.category_id)
    is_closed = Case.state == State.CLOSED.value
    closed = case((is_closed, 1), else_=0)
    # only cases closed now: one closed, then reopened or reset, has no delay to close
    delay = case((is_closed, seconds_between(Case.created_at, Case.closed_at)))
    return (
        select(
            *keys,
            func.count(),
            func.sum(closed),
            func.avg(delay),
            func.sum(Case.planned_revenue),
            func.sum(Case.planned_cost),
            func.sum(Case.planned_revenue * Case.probability / 100.0),
            func.avg(Case.probability),
        )
        .where(filters.where())
        .group_by(*keys)
    )


def _user_values(values: tuple[Any, ...]) -> tuple[Any, ...]:
    count, closed, delay, revenue, cost, weighted, probability = values
    return (
        int(count),
        int(closed or 0),
        None if delay is None else float(delay),
        float(revenue or 0),
        float(cost or 0),
        float(weighted or 0),
        None if probability is None else float(probability),
    )


def state_counts(session: Session, filters: Filters) -> dict[int, dict[str, int]]:
    """section id → {state: number of cases} (the section's own cases only)."""
    query = (
        select(Case.section_id, Case.state, func.count())
        .where(filters.where())
        .group_by(Case.section_id, Case.state)
    )
    found: dict[int, dict[str, int]] = {}
    for section_id, state, count in session.execute(query):
        found.setdefault(section_id, {})[state] = int(count)
    return found
