"""The rules timer as a daemon service: installed with the daemon, sweeping on its own."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from types import SimpleNamespace

from rules_helpers import T0, make_world

from mailgated.cases import EVENT_LISTENERS
from mailgated.config import Config, RulesConfig
from mailgated.daemon import SERVICE_FACTORIES
from mailgated.db import Database
from mailgated.rules.engine import RulesEngine
from mailgated.rules.timer import RulesTimer, services


def test_the_daemon_lists_the_timer_first() -> None:
    assert SERVICE_FACTORIES[0] == "mailgated.rules.timer:services"


def test_factory_installs_the_engine_once(db: Database) -> None:
    config = dataclasses.replace(Config(), rules=RulesConfig(sweep_interval=0))
    daemon = SimpleNamespace(config=config, db=db, sender=None)
    assert services(daemon) == []  # type: ignore[arg-type]
    services(daemon)  # type: ignore[arg-type]
    engines = [f for f in EVENT_LISTENERS if isinstance(getattr(f, "__self__", None), RulesEngine)]
    assert len(engines) == 1


async def test_timer_sweeps_until_stopped(db: Database) -> None:
    w = make_world(db)
    w.load_example("Boss on vacation")
    case_id = w.new_case(user="boss")  # the rule fired at once (event path) …
    assert w.case(case_id)["user"] == "demo"
    with w.service() as svc:  # … and the boss gets another one behind the rules' back
        from mailgated.models import Case, User

        boss = svc.session.query(User).filter_by(login="boss").one()
        svc.session.get(Case, case_id).user_id = boss.id  # type: ignore[union-attr]
        svc.session.get(Case, case_id).last_action_at = T0 + dt.timedelta(hours=1)  # type: ignore[union-attr]
    woke = asyncio.Event()
    timer = RulesTimer(db, w.engine, 0.05, now=lambda: T0 + dt.timedelta(days=1), on_fired=woke.set)
    await timer.start()
    try:
        await asyncio.wait_for(woke.wait(), 10)
    finally:
        await timer.stop()
    assert w.case(case_id)["user"] == "demo"
