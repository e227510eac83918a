"""End to end: mail in over SMTP to mail out at the relay, against a running `mailgated run`.

    .venv/bin/python bench/bench_e2e.py [-n 1000] [--connections 4] [--rate R] [--pg URL]
                                        [--workers N] [--corpus DIR] [--keep]

Starts the real daemon (`python -m mailgated --config … run`, a subprocess) with its
SMTP listener on a free port and its relay pointed at an SMTP sink in this process,
on a fresh database holding one section (support@example.com) with six staff users.
The runs share one spool folder, as a daemon restarted on the same machine does: the
first run starts on an empty spool, each later one with the files the run before it kept
for reuse (`free/`; see docs/architecture.md), the steady state of a daemon that has run.
Sends the seeded corpus (`../shared/bench/gen_corpus.py OUT -n N --seed 1 --tag-format
'[{id}]'`) over `--connections` SMTP sessions, each message as MAIL, RCPT, DATA, once
the daemon has said READY=1 on the $NOTIFY_SOCKET given to it (its workers are running).

Prints:
  * accept rate (messages / seconds from the first MAIL to the last 250) and the
    DATA → 250 latency p50/p99 (the end of data until the listener's reply);
  * stored: seconds from the first mail sent until every message is recorded, and how
    many were recorded when the last one was accepted (one count then: processing kept
    pace with intake, or was left a backlog);
  * end to end: seconds from the first mail sent until every queued outbound mail
    reached the sink, and that as messages/s;
  * the floor measured in the same run on the same corpus and engine (parse with
    policy.default + one row, commit per message) and each rate as a ratio to it;
  * the daemon's peak memory, all its processes together (sampled every 50 ms): the sum
    of their RSS and of their PSS (shared pages counted once), and each process's RSS/PSS
    at the PSS peak (daemon, forkserver, tracker, worker); PSS is read from smaps_rollup,
    which costs the kernel a walk of the page tables, when the RSS has grown by a MiB over
    its peak and every 0.5 s;
  * CPU milliseconds per message, from the first mail sent to the end: the daemon's own
    process, its children (the workers), and this benchmark (client, sink, polling) — on
    two cores, their sum bounds the rate.
It checks that nothing was lost (every message stored; every outbox row sent) and that
nothing was sent twice (Message-IDs at the sink) and exits non-zero otherwise.
Its own work is kept small, since it shares the cores with the daemon: the relay sink is
aiosmtpd (`--sink aiosmtpd`, the default, as issue 15 asks) or a minimal SMTP server
(`--sink minimal`, several times cheaper per mail), the sampler lists /proc for the
daemon's processes once a second and reads their RSS from statm in between, and the
database is polled with one statement every 20 ms once the sending is done.
`BENCH_WRAP="py-spy record -f raw -o OUT --subprocesses --"` puts a profiler in front of the
daemon's command (stopped with SIGINT, so that it writes its output).
`--rate R` paces the sending at R messages/s (spread over the connections), to
measure accept latency under a steady load rather than at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_process import Target, run_baseline  # noqa: E402
from corpus import corpus_messages  # noqa: E402

from mailgated.db import Database  # noqa: E402
from mailgated.intake.smtp import QuickSMTP  # noqa: E402
from mailgated.models import Outbox, StoredMessage  # noqa: E402

SECTION = "support@example.com"
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class Sink:
    """The relay: accepts every mail and remembers each one's Message-ID. A minimal SMTP
    server on its own event loop in a thread of this process (the benchmark's share of
    the two cores: aiosmtpd cost it several times as much per mail). It answers what a
    relay answers — EHLO with 8BITMIME and SMTPUTF8, 250 to MAIL, RCPT, RSET, NOOP, 354
    then 250 to DATA, 221 to QUIT — and counts a mail once its data ends with
    <CR><LF>.<CR><LF>, before its 250 goes out."""

    def __init__(self) -> None:
        self.ids: Counter[bytes] = Counter()
        self.count = 0
        self.last = 0.0
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None

    def start(self, port: int) -> None:
        self.thread.start()
        serving = self.loop.create_server(lambda: _SinkSession(self), "127.0.0.1", port)
        self.server = asyncio.run_coroutine_threadsafe(serving, self.loop).result(10)

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def received(self, content: bytes) -> None:
        head = content.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(head)
        with self.lock:
            self.ids[found.group(1) if found else b""] += 1
            self.count += 1
            self.last = time.perf_counter()


class AiosmtpdSink(Sink):
    """The relay as issue 15 describes it (the default): an aiosmtpd server (the daemon's
    own `QuickSMTP` flavour of it) in a thread, which hands each mail to `Sink.received`."""

    def __init__(self) -> None:
        super().__init__()
        self.controller: Controller | None = None

    def start(self, port: int) -> None:
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.received(bytes(envelope.original_content or envelope.content))
                return "250 2.0.0 queued"

        class Quick(Controller):
            def factory(self) -> QuickSMTP:
                return QuickSMTP(self.handler, **self.SMTP_kwargs)

        self.controller = Quick(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


class _SinkSession(asyncio.Protocol):
    """One SMTP session of the sink (see `Sink`)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies = []
        while True:
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):
                    end, skip = 0, 3  # an empty message
                else:
                    end = self.buffer.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    end, skip = end + 2, 3
                self.sink.received(bytes(self.buffer[:end]))
                del self.buffer[: end + skip]
                self.in_data = False
                replies.append(b"250 2.0.0 queued\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb = bytes(self.buffer[:4]).upper()
            del self.buffer[: line_end + 2]
            if verb == b"EHLO":
                replies.append(b"250-sink.bench\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"DATA":
                self.in_data = True
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                replies.append(b"250 2.0.0 OK\r\n")
            else:
                replies.append(b"500 5.5.2 command not recognized\r\n")
        if replies:
            self.transport.write(b"".join(replies))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    where: Path,
    db_url: str,
    smtp_port: int,
    relay_port: int,
    *,
    site: str = "bench",
    hostname: str = "mx.bench",
    outbound: str = "",
    security: str = "",
    processing: str = "",
    spool: Path | None = None,
) -> Path:
    """The daemon's config, everything under `where` (the spool too, unless given);
    `outbound`, `security` and `processing` are more lines of those sections (torture.py
    shares it)."""
    config = where / "mailgated.toml"
    config.write_text(
        f"""[database]
url = "{db_url}"
[listen]
smtp = "127.0.0.1:{smtp_port}"
hostname = "{hostname}"
[outbound]
relay = "127.0.0.1:{relay_port}"
site_id = "{site}"
first_retry = 1.0
{outbound}[spool]
path = "{spool or where / "spool"}"
[security]
secret_file = "{where / "secret.key"}"
{security}[rules]
sweep_interval = 0
[processing]
poll_interval = 0.05
{processing}"""
    )
    return config


def stop(proc: subprocess.Popen[bytes], interrupt_group: bool = False) -> None:
    """Stop the daemon (its whole process group with SIGINT: a profiler in front of it writes
    its output then), killing it after 30 s."""
    if interrupt_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def process_role(pid: int, root: int, parent: str) -> str:
    """What a process of the daemon is, from its parent's role and its command line (a
    forked child shares its parent's)."""
    if pid == root:
        return "daemon"
    if parent == "forkserver":
        return "worker"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return "gone"
    for marker, role in ((b"forkserver", "forkserver"), (b"resource_tracker", "tracker")):
        if marker in cmdline:
            return role
    return "worker"


def daemon_processes(root: int) -> list[tuple[int, str]]:
    """A process and all its descendants with their roles (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found = []
    todo = [(root, "")]
    while todo:
        pid, parent = todo.pop()
        role = process_role(pid, root, parent)
        todo.extend((child, role) for child in children.get(pid, []))
        found.append((pid, role))
    return found


def memory(processes: list[tuple[int, str]]) -> tuple[float, float, list[tuple[str, float, float]]]:
    """Resident memory of the processes, in MiB: the sum of their RSS (pages shared by
    forked processes counted in each) and of their PSS (shared pages divided among the
    processes that share them: what the processes cost together), and each process's
    (role, RSS, PSS)."""
    each = []
    for pid, role in processes:
        rss = pss = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
        each.append((role, rss / 1024, pss / 1024))
    return sum(e[1] for e in each), sum(e[2] for e in each), sorted(each)


def rss_mib(root: int) -> tuple[float, float, list[tuple[str, float, float]]]:
    """`memory` of a process and all its descendants."""
    return memory(daemon_processes(root))


PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


def resident_mib(processes: list[tuple[int, str]]) -> float:
    """The sum of the processes' RSS in MiB, from statm (cheap: no page-table walk)."""
    total = 0
    for pid, _ in processes:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total * PAGE_MIB


class Sampler(threading.Thread):
    """The peak memory of the daemon's processes, sampled every 50 ms: /proc is listed for
    them once a second, their RSS read from statm each time, and their RSS and PSS from
    smaps_rollup when the RSS has grown by a MiB over its peak and every 0.5 s (each
    process's at the PSS peak)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak = [0.0, 0.0]  # RSS, PSS
        self.at_peak: list[tuple[str, float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        processes: list[tuple[int, str]] = []
        listed = full = top = 0.0
        while not self.stopping.wait(0.05):
            now = time.monotonic()
            if now - listed >= 1.0:
                processes, listed = daemon_processes(self.root), now
            rss = resident_mib(processes)
            if rss > top + 1.0 or now - full >= 0.5:  # a new peak (by a MiB), or a while
                top, full = max(top, rss), now
                rss, pss, each = memory(processes)
                if pss > self.peak[1]:
                    self.peak[1], self.at_peak = pss, each
            self.peak[0] = max(self.peak[0], rss)


def cpu_seconds(root: int) -> tuple[float, float]:
    """CPU seconds (user + system) so far of a process and of all its descendants:
    (the root itself, its descendants together)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    below = 0.0
    for pid in used:
        up = parents.get(pid)
        while up is not None and up != root and up > 1:
            up = parents.get(up)
        if up == root and pid != root:
            below += used[pid]
    return used.get(root, 0.0), below


def notify_socket(where: Path) -> socket.socket:
    """A $NOTIFY_SOCKET, as systemd gives a Type=notify service: the daemon says READY=1
    there once every service runs, its processing workers included."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(where / "notify.sock"))
    sock.settimeout(0.2)
    return sock


def wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the daemon says READY=1: timing starts on a daemon that runs, not while its
    workers are still importing their code (about a second; before, the benchmark sent as
    soon as the listener answered and counted that second as processing time)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mailgated run exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if "READY=1" in sock.recv(65536).decode().split("\n"):
                return
        except TimeoutError:
            pass
    sys.exit("mailgated run was not ready within 60 s")


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mailgated run exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=1) as s:
                s.noop()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("mailgated run did not listen within 60 s")


def send_all(
    messages: list[bytes], port: int, connections: int, rate: float | None
) -> tuple[float, float, list[float]]:
    """Send every message; returns (first send, last 250) perf_counter times and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    start = time.perf_counter() + 0.05

    def worker(index: int) -> None:
        mine: list[float] = []
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                s.ehlo("bench.example")
                for i in range(index, len(messages), connections):
                    if rate:
                        delay = start + i / rate - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    s.mail("partner@bench.example")
                    s.rcpt(SECTION)
                    began = time.perf_counter()
                    code, reply = s.data(messages[i])
                    mine.append(time.perf_counter() - began)
                    if code != 250:
                        errors.append(f"{code} {reply!r}")
        except (OSError, smtplib.SMTPException) as e:
            errors.append(repr(e))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    while time.perf_counter() < start:
        time.sleep(0.001)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.perf_counter()
    if errors:
        sys.exit(f"{len(errors)} send errors, first: {errors[0]}")
    return start, end, latencies


COUNTS = select(
    select(func.count()).select_from(StoredMessage).scalar_subquery(),
    select(func.count()).select_from(Outbox).scalar_subquery(),
    select(func.count()).select_from(Outbox).where(Outbox.state != "sent").scalar_subquery(),
)


def counts(db: Database) -> tuple[int, int, int]:
    """Messages stored, outbox rows, outbox rows not yet sent: one statement."""
    with db.engine.connect() as conn:
        stored, total, pending = conn.execute(COUNTS).one()
    return int(stored), int(total), int(pending)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run(args: argparse.Namespace, messages: list[bytes], target: Target, where: Path) -> dict:
    sink = Sink() if args.sink == "minimal" else AiosmtpdSink()
    relay_port, smtp_port = free_port(), free_port()
    sink.start(relay_port)
    with target.fresh() as db:
        url = db.engine.url.render_as_string(hide_password=False)
        config = write_config(
            where,
            url,
            smtp_port,
            relay_port,
            outbound="auto_reply_limit = 1000000\n",
            processing=(f"workers = {args.workers}\n" if args.workers else "")
            + (f"nice = {args.nice}\n" if args.nice is not None else ""),
            spool=where.parent / "spool",  # shared by the runs, as a restarted daemon keeps it
        )
        log = where / "daemon.log"
        notify = notify_socket(where)
        env = dict(os.environ, PYTHONUNBUFFERED="1", NOTIFY_SOCKET=str(where / "notify.sock"))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                os.environ.get("BENCH_WRAP", "").split()
                + [sys.executable, "-m", "mailgated", "--config", str(config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        sampler = Sampler(proc.pid)
        try:
            wait_ready(notify, proc, log)
            sampler.start()
            cpu_before = cpu_seconds(proc.pid)
            own_before = time.process_time()
            first, last, latencies = send_all(messages, smtp_port, args.connections, args.rate)
            stored_by_last = counts(db)[0]  # processed while the corpus came in
            stored_at = done_at = None
            deadline = time.perf_counter() + args.timeout
            while time.perf_counter() < deadline:
                stored, total, pending = counts(db)
                now = time.perf_counter()
                if stored_at is None and stored >= len(messages):
                    stored_at = now
                if stored_at is not None and pending == 0 and sink.count >= total:
                    done_at = max(sink.last, stored_at)
                    break
                if proc.poll() is not None:
                    sys.exit(f"mailgated run died:\n{log.read_text()[-3000:]}")
                time.sleep(0.02)
            stored, total, pending = counts(db)
            cpu_after = cpu_seconds(proc.pid)
            own = time.process_time() - own_before
        finally:
            sampler.stopping.set()
            stop(proc, interrupt_group=bool(os.environ.get("BENCH_WRAP")))
            sink.stop()
            notify.close()
        twice = sum(1 for n in sink.ids.values() if n > 1)
        if done_at is None or stored_at is None:
            sys.exit(
                f"not finished in {args.timeout} s: stored {stored}/{len(messages)}, "
                f"outbox {total} with {pending} unsent, sink {sink.count}; log: {log}"
            )
        if twice or stored != len(messages):
            sys.exit(f"lost or duplicated: stored {stored}, {twice} Message-IDs twice at the sink")
        tracebacks = log.read_text(errors="replace").count("Traceback")
        return {
            "accept": len(messages) / (last - first),
            "p50": pct(latencies, 0.50),
            "p99": pct(latencies, 0.99),
            "stored": stored_at - first,
            "stored_by_last": stored_by_last,
            "accepted": last - first,
            "e2e": done_at - first,
            "mails": total,
            "rss": sampler.peak[0],
            "pss": sampler.peak[1],
            "each": ", ".join(f"{role} {rss:.0f}/{pss:.0f}" for role, rss, pss in sampler.at_peak),
            "tracebacks": tracebacks,
            "cpu_main": (cpu_after[0] - cpu_before[0]) / len(messages) * 1000,
            "cpu_children": (cpu_after[1] - cpu_before[1]) / len(messages) * 1000,
            "cpu_bench": own / len(messages) * 1000,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="messages in the corpus")
    ap.add_argument("--connections", type=int, default=4, help="parallel SMTP sessions")
    ap.add_argument("--rate", type=float, help="pace sending at this many messages/s")
    ap.add_argument("--runs", type=int, default=1, help="runs (medians reported)")
    ap.add_argument("--workers", type=int, default=0, help="[processing] workers (0: default)")
    ap.add_argument("--nice", type=int, help="[processing] nice (default: the daemon's, 10)")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL server URL: run there, not on SQLite")
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: a cached temp dir)")
    ap.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    ap.add_argument(
        "--sink",
        choices=("aiosmtpd", "minimal"),
        default="aiosmtpd",
        help="the relay: aiosmtpd (issue 15's) or a minimal server that costs the shared"
        " cores less",
    )
    args = ap.parse_args()
    messages = corpus_messages(args.n, args.corpus)
    results, floors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(Path(tmp), args.pg)
        try:
            for i in range(args.runs):  # interleaved, so both see the same machine load
                where = Path(tmp) / f"run{i}"
                where.mkdir()
                results.append(run(args, messages, target, where))
                floors.append(len(messages) / run_baseline(messages, target)[0])
        finally:
            target.close()
    med = {key: statistics.median(r[key] for r in results) for key in results[0] if key != "each"}
    floor = statistics.median(floors)
    n = len(messages)
    e2e_rate = n / med["e2e"]
    engine = "PostgreSQL" if args.pg else "SQLite"
    pace = f", paced at {args.rate:g} msg/s" if args.rate else ""
    load = os.getloadavg()[0]
    print(
        f"end to end, {n} messages over {args.connections} SMTP connections{pace} ({engine}), "
        f"{args.sink} relay sink, {args.runs} run(s), load {load:.2f}:"
    )
    print(f"  floor (parse + one row, commit each)  {floor:7.1f} msg/s")
    print(
        f"  SMTP accept    {med['accept']:7.1f} msg/s ({med['accept'] / floor:.2f}× floor)"
        f"  DATA→250 p50 {med['p50']:.1f} ms  p99 {med['p99']:.1f} ms"
    )
    print(
        f"  stored         {n / med['stored']:7.1f} msg/s (all {n} in {med['stored']:.1f} s;"
        f" {med['stored_by_last']:.0f} when the last was accepted, after {med['accepted']:.1f} s)"
    )
    print(
        f"  end to end     {e2e_rate:7.1f} msg/s ({e2e_rate / floor:.2f}× floor; "
        f"{med['mails']:.0f} mails at the relay after {med['e2e']:.1f} s)"
    )
    print(
        f"  CPU per message: daemon {med['cpu_main']:.2f} ms (listener, sender, timers),"
        f" its children {med['cpu_children']:.2f} ms (workers), this benchmark"
        f" {med['cpu_bench']:.2f} ms (client, relay sink, polling)"
    )
    print(
        f"  daemon peak memory, all processes: RSS {med['rss']:.0f} MiB, PSS {med['pss']:.0f} MiB;"
        f" tracebacks in log: {med['tracebacks']:.0f}"
    )
    for r, f in zip(results, floors, strict=True):
        print(
            f"    run: end to end {n / r['e2e']:6.1f} msg/s, floor {f:6.1f} msg/s"
            f" ({n / r['e2e'] / f:.2f}×), p99 {r['p99']:.1f} ms; at the PSS peak, RSS/PSS MiB:"
            f" {r['each']}"
        )


if __name__ == "__main__":
    main()
