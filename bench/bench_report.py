"""Seconds per `mailgated report users` over 1,000,000 cases (target: ≤ 2 s on SQLite).

    .venv/bin/python bench/bench_report.py [-n 1000000] [--runs 5] [--pg URL] [--keep DIR]
                                           [--chart FILE.png]

Builds a fresh database by the migrations (a temporary SQLite file, or a
fresh database on the PostgreSQL server at --pg), fills it with seeded cases
by bulk Core inserts (20 users, a tree of 8 sections, 3 categories each, two
years of creation times crossing New Year, a third of them closed), then runs
the real command in-process — CLI parsing, SQL aggregation, formatting — and
prints the median and worst of --runs runs for `report users`, `report users
--by category` and `report sections`, each as a ratio to a baseline measured in
the same run (one ungrouped pass over all cases: count and sums), the process's
peak RSS and the machine's load average. --chart also draws the users chart.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import io
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchdb import analyze, insert_users
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from mailgated.db import Database
from mailgated.models import Case, Category, Section

STATES = ["draft", "open", "pending", "closed", "closed", "closed", "cancelled"]
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SPAN = 730 * 24 * 3600  # two years of creation times


def fill(db: Database, n: int, seed: int = 6) -> None:
    """Users, sections, categories, then n cases in batches of 50,000."""
    rng = random.Random(seed)
    with db.engine.begin() as conn:
        insert_users(conn, 20)
        for i in range(8):
            parent = None if i < 2 else (i % 2) + 1
            conn.execute(insert(Section).values(name=f"Section {i}", parent_id=parent))
        conn.execute(
            insert(Category),
            [
                {"section_id": s, "name": f"Cat {c}", "probability": 10.0 * c}
                for s in range(1, 9)
                for c in range(3)
            ],
        )
    batch: list[dict[str, Any]] = []
    for i in range(n):
        batch.append(_case(rng))
        if len(batch) == 50_000 or i == n - 1:
            with db.engine.begin() as conn:
                conn.execute(insert(Case), batch)
            batch = []


def _case(rng: random.Random) -> dict[str, Any]:
    created = START + dt.timedelta(seconds=rng.randrange(SPAN))
    state = rng.choice(STATES)
    section = rng.randint(1, 8)
    closed = (
        created + dt.timedelta(seconds=rng.randrange(3600, 30 * 86400))
        if state == "closed"
        else None
    )
    return {
        "subject": "bench case",
        "description": "",
        "section_id": section,
        "category_id": (section - 1) * 3 + rng.randrange(3) + 1 if rng.random() < 0.8 else None,
        "priority": 3,
        "user_id": rng.randint(1, 20) if rng.random() < 0.95 else None,
        "state": state,
        "created_at": created,
        "updated_at": created,
        "last_action_at": created,
        "closed_at": closed,
        "planned_revenue": float(rng.randrange(0, 20000, 100)),
        "planned_cost": float(rng.randrange(0, 5000, 50)),
        "probability": float(rng.choice([10, 20, 40, 60, 80, 100])),
        "message_count": 0,
    }


def run_cli(url: str, argv: list[str]) -> float:
    return run_cli_output(url, argv)[0]


def run_cli_output(url: str, argv: list[str]) -> tuple[float, str]:
    """Seconds for one in-process `mailgated ARGV`, and what it printed."""
    from mailgated.cli import main

    os.environ["MAILGATED_DATABASE_URL"] = url
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code:
                sys.exit(f"mailgated {' '.join(argv)} exited {exc.code}")
    return time.perf_counter() - start, out.getvalue()


def check_totals(url: str) -> None:
    """The report must have counted every case (a fast wrong answer is no result)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        count, revenue = conn.execute(
            text("SELECT count(*), sum(planned_revenue) FROM cases")
        ).one()
    engine.dispose()
    rows = list(
        csv.DictReader(io.StringIO(run_cli_output(url, ["report", "users", "--format", "csv"])[1]))
    )
    cases = sum(int(r["cases"]) for r in rows)
    total = sum(float(r["revenue"]) for r in rows)
    if cases != count or abs(total - float(revenue)) > 0.01 * len(rows):
        sys.exit(
            f"report users counted {cases} cases, {total} revenue; the table has {count}, {revenue}"
        )
    print(f"  checked: {len(rows):,} rows of report users add up to all {count:,} cases")


BASELINE = "SELECT count(*), sum(planned_revenue), sum(planned_cost) FROM cases"


def run_baseline(url: str) -> float:
    """One pass over every case with no grouping: the least any report could cost."""
    engine = create_engine(url)
    start = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text(BASELINE)).one()
    took = time.perf_counter() - start
    engine.dispose()
    return took


def measure(url: str, argv: list[str], runs: int, baseline: float) -> None:
    times = [run_cli(url, argv) for _ in range(runs)]
    median = statistics.median(times)
    print(
        f"  mailgated {' '.join(argv):<36} median {median:.3f} s"
        f"   worst {max(times):.3f} s   {median / baseline:.1f}× baseline   ({runs} runs)"
    )


@contextlib.contextmanager
def database(pg: str | None, keep: str | None) -> Any:
    """A migrated, empty database URL: a temporary SQLite file, or a fresh PG database."""
    if pg is None:
        with tempfile.TemporaryDirectory(dir=keep) as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    url = make_url(pg).set(drivername="postgresql+psycopg")
    name = f"mailgated_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure_all(url: str, runs: int, chart: str | None) -> None:
    """Time every report against a plain scan, then print this process's peak RSS."""
    run_baseline(url)  # warm the cache like the reports' first run
    baseline = statistics.median(run_baseline(url) for _ in range(runs))
    print(f"  baseline (one ungrouped scan: {BASELINE})\n{'':48}median {baseline:.3f} s")
    for argv in (
        ["report", "users", "--format", "csv"],
        ["report", "users"],
        ["report", "users", "--by", "category"],
        ["report", "sections"],
    ):
        measure(url, argv, runs, baseline)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  peak RSS of the reporting process {peak / 1024:.0f} MiB")
    check_totals(url)
    if chart:  # after the RSS figure: matplotlib's own memory is not the report's
        took = run_cli(url, ["report", "users", "--format", "csv", "--chart", chart])
        print(f"  report users --chart {chart}: {took:.3f} s (one run, with matplotlib's import)")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="number of cases")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL (a fresh database)")
    parser.add_argument("--keep", metavar="DIR", help="directory for the SQLite file")
    parser.add_argument("--chart", metavar="FILE", help="also draw `report users --chart FILE`")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child: only the reports, so its RSS is theirs
        measure_all(args.measure, args.runs, args.chart)
        return
    with database(args.pg, args.keep) as url:
        load(url, args.n)
        print(f"  load average before measuring (1, 5, 15 min): {load_average()}", flush=True)
        child = [sys.executable, __file__, "--measure", url, "--runs", str(args.runs)]
        if args.chart:
            child += ["--chart", str(Path(args.chart).resolve())]
        subprocess.run(child, check=True)
        print(f"  load average after: {load_average()}")


def load(url: str, n: int) -> None:
    db = Database(url)
    db.upgrade()
    start = time.perf_counter()
    fill(db, n)
    analyze(db, "cases")
    db.dispose()
    took = time.perf_counter() - start
    print(f"{db.engine.dialect.name}: {n:,} cases loaded in {took:.1f} s", flush=True)


if __name__ == "__main__":
    main()
