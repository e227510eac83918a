"""Instructions a processing worker spends on the corpus, counted by callgrind.

    .venv/bin/python bench/bench_instructions.py [-n 300] [--batch 50]

Wall and CPU time on a shared machine swing by tens of percent from run to run;
instruction counts do not (the same count twice, whatever else the machine runs). This
runs the same set-up twice under `valgrind --tool=callgrind` — a fresh SQLite database
with the section and its staff (as `bench_process.py`), the first N corpus messages
spooled, the worker's processor built and its start-up heap frozen — once draining the
spool and once not, side by side, and prints the difference: the instructions of
processing N messages (parse, thread, apply, compose, queue, commit), and per message.
PYTHONHASHSEED is fixed; what is left to chance (a Message-ID's nonce, spool ids) moves
the count by well under 0.1 %. Compare two trees by running each tree's copy from its
own directory with its own venv (or `PYTHONPATH=<tree>`). valgrind makes Python about
50 times slower: with -n 300 each count takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def count(n: int, batch: int, drain: bool) -> int:
    """Instructions of one run of this script's `--child` under callgrind."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), str(batch)]
    if not drain:
        argv.append("--set-up-only")
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        sys.exit(f"no count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def child(n: int, batch: int, drain: bool) -> None:
    """The measured process: set-up, then (unless `drain` is false) the drain."""
    sys.path.insert(0, str(HERE))
    from bench_process import Target, spooled
    from corpus import corpus_messages

    from mailgated.workers import settle_heap

    messages = corpus_messages(max(n, 1000))[:n]  # the other benchmarks' cached 1,000
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        with Target(where, None).fresh() as db:
            processor = spooled(where, db, messages, batch).processor
            settle_heap()  # as a worker does once built
            if drain and processor.drain() != n:
                sys.exit("not every message was processed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="corpus messages to process")
    ap.add_argument("--batch", type=int, default=50, help="[processing] batch_size")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--set-up-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, drain=not args.set_up_only)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    with ThreadPoolExecutor(2) as pool:  # the two counts side by side
        total = pool.submit(count, args.n, args.batch, True)
        set_up = pool.submit(count, args.n, args.batch, False)
        drained = total.result() - set_up.result()
    print(
        f"processing {args.n} corpus messages (batches of {args.batch}, SQLite):"
        f" {drained / 1e6:,.0f} M instructions, {drained / args.n / 1e6:.2f} M per message"
        f"  (set-up alone {set_up.result() / 1e6:,.0f} M, subtracted)"
    )


if __name__ == "__main__":
    main()
