"""Messages per second from spool to cases and queued mail, with a parse-and-insert baseline.

    .venv/bin/python bench/bench_process.py [-n 1000] [--runs 3] [--corpus DIR] [--profile]
                                            [--partners N] [--pg URL]

The corpus is `../shared/bench/gen_corpus.py OUT -n N --seed 1 --tag-format '[{id}]'`
(about 70 % new requests, 30 % replies from partners and staff, tagged `[ID]`,
threaded with In-Reply-To/References). Each run starts from a fresh SQLite database
(WAL, synchronous=FULL, as in production) holding the section and its staff, spools
the whole corpus (not timed), then times the processing worker draining the spool:
parse, classify, route, match, apply, store the raw message, queue the outbound mail,
commit, clear the spool files away. Prints the median messages/s over the runs, the
baseline measured in the same command — each message parsed with `policy.default`
and one row inserted, committed per message — the ratio, and the peak RSS.
CPU milliseconds per message (process time) are printed too: on a shared, loaded machine
they are the steadier figure. `--profile` adds a cProfile summary of one more run.
"""

from __future__ import annotations

import argparse
import cProfile
import email
import io
import logging
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from pathlib import Path

from sqlalchemy import func, insert, make_url, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdb import on_server  # noqa: E402
from corpus import corpus_messages  # noqa: E402

from mailgated.app import App  # noqa: E402
from mailgated.config import (  # noqa: E402
    Config,
    OutboundConfig,
    ProcessingConfig,
    SecurityConfig,
    SpoolConfig,
)
from mailgated.db import Database  # noqa: E402
from mailgated.directory import Directory  # noqa: E402
from mailgated.intake.identity import content_hash  # noqa: E402
from mailgated.intake.spool import Envelope  # noqa: E402
from mailgated.models import Case, Contact, History, Outbox, Partner, StoredMessage  # noqa: E402

SECTION = "support@example.com"
STAFF = ["anna.berg", "tom.rider", "juergen.vogt", "olga.petrova", "sam.lee", "nina.hagen"]
SECRET = b"bench-secret-bench-secret-bench-secret"


class Target:
    """Where runs happen: a copied SQLite file, or a PostgreSQL database made from a template."""

    def __init__(self, where: Path, pg: str | None, partners: int = 0) -> None:
        self.where, self.pg, self.count = where, pg, 0
        self.template = self._url("template")
        if pg:
            self._create(self.template_name)
        db = Database(self.template)
        db.upgrade()
        fill_directory(db, partners)
        db.dispose()

    @property
    def template_name(self) -> str:
        return f"mg_bench_{os.getpid()}_template"

    def _url(self, name: str) -> str:
        if self.pg is None:
            return f"sqlite:///{self.where / (name + '.db')}"
        base = make_url(self.pg)
        return base.set(database=f"mg_bench_{os.getpid()}_{name}").render_as_string(False)

    def _admin(self, statement: str) -> None:
        assert self.pg is not None
        on_server(self.pg, statement)

    def _create(self, name: str, template: str | None = None) -> None:
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    @contextmanager
    def fresh(self) -> Iterator[Database]:
        """A database holding only the directory, dropped (or deleted) afterwards."""
        self.count += 1
        url = self._url(f"run{self.count}")
        name = make_url(url).database or ""
        if self.pg:
            self._create(name, self.template_name)
        else:
            shutil.copy(self.where / "template.db", name)
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()
            if self.pg:
                self._admin(f'DROP DATABASE IF EXISTS "{name}"')
            else:
                Path(name).unlink(missing_ok=True)

    def close(self) -> None:
        if self.pg:
            self._admin(f'DROP DATABASE IF EXISTS "{self.template_name}"')


def fill_directory(db: Database, partners: int = 0) -> None:
    """The section and its staff; and `partners` partners, each with an address and a
    contact (none of them writes in the corpus: every sender is looked up and not found)."""
    with db.session() as session:
        d = Directory(session)
        d.add_user("boss", "Support Boss", "boss@example.com")
        for login in STAFF:
            d.add_user(login, login.replace(".", " ").title(), f"{login}@example.com")
        d.add_section("Support", email=SECTION, manager="boss")
        if partners:
            session.execute(
                insert(Partner),
                [{"name": f"Partner {i}", "email": f"info@p{i}.example"} for i in range(partners)],
            )
            ids = session.scalars(select(Partner.id).order_by(Partner.id)).all()
            session.execute(
                insert(Contact),
                [{"partner_id": p, "name": "Office", "email": f"office@p{p}.example"} for p in ids],
            )


def spooled(where: Path, db: Database, messages: list[bytes], batch: int = 50) -> App:
    """The pieces of a processing worker on `db`, its spool and secret under `where`, with
    `messages` spooled to the section (not processed yet)."""
    config = Config(
        spool=SpoolConfig(path=str(where / "spool")),
        security=SecurityConfig(secret_file=str(where / "secret.key")),
        outbound=OutboundConfig(site_id="bench"),
        processing=ProcessingConfig(batch_size=batch),
    )
    app = App(config, db=db, secret=SECRET)
    for raw in messages:
        app.spool.put(raw, Envelope("import:bench", None, [SECTION]))
    return app


def run_gateway(
    messages: list[bytes], target: Target, profile: bool = False, batch: int = 50
) -> tuple[float, float]:
    """Wall and CPU seconds to process every message from the spool; checks that all were
    recorded."""
    with tempfile.TemporaryDirectory() as tmp, target.fresh() as db:
        processor = spooled(Path(tmp), db, messages, batch).processor
        profiler = cProfile.Profile() if profile else None
        start, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        done = processor.drain()
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        with db.session() as session:
            stored = session.scalar(select(func.count()).select_from(StoredMessage))
            cases = session.scalar(select(func.count()).select_from(Case))
            queued = session.scalar(select(func.count()).select_from(Outbox))
            history = session.scalar(select(func.count()).select_from(History))
        if done != len(messages) or stored != len(messages):
            sys.exit(f"processed {done}, stored {stored} of {len(messages)}: see the log")
        if profiler:
            print_profile(profiler)
        else:
            print(
                f"  run: {len(messages) / elapsed:7.1f} msg/s, {cpu * 1000 / len(messages):.2f} CPU"
                f" ms/msg  ({cases} cases, {history} history entries, {queued} mails queued)"
            )
        return elapsed, cpu


def run_baseline(messages: list[bytes], target: Target) -> tuple[float, float]:
    """Parse each message with policy.default, insert one row, commit per message: wall and
    CPU seconds."""
    with target.fresh() as db:
        start, cpu = time.perf_counter(), time.process_time()
        for raw in messages:
            message = email.message_from_bytes(raw, policy=policy.default)
            with db.session() as session:
                session.execute(
                    insert(StoredMessage).values(
                        message_id=str(message["Message-ID"] or ""),
                        content_hash=content_hash(raw),
                        sender=str(message["From"] or ""),
                        subject=str(message["Subject"] or ""),
                        raw=raw,
                    )
                )
        return time.perf_counter() - start, time.process_time() - cpu


def print_profile(profiler: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="messages in the corpus")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each (median reported)")
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: a cached temp dir)")
    ap.add_argument(
        "--batch", type=int, default=50, help="[processing] batch_size (the daemon's default: 50)"
    )
    ap.add_argument(
        "--partners", type=int, default=0, help="partners (with a contact each) in the directory"
    )
    ap.add_argument("--profile", action="store_true", help="also print a cProfile summary")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL server URL: run there, not on SQLite")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    messages = corpus_messages(args.n, args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(Path(tmp), args.pg, args.partners)
        try:
            gateway, baseline = [], []
            for _ in range(args.runs):  # interleaved, so both see the same machine load
                gateway.append(run_gateway(messages, target, batch=args.batch))
                baseline.append(run_baseline(messages, target))
            load = os.getloadavg()[0]
            if args.profile:
                run_gateway(messages, target, profile=True, batch=args.batch)
        finally:
            target.close()
    n = len(messages)
    rate = n / statistics.median(w for w, _ in gateway)
    base = n / statistics.median(w for w, _ in baseline)
    cpu = statistics.median(c for _, c in gateway) * 1000 / n
    base_cpu = statistics.median(c for _, c in baseline) * 1000 / n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = "PostgreSQL" if args.pg else "SQLite"
    directory = f", {args.partners} partners" if args.partners else ""
    print(
        f"processing {n} messages, spool → cases + queued mail ({engine}{directory}),"
        f" {args.runs} runs:"
    )
    print(f"  gateway   median {rate:7.1f} msg/s, {cpu:6.2f} CPU ms/msg")
    print(
        f"  baseline  median {base:7.1f} msg/s, {base_cpu:6.2f} CPU ms/msg"
        "  (policy.default parse + one row, commit each)"
    )
    print(f"  ratio gateway / baseline: {rate / base:.2f} (wall), {base_cpu / cpu:.2f} (CPU)")
    print(f"  load average after the runs: {load:.1f} (the machine is shared)")
    print(f"  peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
