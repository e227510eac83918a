"""Crafted cases with known creation and close times, for the report and calendar tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mailgated.cases import Actor, CaseService
from mailgated.db import Database
from mailgated.directory import Directory


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def service(session: Any, when: str) -> CaseService:
    """A case service whose clock says `when` (UTC)."""
    return CaseService(session, Actor.system(), now=lambda: at(when))


def seed(db: Database) -> dict[str, int]:
    """Two users, Support Level 1 under Support Level 2, Sales; six cases over four months.

    2025-12 demo/L1: #1 closed 3 d 4 h after creation, #2 open (created 23:30 on New
    Year's Eve), #6 closed after exactly one day; 2026-01 demo/L1: #3 closed then reset
    (no longer closed); 2026-02: nothing; 2026-03: #4 boss/L2, #5 unassigned Sales, cancelled.
    """
    with db.session() as session:
        d = Directory(session)
        demo = d.add_user("demo", "Demo User", "demo@example.com")
        boss = d.add_user("boss", "Support Boss", "boss@example.com")
        l2 = d.add_section("Support Level 2")[0]
        l1 = d.add_section("Support Level 1", parent="Support Level 2")[0]
        sales = d.add_section("Sales")[0]
        ids: dict[str, int] = {}

        def new(name: str, when: str, section: Any, user: Any, **kw: Any) -> Any:
            case = service(session, when).create(section, f"case {name}", user=user, **kw)
            ids[name] = case.id
            return case

        c1 = new("1", "2025-12-30T10:00", l1, demo, revenue=1000, cost=200, probability=40)
        new("2", "2025-12-31T23:30", l1, demo, revenue=500, probability=100)
        c3 = new("3", "2026-01-01T00:10", l1, demo, revenue=2000, probability=50)
        new("4", "2026-03-15T09:00", l2, boss, cost=100)
        c5 = new("5", "2026-03-20T12:00", sales, None)
        c6 = new("6", "2025-12-05T08:00", l1, demo, revenue=300, probability=10)
        service(session, "2025-12-31T23:40").open(d_case(session, ids["2"]))
        service(session, "2026-01-02T14:00").close(c1)  # closed by a later state change
        service(session, "2025-12-06T08:00").close(c6)
        service(session, "2026-01-01T01:10").close(c3)
        service(session, "2026-01-05T09:00").reset(c3)
        service(session, "2026-03-21T12:00").cancel(c5)
        return ids


def d_case(session: Any, case_id: int) -> Any:
    from mailgated.models import Case

    return session.get(Case, case_id)
