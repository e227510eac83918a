"""Time per `mailgated deliver` message (fork + exec + spool), wall and CPU, with baselines.

    .venv/bin/python bench/bench_deliver.py [-n 200] [--corpus DIR]

Runs `mailgated deliver --section Support` once per corpus message (stdin from the .eml
file, the spool in a temporary directory) two ways, interleaved with two baselines:

  * wheel install: the console script of a fresh venv (`python -m venv`, pip) into which
    this tree's wheel was installed (`pip wheel --no-deps`, `pip install --no-deps`), as
    an admin installs it: this is the figure of `mailgated deliver`;
  * development install: this venv's script (`pip install -e`): setuptools' editable
    path finder runs at every start-up (pathlib, typing, urllib…);
  * `python -c pass` in the wheel's venv: the interpreter with `site`, the floor any
    Python MDA installed so pays;
  * `python -I -S -c pass`: the bare interpreter.

Prints for each the median and p95 wall time and the median CPU time (user + system, from
wait4: what the process itself cost, less sensitive to other load on the machine than
the wall time), then the machine's load average. Bytecode is compiled first (pip does it
at install time).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import corpus_messages  # noqa: E402


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; exits on a failed run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv} exited {proc.returncode}: {err.decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wheel_venv(root: Path, where: Path) -> Path:
    """A fresh venv with this tree's wheel installed (no dependencies: deliver needs none).
    The wheel is built from a copy of the tree, so that no build/ is left in it (nor
    taken from it: a stale build/lib would put deleted modules in the wheel)."""
    source, wheels = where / "source", where / "wheel"
    skip = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "spool", "*.db")
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(*skip))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
    )
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    [wheel] = wheels.glob("mailgated-*.whl")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, str(wheel)], check=True)
    return venv / "bin"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="messages (runs of each command)")
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: a cached temp dir)")
    args = ap.parse_args()
    messages = corpus_messages(args.n, args.corpus)
    root = Path(__file__).resolve().parent.parent
    compileall.compile_dir(root / "mailgated", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        installed = wheel_venv(root, Path(tmp))
        config = Path(tmp) / "mailgated.toml"
        config.write_text(f'[spool]\npath = "{tmp}/spool"\n')
        env = dict(os.environ, MAILGATED_CONFIG=str(config))
        args_deliver = ["deliver", "--section", "Support"]
        runs: dict[str, tuple[list[str], bool]] = {  # command, reads the message
            "deliver, wheel install": ([str(installed / "mailgated"), *args_deliver], True),
            "deliver, development": (
                [str(Path(sys.executable).with_name("mailgated")), *args_deliver],
                True,
            ),  # fmt: skip
            "python -c pass (wheel venv)": ([str(installed / "python"), "-c", "pass"], False),
            "python -I -S -c pass": ([sys.executable, "-I", "-S", "-c", "pass"], False),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        timed(runs["deliver, wheel install"][0], messages[0], env)  # warm the page cache
        for raw in messages:
            for name, (argv, reads) in runs.items():
                results[name].append(timed(argv, raw if reads else b"", env))
        spooled = len(os.listdir(Path(tmp) / "spool" / "new"))
    print(f"mailgated deliver: {len(messages)} messages x 2, {spooled} spooled (+1 warm-up)")
    for name, values in results.items():
        wall = [w for w, _ in values]
        cpu = [c for _, c in values]
        print(
            f"  {name:28} wall median {statistics.median(wall) * 1000:6.1f} ms"
            f"   p95 {pct(wall, 95) * 1000:6.1f} ms   CPU median"
            f" {statistics.median(cpu) * 1000:5.1f} ms"
        )
    print(f"  load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
