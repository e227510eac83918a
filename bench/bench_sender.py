"""Mails per second from the outbox to a local relay, with a raw-aiosmtplib baseline.

    .venv/bin/python bench/bench_sender.py [-n 5000] [--runs 3] [--connections 4] [--pg URL]

Queues N mails (about 2 KB each, one recipient each, not timed) in a fresh
database (SQLite with WAL and synchronous=FULL as in production, or a new
PostgreSQL database on the server at --pg), then times the sender alone
(`Sender.run_once` until the queue is empty: batch claims, `--connections`
reused SMTP sessions, batched "sent" marks) delivering them to an aiosmtpd sink
that runs in its own process and accepts everything. The baseline, measured in
the same command against the same sink: the same mails sent with aiosmtplib's
`sendmail` one after another over one reused connection, with no database at
all; for scale, a fifth of them also with a connection per mail (what the
sender did before it kept sessions). Prints the median of each over the runs:
mails per second, and the CPU time this process spent per mail (all threads,
the database work included; less sensitive to a busy machine than the rate,
and 1e6 / it is what one core could do); the ratios of the sender to the
baseline; and checks that the sink got every mail of each sender run exactly
once (by Message-ID).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
from benchdb import on_server
from sqlalchemy import func, insert, make_url, select

from mailgated.config import OutboundConfig
from mailgated.db import Database
from mailgated.models import Outbox
from mailgated.outbound.sender import Sender

SINK = r"""
import asyncio, re, sys, threading
from aiosmtpd.controller import Controller

MID = re.compile(rb"^Message-ID:\s*(\S+)", re.I | re.M)
seen = []

class Handler:
    async def handle_DATA(self, server, session, envelope):
        found = MID.search(envelope.content)
        seen.append(found.group(1) if found else b"")
        return "250 2.0.0 queued"

controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]), decode_data=False)
controller.start()
print(sys.argv[1], flush=True)
for line in sys.stdin:  # "?": how many since the last question, how many distinct
    print(len(seen), len(set(seen)), flush=True)
    seen.clear()
controller.stop()
"""

BODY = (
    "Hello Pat,\n\nthank you for your message about the printer. We have opened a case for it\n"
    "and a colleague will come back to you shortly.\n\n" + "Lorem ipsum dolor sit amet. " * 60
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """The relay stand-in, in its own process so that it does not share our GIL."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SINK, str(free_port())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.port = int(self.proc.stdout.readline())

    def counts(self) -> tuple[int, int]:
        """Mails received since the last call, and how many distinct Message-IDs."""
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        total, distinct = self.proc.stdout.readline().split()
        return int(total), int(distinct)

    def cpu(self) -> float:
        """CPU seconds (user + system) the sink's process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def mails(n: int) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(n):
        message = EmailMessage()
        message["From"] = "Support <support@example.com>"
        message["To"] = f"partner{i}@partner.example"
        message["Subject"] = f"[{1000 + i}] Printer on fire"
        message["Message-ID"] = make_msgid(domain="example.com")
        message.set_content(BODY)
        out.append(("support@example.com", f"partner{i}@partner.example", message.as_bytes()))
    return out


class Target:
    """A fresh database per run: a SQLite file, or a new database on the PostgreSQL server."""

    def __init__(self, where: Path, pg: str | None) -> None:
        self.where, self.pg, self.count = where, pg, 0

    def fresh(self) -> tuple[Database, str]:
        self.count += 1
        name = f"mg_bench_sender_{os.getpid()}_{self.count}"
        if self.pg is None:
            url = f"sqlite:///{self.where / (name + '.db')}"
        else:
            self._admin(f'CREATE DATABASE "{name}"')
            url = make_url(self.pg).set(database=name).render_as_string(False)
        db = Database(url)
        db.upgrade()
        return db, name

    def drop(self, db: Database, name: str) -> None:
        db.dispose()
        if self.pg is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{name}"')

    def _admin(self, statement: str) -> None:
        assert self.pg is not None
        on_server(self.pg, statement)


def queue(db: Database, batch: list[tuple[str, str, bytes]]) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    rows = [
        {
            "message_id": make_msgid(domain="example.com"),
            "kind": "acknowledgement",
            "from_addr": frm,
            "to_addr": to,
            "recipients": [to],
            "subject": "bench",
            "raw": raw,
            "automatic": False,
            "state": "queued",
            "attempts": 0,
            "queued_at": now,
            "next_attempt_at": now,
        }
        for frm, to, raw in batch
    ]
    with db.session() as session:
        session.execute(insert(Outbox), rows)


@dataclass
class Timing:
    """Wall-clock seconds, and the CPU seconds this process used (every thread: the
    database work too; not the sink's, which runs in its own process)."""

    wall: float
    cpu: float


def timed(work: Coroutine[Any, Any, None]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(work)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


async def run_sender(db: Database, port: int, connections: int) -> None:
    config = OutboundConfig(relay=f"127.0.0.1:{port}", connections=connections, timeout=30)
    sender = Sender(db, config)
    while await sender.run_once():
        pass
    await sender.close_sessions()


async def run_per_mail(batch: list[tuple[str, str, bytes]], port: int) -> None:
    """One connection per mail (connect, EHLO, MAIL, RCPT, DATA, QUIT): the old sender's way."""
    for frm, to, raw in batch:
        await aiosmtplib.send(
            raw, sender=frm, recipients=[to], hostname="127.0.0.1", port=port, start_tls=False
        )


async def run_baseline(batch: list[tuple[str, str, bytes]], port: int) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    await smtp.connect()
    for frm, to, raw in batch:
        await smtp.sendmail(frm, [to], raw)
    await smtp.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="mails per run")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each (median reported)")
    ap.add_argument("--connections", type=int, default=4, help="[outbound] connections")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL server URL: run there, not on SQLite")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batch = mails(args.n)
    few = max(1, args.n // 5)
    sink = Sink()
    ours: list[Timing] = []
    base: list[Timing] = []
    per_mail: list[Timing] = []
    sink_cpu: list[float] = []  # the sink's CPU seconds in each sender run
    try:
        with tempfile.TemporaryDirectory() as tmp:
            target = Target(Path(tmp), args.pg)
            for run in range(args.runs):
                db, name = target.fresh()
                try:
                    queue(db, batch)
                    sink.counts()
                    before = sink.cpu()
                    ours.append(timed(run_sender(db, sink.port, args.connections)))
                    sink_cpu.append(sink.cpu() - before)
                    got, distinct = sink.counts()
                    with db.session() as session:
                        sent = session.scalar(
                            select(func.count()).select_from(Outbox).where(Outbox.state == "sent")
                        )
                finally:
                    target.drop(db, name)
                if sent != args.n or got != args.n or distinct != args.n:
                    sys.exit(f"run {run + 1}: {sent} marked sent, sink got {got} ({distinct} ids)")
                base.append(timed(run_baseline(batch, sink.port)))
                per_mail.append(timed(run_per_mail(batch[:few], sink.port)))
                sink.counts()
                print(
                    f"  run {run + 1}: sender {args.n / ours[-1].wall:7.0f} mails/s, baseline"
                    f" {args.n / base[-1].wall:7.0f}, a connection per mail"
                    f" {few / per_mail[-1].wall:7.0f}"
                )
    finally:
        sink.close()
    engine = "PostgreSQL" if args.pg else "SQLite"

    def rate(timings: list[Timing], n: int) -> float:
        return n / statistics.median(t.wall for t in timings)

    def cpu_us(timings: list[Timing], n: int) -> float:
        return 1e6 * statistics.median(t.cpu for t in timings) / n

    ours_rate, base_rate = rate(ours, args.n), rate(base, args.n)
    ours_cpu, base_cpu = cpu_us(ours, args.n), cpu_us(base, args.n)
    print(
        f"sender ({engine}, {args.connections} connections): {ours_rate:.0f} mails/s,"
        f" {ours_cpu:.0f} us CPU per mail (one core's ceiling {1e6 / ours_cpu:.0f} mails/s)\n"
        f"baseline (aiosmtplib sendmail, one reused connection, no database): "
        f"{base_rate:.0f} mails/s, {base_cpu:.0f} us CPU per mail\n"
        f"a connection per mail (aiosmtplib.send, no database; the old sender's way): "
        f"{rate(per_mail, few):.0f} mails/s, {cpu_us(per_mail, few):.0f} us CPU per mail\n"
        f"ratio: {ours_rate / base_rate:.2f}x the baseline's rate, {ours_cpu / base_cpu:.2f}x its"
        f" CPU per mail  ({args.n} mails of ~{len(batch[0][2])} bytes, median of {args.runs}"
        f" runs; load {os.getloadavg()[0]:.2f})"
    )
    sink_us = 1e6 * statistics.median(sink_cpu) / args.n
    print(
        f"the sink (aiosmtpd, its own process) during the sender's runs: {sink_us:.0f} us CPU"
        f" per mail, a core's ceiling of {1e6 / sink_us:.0f} mails/s (no sender outruns"
        " its relay)"
    )


if __name__ == "__main__":
    main()
