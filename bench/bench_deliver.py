"""Wall time per `mailgated deliver` message (fork + exec + spool), with a bare-Python baseline.

    .venv/bin/python bench/bench_deliver.py [-n 200] [--corpus DIR]

Runs the venv's `mailgated deliver --section Support` once per corpus message
(stdin from the .eml file, the spool in a temporary directory) and, in the
same run, interleaved, `python -I -S -c pass` as the floor any Python MDA pays.
A development (editable) install makes every start-up import setuptools'
path finder (pathlib, urllib…, ~30 ms); the third figure, `python -S` with
the source tree on PYTHONPATH, is what a regular install costs without it
(a regular install still runs `site`, a few ms). Bytecode is compiled first,
as pip does at install time. Prints median and p95 of each and the ratio.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import make_corpus  # noqa: E402


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return elapsed


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="messages (runs of each command)")
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: a cached temp dir)")
    args = ap.parse_args()
    corpus_dir = args.corpus or Path(tempfile.gettempdir()) / f"mailgated-corpus-{os.getuid()}"
    messages = [p.read_bytes() for p in make_corpus(corpus_dir, args.n)]
    script = str(Path(sys.executable).with_name("mailgated"))
    root = Path(__file__).resolve().parent.parent
    compileall.compile_dir(root / "mailgated", quiet=1)
    no_finder = [sys.executable, "-S", "-c", "from mailgated.launch import main; main()"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mailgated.toml"
        config.write_text(f'[spool]\npath = "{tmp}/spool"\n')
        env = dict(os.environ, MAILGATED_CONFIG=str(config))
        env_src = dict(env, PYTHONPATH=str(root))
        deliver, bare, regular = [], [], []
        timed([script, "deliver"], messages[0], env)  # warm the page cache
        for raw in messages:
            deliver.append(timed([script, "deliver", "--section", "Support"], raw, env))
            bare.append(timed([sys.executable, "-I", "-S", "-c", "pass"], b"", env))
            regular.append(timed([*no_finder, "deliver", "--section", "Support"], raw, env_src))
        spooled = len(os.listdir(Path(tmp) / "spool" / "new"))
    print(f"mailgated deliver: {len(messages)} messages x 2, {spooled} spooled (+1 warm-up)")
    for name, values in (
        ("deliver (venv script)", deliver),
        ("deliver (no finder)", regular),
        ("python -I -S -c pass", bare),
    ):
        print(
            f"  {name:22} median {statistics.median(values) * 1000:6.1f} ms"
            f"   p95 {pct(values, 95) * 1000:6.1f} ms"
        )
    ratio = statistics.median(deliver) / statistics.median(bare)
    print(f"  ratio deliver / bare python (median): {ratio:.1f}x")


if __name__ == "__main__":
    main()
