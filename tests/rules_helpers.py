"""A small world for the rules tests: the seed's directory, a clock, rules from TOML text."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgated.app import App
from mailgated.cases import Actor, CaseService
from mailgated.config import Config
from mailgated.db import Database
from mailgated.directory import Directory
from mailgated.models import Case, History, Outbox
from mailgated.rules import loader, mail
from mailgated.rules.engine import Firing, RulesEngine

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
SECRET = b"rules-test-secret-0123456789abcdef"
EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "rules.toml.example"


def build_directory(session: Session) -> None:
    """The seed's sections, users and partners (as in the walkthrough)."""
    d = Directory(session)
    d.add_user("demo", "Demo User", "demo@mycompany.com")
    d.add_user("boss", "Support Boss", "boss@mycompany.com")
    d.add_section("Support Level 1", parent="Support Level 2", email="support@mycompany.com")
    d.update_section(d.section("Support Level 2"), manager="boss")
    d.add_section("Quality", email="quality@mycompany.com", manager="boss")
    d.add_category("Fault Fix", d.section("Support Level 1"))
    d.add_partner_category("Support Contract / Gold")
    d.add_partner_category("Support Contract / Normal")
    gold = d.add_partner("Agrolait", ["Support Contract / Gold"])
    d.add_contact(gold, "Sylvie Lelitre", "s.l@agrolait.com")
    normal = d.add_partner("Camptocamp", ["Support Contract / Normal"])
    d.add_contact(normal, "Luc", "luc@camptocamp.com")
    supplier = d.add_partner("Bolts Inc")
    d.add_contact(supplier, "Sales desk", "sales@bolts.example")


@dataclass
class World:
    """One database with the directory, a rules engine, and a movable clock."""

    db: Database
    engine: RulesEngine
    now: dt.datetime = T0
    config: Config = field(default_factory=Config)

    def clock(self) -> dt.datetime:
        return self.now

    @contextmanager
    def service(self, actor: Actor | None = None) -> Iterator[CaseService]:
        with self.db.session() as session:
            rules = self.engine.cascade(session)
            yield CaseService(session, actor or Actor.system(), now=self.clock, events=rules)

    def load(self, text: str) -> dict[str, list[str]]:
        templates = mail.environment(self.config.outbound)
        with self.db.session() as session:
            specs = loader.validate(
                session, tomllib.loads(text), lambda n: mail.template_problem(templates, n)
            )
            return loader.store(session, specs)

    def load_example(self, *names: str) -> None:
        data = tomllib.loads(EXAMPLE.read_text())
        data["rule"] = [r for r in data["rule"] if r["name"] in names]
        assert len(data["rule"]) == len(names)
        templates = mail.environment(self.config.outbound)
        with self.db.session() as session:
            specs = loader.validate(session, data, lambda n: mail.template_problem(templates, n))
            loader.store(session, specs)

    def sweep(self, at: dt.datetime | None = None) -> list[Firing]:
        if at is not None:
            self.now = at
        with self.db.session() as session:
            return self.engine.sweep(session, self.now)

    def new_case(self, section: str = "Support Level 1", **kw: Any) -> int:
        actor = kw.pop("actor", None)
        with self.service(actor) as svc:
            d = Directory(svc.session)
            if "user" in kw:
                kw["user"] = d.user(kw["user"])
            if "partner" in kw:
                kw["partner"] = d.partner(kw["partner"])
            subject = kw.pop("subject", "Printer on fire")
            return svc.create(d.section(section), subject, **kw).id

    def case(self, case_id: int) -> dict[str, Any]:
        with self.db.session() as session:
            case = session.get(Case, case_id)
            assert case is not None
            return {
                "state": case.state,
                "priority": case.priority,
                "user": case.user.login if case.user else None,
                "section": case.section.name,
                "watchers": [w.email for w in case.watchers],
                "closed_at": case.closed_at,
                "last_action_at": case.last_action_at,
            }

    def history(self, case_id: int, kind: str | None = None) -> list[str]:
        with self.db.session() as session:
            query = select(History).where(History.case_id == case_id).order_by(History.id)
            return [
                f"{h.author}: {h.body}"
                for h in session.scalars(query)
                if kind is None or h.kind == kind
            ]

    def outbox(self) -> list[tuple[int | None, list[str], str, bytes]]:
        with self.db.session() as session:
            rows = session.scalars(select(Outbox).order_by(Outbox.id))
            return [(r.case_id, list(r.recipients), r.subject, r.raw) for r in rows]


def make_world(db: Database, config: Config | None = None) -> World:
    with db.session() as session:
        build_directory(session)
    config = config or Config()
    return World(db, App(config, db=db, secret=SECRET).rules, config=config)
