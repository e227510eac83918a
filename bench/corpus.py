"""Find and run the shared corpus generator (../shared/bench/gen_corpus.py or $MAILGATED_SHARED)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generator() -> Path:
    shared = os.environ.get("MAILGATED_SHARED")
    candidates = [Path(shared) / "bench" / "gen_corpus.py"] if shared else []
    candidates.append(ROOT.parent / "shared" / "bench" / "gen_corpus.py")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    sys.exit("gen_corpus.py not found: set $MAILGATED_SHARED to the shared directory")


def make_corpus(outdir: Path, n: int, seed: int = 1) -> list[Path]:
    """Generate n messages into outdir (cached: same arguments, same bytes); the .eml files."""
    emls = sorted((outdir / "eml").glob("*.eml"))
    if len(emls) != n:
        subprocess.run(
            [
                sys.executable,
                str(generator()),
                str(outdir),
                "-n",
                str(n),
                "--seed",
                str(seed),
                "--tag-format",
                "[{id}]",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        emls = sorted((outdir / "eml").glob("*.eml"))
    return emls
