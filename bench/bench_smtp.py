"""SMTP accept rate: messages per second through the real listener, spooled and fsynced.

    .venv/bin/python bench/bench_smtp.py [-n 1000] [--connections 4] [--corpus DIR]

The listener (aiosmtpd on one asyncio loop, spool writes in worker threads,
exactly as in `mailgated run`) runs in its own process on an ephemeral
loopback port with a temporary spool; the client is smtplib, one thread per
connection, sending the shared corpus (gen_corpus.py --seed 1) to a section
address. A message counts once its `250` (after the spool rename) arrives. Also prints
the CPU time the listener's process spent per message (all its threads: the SMTP
dialogue, the spool writes and their fsyncs), user and system apart, the steadier figure
on a shared machine. Two runs, each on a fresh spool in the state a running daemon's
workers leave it: every message in a new file, just after as many done files were
deleted (the way before 2026-12-06), then every message in a file kept for reuse (free/
holding a processed message's file per message, as processing now leaves them, the
message written over it in place; see `FreeFiles` in mailgated/intake/spool.py). On
ext4 without a journal, each new file costs the kernel a walk past the inodes freed in
the last minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import corpus_messages  # noqa: E402


def serve(spool_dir: str, conn: Connection) -> None:
    from mailgated.config import ListenConfig
    from mailgated.intake.addresses import SectionAddresses
    from mailgated.intake.smtp import IntakeHandler, Listener
    from mailgated.intake.spool import Spool

    async def main() -> None:
        book = SectionAddresses(lambda: {"support@example.com": "Support"})
        await book.refresh()
        handler = IntakeHandler(Spool(spool_dir), book, "smtp")
        listener = Listener("smtp", "127.0.0.1:0", handler, ListenConfig(hostname="bench"))
        await listener.start()
        conn.send(listener.port)
        conn.recv()  # the clients start: CPU time is counted from here
        began = os.times()
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        ended = os.times()
        conn.send((ended.user - began.user, ended.system - began.system))
        await listener.stop()

    asyncio.run(main())


def send_all(port: int, messages: list[bytes], latencies: list[float]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for raw in messages:
            start = time.perf_counter()
            smtp.sendmail("customer@example.org", ["support@example.com"], raw)
            latencies.append(time.perf_counter() - start)


def measure(
    messages: list[bytes], connections: int, reuse: bool
) -> tuple[float, list[float], float, float, int]:
    """One run on a fresh spool, as a running daemon's workers leave it: with `reuse`, free/
    holds a processed message's file per message (`FreeFiles`); without, as many files
    were just deleted (done files, deleted the old way). Returns seconds, latencies, the
    listener's user and system CPU seconds, and how many messages were spooled."""
    with tempfile.TemporaryDirectory() as tmp:
        free = Path(tmp) / "spool" / "free"
        free.mkdir(parents=True)
        for i, raw in enumerate(messages):
            (free / f"0.{i:06d}.done").write_bytes(raw)
        os.sync()  # on disk, as a processed message's file is
        if not reuse:
            for path in free.iterdir():
                path.unlink()
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(f"{tmp}/spool", child))
        server.start()
        port = parent.recv()
        latencies: list[float] = []
        shares = [messages[i::connections] for i in range(connections)]
        threads = [
            threading.Thread(target=send_all, args=(port, share, latencies)) for share in shares
        ]
        parent.send("go")
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        parent.send("stop")
        user, system = parent.recv()
        server.join()
        spooled = len(os.listdir(Path(tmp) / "spool" / "new"))
    return elapsed, latencies, user, system, spooled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="messages")
    ap.add_argument("--connections", type=int, default=4, help="concurrent SMTP connections")
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: a cached temp dir)")
    args = ap.parse_args()
    messages = corpus_messages(args.n, args.corpus)
    size = sum(len(m) for m in messages)
    print(
        f"SMTP accept: {len(messages)} messages ({size / 1024:.0f} KiB), "
        f"{args.connections} connections"
    )
    for label, reuse in (("new files", False), ("reused files", True)):
        elapsed, latencies, user, system, spooled = measure(messages, args.connections, reuse)
        ordered = sorted(latencies)
        n = len(messages)
        print(
            f"  {label:12s} {n / elapsed:5.0f} messages/s, per message: median"
            f" {statistics.median(ordered) * 1000:.1f} ms, p95"
            f" {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.1f} ms; listener CPU"
            f" {(user + system) / n * 1000:.3f} ms (user {user / n * 1000:.3f}, system"
            f" {system / n * 1000:.3f}); {spooled} spooled"
        )
    print(f"  load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
