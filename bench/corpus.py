"""Find and run the shared corpus generator.

Looked for, in order: an explicit path, $MAILGATED_GEN_CORPUS (the script itself),
$MAILGATED_SHARED/bench/gen_corpus.py, ../shared/bench/gen_corpus.py next to the repo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# where the benchmarks keep the generated corpus between runs (`--corpus` says otherwise)
CACHE = Path(tempfile.gettempdir()) / f"mailgated-corpus-{os.getuid()}"


def generator(explicit: Path | None = None) -> Path:
    candidates = [explicit] if explicit else []
    script = os.environ.get("MAILGATED_GEN_CORPUS")
    if script:
        candidates.append(Path(script))
    shared = os.environ.get("MAILGATED_SHARED")
    if shared:
        candidates.append(Path(shared) / "bench" / "gen_corpus.py")
    candidates.append(ROOT.parent / "shared" / "bench" / "gen_corpus.py")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    sys.exit("gen_corpus.py not found: set $MAILGATED_GEN_CORPUS or $MAILGATED_SHARED")


def make_corpus(outdir: Path, n: int, seed: int = 1, script: Path | None = None) -> list[Path]:
    """Generate n messages into outdir (cached: same arguments, same bytes); the .eml files."""
    emls = sorted((outdir / "eml").glob("*.eml"))
    if len(emls) != n:
        subprocess.run(
            [
                sys.executable,
                str(generator(script)),
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


def corpus_messages(n: int, outdir: Path | None = None) -> list[bytes]:
    """The first n messages of the seeded corpus, as bytes (generated into `outdir`, by
    default the shared cache, when it does not hold n)."""
    return [p.read_bytes() for p in make_corpus(outdir or CACHE, n)]
