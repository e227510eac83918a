"""The rules timer as a daemon service: built by the root with the one rules engine, sweeping."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

from rules_helpers import T0, make_world

from mailgated.app import App
from mailgated.config import Config, RulesConfig, SecurityConfig, SpoolConfig
from mailgated.db import Database
from mailgated.rules.timer import RulesTimer


def test_the_root_builds_one_rules_engine_for_the_timer_and_processing(
    db: Database, tmp_path: Path
) -> None:
    """Processing and the timer share one rules engine; sweep_interval = 0 means no timer."""
    config = Config(
        spool=SpoolConfig(path=str(tmp_path / "spool")),
        security=SecurityConfig(secret_file=str(tmp_path / "secret.key")),
    )
    app = App(config, db=db)
    services = app.services()
    assert services.timer is not None and services.timer.engine is app.rules
    assert app.processor.rules is app.rules
    off = dataclasses.replace(config, rules=RulesConfig(sweep_interval=0))
    assert App(off, db=db).services().timer is None


async def test_timer_sweeps_until_stopped(db: Database) -> None:
    """A case that fell due behind the rules' back is caught by the timer's own sweep."""
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
