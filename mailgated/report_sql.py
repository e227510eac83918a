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

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, String, and_, case, func, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from mailgated.models import Case, State


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


@dataclass(frozen=True)
class Filters:
    """What both reports (and `case list`, for drilling down) can be narrowed by."""

    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None  # exclusive
    section_ids: Sequence[int] | None = None
    user_id: int | None = None
    unassigned: bool = False
    states: Sequence[str] = ()

    def where(self) -> ColumnElement[bool]:
        terms: list[ColumnElement[bool]] = []
        if self.created_from is not None:
            terms.append(Case.created_at >= self.created_from)
        if self.created_to is not None:
            terms.append(Case.created_at < self.created_to)
        if self.section_ids is not None:
            terms.append(Case.section_id.in_(list(self.section_ids)))
        if self.user_id is not None:
            terms.append(Case.user_id == self.user_id)
        if self.unassigned:
            terms.append(Case.user_id.is_(None))
        if self.states:
            terms.append(Case.state.in_(list(self.states)))
        return and_(true(), *terms)


@dataclass(frozen=True)
class UserRow:
    """One group of `report users`, with ids still to be named."""

    month: str
    user_id: int | None
    section_id: int
    category_id: int | None
    cases: int
    closed: int
    avg_close_seconds: float | None
    revenue: float
    cost: float
    weighted_revenue: float
    avg_probability: float | None


def user_rows(session: Session, filters: Filters, by_category: bool = False) -> list[UserRow]:
    """month × user × section [× category] aggregates, in no particular order."""
    month = month_of(Case.created_at)
    keys: list[Any] = [month, Case.user_id, Case.section_id]
    if by_category:
        keys.append(Case.category_id)
    closed = case((Case.state == State.CLOSED.value, 1), else_=0)
    query = (
        select(
            *keys,
            func.count(),
            func.sum(closed),
            func.avg(seconds_between(Case.created_at, Case.closed_at)),
            func.sum(Case.planned_revenue),
            func.sum(Case.planned_cost),
            func.sum(Case.planned_revenue * Case.probability / 100.0),
            func.avg(Case.probability),
        )
        .where(filters.where())
        .group_by(*keys)
    )
    rows = []
    for r in session.execute(query):
        key, values = tuple(r[: len(keys)]), tuple(r[len(keys) :])
        if not by_category:
            key = (*key, None)
        rows.append(UserRow(*key, *_user_values(values)))
    return rows


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
