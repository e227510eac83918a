"""The case filter that `case list` and both reports share, so a report row drills down.

One dataclass, one WHERE clause: `report users` counts the cases that match a
Filters and `case list` lists those that match the same Filters, so the count
in a row and the length of its drill-down list cannot disagree. Days are UTC;
`created_to` is exclusive (the midnight after the last day asked for).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, true
from sqlalchemy.sql.elements import ColumnElement

from mailgated.errors import Invalid
from mailgated.models import Case


@dataclass(frozen=True)
class Filters:
    """What cases a report counts or `case list` lists."""

    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None  # exclusive
    section_ids: Sequence[int] | None = None
    category_id: int | None = None
    uncategorized: bool = False
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
        if self.category_id is not None:
            terms.append(Case.category_id == self.category_id)
        if self.uncategorized:
            terms.append(Case.category_id.is_(None))
        if self.user_id is not None:
            terms.append(Case.user_id == self.user_id)
        if self.unassigned:
            terms.append(Case.user_id.is_(None))
        if self.states:
            terms.append(Case.state.in_(list(self.states)))
        return and_(true(), *terms)

    @property
    def first_day(self) -> dt.date | None:
        return None if self.created_from is None else self.created_from.date()

    @property
    def last_day(self) -> dt.date | None:
        """The last day included (created_to is the midnight after it)."""
        return None if self.created_to is None else (self.created_to - dt.timedelta(days=1)).date()


def parse_day(value: str | None, what: str, end: bool = False) -> dt.datetime | None:
    """A date (YYYY-MM-DD, UTC) as a bound; as an end it includes that whole day."""
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"bad {what} {value!r}: use a date as YYYY-MM-DD, e.g. 2026-01-31") from None
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start + dt.timedelta(days=1) if end else start


def day_range(
    date_from: str | None, date_to: str | None, names: tuple[str, str] = ("--from", "--to")
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Both bounds, checked: the end may not come before the start."""
    start, end = parse_day(date_from, names[0]), parse_day(date_to, names[1], end=True)
    if start is not None and end is not None and end <= start:
        raise Invalid(f"{names[1]} {date_to} is before {names[0]} {date_from}")
    return start, end
