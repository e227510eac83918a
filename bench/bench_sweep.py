"""Seconds per rules timer sweep over 100,000 and 1,000,000 cases with 0.1 % due (target ≤ 1 s).

    .venv/bin/python bench/bench_sweep.py [-n 100000 -n 1000000] [--runs 5] [--pg URL] [--keep DIR]

Builds a fresh database by the migrations (a temporary SQLite file, or a fresh
database on the PostgreSQL server at --pg, dropped at the end), fills it with
seeded cases by bulk Core inserts (1,000 users, 8 sections, a year of creation
and last-action times, 40 % of the cases closed or cancelled), ANALYZEs it (as
autovacuum would), and loads four timer rules and one event rule through the
real loader:

- "Copy to an expert after 2 days": open, created + 2d → a watcher, a history
  entry and a reminder mail to the responsible (rendered, queued in the outbox);
- "Call after a week": section Quality, created + 1w → priority high;
- "Remind pending": pending, last_action + 3d → reminder to the responsible;
- "Before the deadline": deadline - 1d → priority highest (no case has one: an
  empty indexed range, so its cost must be nil);
- "Gold first" (event rule, draft): never matches a sweep's change events.

The firing log is filled as a daemon that swept until mid-year would have
left it (every due rule and case fired once). Each run is one sweep in its own
transaction, timed from the session's start to the commit, one window apart in
simulated time so that every sweep has its own 0.1 % of the cases falling due.
The runs happen in a child process, so its peak RSS is the sweeps' (plus the
imports), not the bulk load's. Prints the median and worst seconds per sweep,
the firings per sweep, the baseline of a sweep with nothing due (its cost must
not grow with the number of cases) and the peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import secrets
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from bench_report import database
from benchdb import analyze, insert_users
from sqlalchemy import insert, select, update

from mailgated.app import App
from mailgated.config import Config
from mailgated.db import Database
from mailgated.models import Case, Rule, RuleFiring, Section
from mailgated.rules import loader, mail
from mailgated.rules.criteria import RuleData, compile_rule
from mailgated.rules.engine import RulesEngine

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=365)
USERS = 1000
SECTIONS = ["Support", "Quality", "Sales", "Billing", "Field", "Web", "Lab", "Legal"]
# state → share of the cases; 40 % are closed or cancelled and never candidates
STATES = {"open": 0.40, "pending": 0.10, "draft": 0.10, "closed": 0.30, "cancelled": 0.10}

RULES = """
[[rule]]
name = "Copy to an expert after 2 days"
sequence = 10
when = { state_from = "open", state_to = "open", trigger = "created", delay = "2d" }
then = { add_watchers = ["expert@example.com"], remind_responsible = true }

[[rule]]
name = "Call after a week"
sequence = 20
when = { section = "Quality", trigger = "created", delay = "1w" }
then = { priority = "high" }

[[rule]]
name = "Remind pending"
sequence = 30
when = { state_to = "pending", trigger = "last_action", delay = "3d" }
then = { remind_responsible = true }

[[rule]]
name = "Before the deadline"
sequence = 40
when = { trigger = "deadline", delay = "-1d" }
then = { priority = "highest" }

[[rule]]
name = "Gold first"
sequence = 50
when = { state_to = "draft", priority_min = "highest" }
then = { priority = "high" }
"""

# the share of all cases falling due per unit of trigger time, by the rules above:
# open (created), active in Quality (created), pending (last_action)
DUE_SHARE = STATES["open"] + (1 - STATES["closed"] - STATES["cancelled"]) / 8 + STATES["pending"]


def window(fraction: float) -> dt.timedelta:
    """The stretch of simulated time in which `fraction` of all cases fall due."""
    return SPAN * (fraction / DUE_SHARE)


def fill(db: Database, n: int, seed: int = 5) -> None:
    """Users, sections, then n cases in batches of 50,000."""
    rng = random.Random(seed)
    with db.engine.begin() as conn:
        insert_users(conn, USERS)
        conn.execute(
            insert(Section),
            [{"name": name, "email": f"{name.lower()}@example.com"} for name in SECTIONS],
        )
    states, weights = list(STATES), list(STATES.values())
    batch: list[dict[str, Any]] = []
    for i in range(n):
        batch.append(_case(rng, rng.choices(states, weights)[0]))
        if len(batch) == 50_000 or i == n - 1:
            with db.engine.begin() as conn:
                conn.execute(insert(Case), batch)
            batch = []


def _case(rng: random.Random, state: str) -> dict[str, Any]:
    created = START + SPAN * rng.random()
    # last actions spread over the same year, independently of creation (as after a long run)
    last = START + SPAN * rng.random()
    return {
        "subject": f"bench case {rng.randrange(10**6)}",
        "description": "",
        "section_id": rng.randint(1, len(SECTIONS)),
        "priority": 3,
        "user_id": rng.randint(1, USERS),
        "state": state,
        "created_at": created,
        "updated_at": max(created, last),
        "last_action_at": last,
        "closed_at": last if state == "closed" else None,
        "message_count": 0,
    }


def load(url: str, n: int) -> None:
    db = Database(url)
    db.upgrade()
    start = time.perf_counter()
    fill(db, n)
    config = Config()
    templates = mail.environment(config.outbound)
    with db.session() as session:
        specs = loader.validate(
            session, tomllib.loads(RULES), lambda name: mail.template_problem(templates, name)
        )
        loader.store(session, specs)
    fired = past_firings(db, START + SPAN / 2)
    analyze(db)
    took = time.perf_counter() - start
    print(
        f"{db.engine.dialect.name}: {n:,} cases and {fired:,} past firings loaded in {took:.1f} s",
        flush=True,
    )
    db.dispose()


def past_firings(db: Database, until: dt.datetime) -> int:
    """The firing log of a daemon that has swept until `until`: every due (rule, case) fired.

    Without it the first sweeps' actions would make old, never-fired cases
    catch up on the other rules (the event path) and inflate the figures.
    """
    engine = App(Config()).rules
    total = 0
    with db.session() as session:
        for rule in session.scalars(select(Rule).where(Rule.trigger.is_not(None))):
            compiled = compile_rule(session, RuleData.of(rule))
            due = engine._due(session, compiled, None, until)
            rows = [
                {"rule_id": rule.id, "case_id": c, "due_at": t, "fired_at": t}
                for c, t in due.items()
            ]
            for start in range(0, len(rows), 50_000):
                session.execute(insert(RuleFiring), rows[start : start + 50_000])
            total += len(rows)
        session.execute(update(Rule).where(Rule.trigger.is_not(None)).values(swept_at=until))
    return total


def measure(url: str, n: int, runs: int) -> None:
    """The child: `runs` sweeps, one window apart, each its own transaction; then as many
    sweeps with nothing due (the baseline: what a sweep costs whatever the number of cases)."""
    db = Database(url)
    engine = App(Config(), secret=secrets.token_bytes(32)).rules
    step = window(0.001)
    first = START + SPAN / 2
    times, counts, idle = [], [], []
    for run in range(1, runs + 1):
        times.append(timed_sweep(db, engine, first + run * step, counts))
    last = first + runs * step
    for run in range(1, runs + 1):  # a second apart: nothing falls due
        idle.append(timed_sweep(db, engine, last + dt.timedelta(seconds=run), []))
    busy, empty = statistics.median(times), statistics.median(idle)
    print(
        f"  {db.engine.dialect.name} {n:>9,} cases: sweep median {busy:.3f} s"
        f"   worst {max(times):.3f} s   ({runs} runs; firings per sweep median"
        f" {statistics.median(counts):.0f} = {statistics.median(counts) / n:.2%} of the cases)\n"
        f"    baseline, a sweep with nothing due: median {empty:.3f} s"
        f" (the sweep with 0.1 % due: {busy / empty:.0f}x)   peak RSS {peak_rss_mib():.0f} MiB",
        flush=True,
    )
    db.dispose()


def timed_sweep(db: Database, engine: RulesEngine, now: dt.datetime, counts: list[int]) -> float:
    start = time.perf_counter()
    with db.session() as session:
        counts.append(len(engine.sweep(session, now)))
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM belongs to the process image, while ru_maxrss survives
    exec and would report the parent's bulk load for a child started by fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="cases (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL (a fresh database)")
    parser.add_argument("--keep", metavar="DIR", help="directory for the SQLite file")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [100_000, 1_000_000]
    if args.measure:
        measure(args.measure, sizes[0], args.runs)
        return
    for n in sizes:
        with database(args.pg, args.keep) as url:
            load(url, n)
            child = [sys.executable, str(Path(__file__).resolve()), "--measure", url]
            subprocess.run([*child, "-n", str(n), "--runs", str(args.runs)], check=True)


if __name__ == "__main__":
    main()
