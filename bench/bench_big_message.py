"""Peak memory of processing one big message, against the message's size (issue 12 item 15).

    .venv/bin/python bench/bench_big_message.py [--mb 150] [--pg URL]

Builds a message of about `--mb` MB (a short text body and one base64 attachment,
as a mail client sends a large file), spools it, and has the processing worker
turn it into a case (parse, store the raw message and the attachment, queue the
forward and the acknowledgement, commit) in a fresh child process on a fresh
SQLite database (or `--pg`). Prints the child's resident memory before the message
(the same-run baseline: interpreter, imports, database), its peak while processing,
the growth over the baseline and its ratio to the message size. Each run is its own
process, so the peak is that run's (VmHWM never goes down).
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import cast

from sqlalchemy import create_engine, text

from mailgated.config import (
    Config,
    DatabaseConfig,
    ListenConfig,
    OutboundConfig,
    ProcessingConfig,
    SecurityConfig,
    SpoolConfig,
)

SECTION = "support@example.com"
SECRET = b"bench-secret-bench-secret-bench-secret"
MB = 1024 * 1024


def big_message(megabytes: float) -> bytes:
    """A message of about `megabytes` MB: text, then one base64-encoded attachment."""
    decoded = int(megabytes * MB * 3 / 4 * 76 / 78)  # base64 with CRLF every 76 chars
    data = os.urandom(decoded)
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    head = (
        b"From: Big Sender <big@partner.example>\r\nTo: support@example.com\r\n"
        b"Subject: the scans you asked for\r\nMessage-ID: <big-1@partner.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere they are.\r\n"
        b"--XX\r\nContent-Type: application/pdf; name=scans.pdf\r\n"
        b"Content-Disposition: attachment; filename=scans.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head + encoded + b"--XX--\r\n"


def rss_mb() -> float:
    """This process's resident memory now, from /proc (Linux)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: its own address space's high-water mark;
    ru_maxrss would carry the parent's over the fork and exec of a spawned child)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(config: Config, size: int, out: multiprocessing.queues.Queue[object]) -> None:
    """In a fresh process: the database and the processor, the baseline, then the message."""
    from mailgated.app import App
    from mailgated.db import Database
    from mailgated.directory import Directory

    db = Database(config.database.url)
    db.upgrade()
    with db.session() as session:
        d = Directory(session)
        d.add_user("boss", "Big Boss", "boss@example.com")
        d.add_section("Support", email=SECTION, manager="boss")
    processor = App(config, db=db, secret=SECRET).processor
    baseline = rss_mb()
    start = time.perf_counter()
    results = processor.run_once()
    seconds = time.perf_counter() - start
    out.put((size, baseline, peak_mb(), seconds, [r.status for r in results]))
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=150.0, help="message size in MB")
    parser.add_argument("--pg", help="a PostgreSQL URL to use instead of SQLite")
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="raise [processing] max_attachment_size so the file is stored, not only named",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailgated-bench-big-"))
    try:
        from mailgated.intake.spool import Envelope, Spool

        raw = big_message(args.mb)
        size = len(raw)
        Spool(work / "spool").put(raw, Envelope("smtp", "big@partner.example", [SECTION]))
        del raw
        url = f"sqlite:///{work / 'bench.db'}"
        if args.pg:
            url = args.pg
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
        config = Config(
            database=DatabaseConfig(url=url),
            listen=ListenConfig(max_message_size=0),
            spool=SpoolConfig(path=str(work / "spool")),
            security=SecurityConfig(secret_file=str(work / "secret.key")),
            outbound=OutboundConfig(max_attachment=10 * MB),
            processing=ProcessingConfig(max_attachment_size=1024 * MB)
            if args.keep_files
            else ProcessingConfig(),
        )
        context = multiprocessing.get_context("spawn")
        out: multiprocessing.queues.Queue[object] = context.Queue()
        child = context.Process(target=run, args=(config, size, out))
        child.start()
        got = cast(tuple[int, float, float, float, list[str]], out.get())
        size, baseline, peak, seconds, statuses = got
        child.join()
        grown = peak - baseline
        files = "stored" if args.keep_files else "named only (over max_attachment_size)"
        print(
            f"message={size / MB:.1f} MB file={files} statuses={','.join(statuses)} "
            f"baseline_rss={baseline:.0f} MB peak_rss={peak:.0f} MB "
            f"growth={grown:.0f} MB ratio={grown / (size / MB):.2f}x seconds={seconds:.1f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
