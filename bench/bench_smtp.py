"""SMTP accept rate: messages per second through the real listener, spooled and fsynced.

    .venv/bin/python bench/bench_smtp.py [-n 1000] [--connections 4] [--corpus DIR]

The listener (aiosmtpd on one asyncio loop, spool writes in worker threads,
exactly as in `mailgated run`) runs in its own process on an ephemeral
loopback port with a temporary spool; the client is smtplib, one thread per
connection, sending the shared corpus (gen_corpus.py --seed 1) to a section
address. A message counts once its `250` (after the spool rename) arrives. Also prints
the CPU time the listener's process spent per message (all its threads: the SMTP
dialogue, the spool writes and their fsyncs), the steadier figure on a shared machine.
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
from corpus import make_corpus  # noqa: E402


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
        began = time.process_time()
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        conn.send(time.process_time() - began)
        await listener.stop()

    asyncio.run(main())


def send_all(port: int, messages: list[bytes], latencies: list[float]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for raw in messages:
            start = time.perf_counter()
            smtp.sendmail("customer@example.org", ["support@example.com"], raw)
            latencies.append(time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="messages")
    ap.add_argument("--connections", type=int, default=4, help="concurrent SMTP connections")
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: a cached temp dir)")
    args = ap.parse_args()
    corpus_dir = args.corpus or Path(tempfile.gettempdir()) / f"mailgated-corpus-{os.getuid()}"
    messages = [p.read_bytes() for p in make_corpus(corpus_dir, args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(f"{tmp}/spool", child))
        server.start()
        port = parent.recv()
        latencies: list[float] = []
        shares = [messages[i :: args.connections] for i in range(args.connections)]
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
        server_cpu = parent.recv()
        server.join()
        spooled = len(os.listdir(Path(tmp) / "spool" / "new"))
    size = sum(len(m) for m in messages)
    print(
        f"SMTP accept: {len(messages)} messages ({size / 1024:.0f} KiB), "
        f"{args.connections} connections, {spooled} spooled"
    )
    print(f"  {len(messages) / elapsed:.0f} messages/s ({elapsed:.2f} s)")
    ordered = sorted(latencies)
    print(
        f"  per message: median {statistics.median(ordered) * 1000:.1f} ms, "
        f"p95 {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.1f} ms"
    )
    print(
        f"  listener CPU per message: {server_cpu / len(messages) * 1000:.3f} ms (all its"
        f" threads; load {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
