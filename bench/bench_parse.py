"""Parse benchmark: messages/s of threading.parse over the shared 1,000-message corpus.

    .venv/bin/python bench/bench_parse.py [-n 1000] [--runs 5] [--generator PATH]

The corpus is generated into a temporary directory (gen_corpus.py from --generator,
$MAILGATED_GEN_CORPUS, or ../shared/bench/gen_corpus.py). Each run parses every message
(raw bytes already in memory) and also runs quote trimming and classification; the
baseline in the same command is the bare standard-library parse with policy.default plus
reading the subject and the body (get_body().get_content()). Medians of --runs runs.

Last, the memory the parse keeps (issue 15): the corpus is parsed five times over with
each copy's MIME boundaries made unique (real mail has its own boundary in every message;
the generated corpus repeats them), and the growth of this process's resident memory is
printed, with the size of the MIME header cache.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import make_corpus  # noqa: E402

from mailgated.message import parse as parse_module  # noqa: E402
from mailgated.message.classify import classify  # noqa: E402
from mailgated.message.quote import new_text  # noqa: E402


def main() -> None:
    options = _options()
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        paths = make_corpus(Path(tmp), options.n, script=options.generator)
        raws = [path.read_bytes() for path in paths]
    stages: dict[str, Callable[[bytes], object]] = {
        "baseline (stdlib parse + subject + body)": _baseline,
        "parse": parse_module.parse,
        "parse + new_text + classify": _pipeline,
    }
    figures = {name: _rate(stage, raws, options.runs) for name, stage in stages.items()}
    base = figures["baseline (stdlib parse + subject + body)"]
    print(f"{len(raws)} messages, {sum(map(len, raws))} bytes, median of {options.runs} runs")
    for name, rate in figures.items():
        print(
            f"{name:42} {rate:8.0f} messages/s  {1e6 / rate:7.0f} us/message"
            f"  {rate / base:5.2f}x baseline"
        )
    plain = [raw for raw in raws if b"multipart" not in raw and b"charset=us-ascii" in raw]
    rate = _rate(parse_module.parse, plain, options.runs)
    print(
        f"{'parse, plain us-ascii messages only':42} {rate:8.0f} messages/s  "
        f"{1e6 / rate:7.0f} us/message  ({len(plain)} messages)"
    )
    copies = [_unique_boundaries(raw, f"{i}.{n}") for n in range(5) for i, raw in enumerate(raws)]
    parse_module._mime_header.cache_clear()
    gc.collect()
    before = _rss_mib()
    for raw in copies:
        _pipeline(raw)
    gc.collect()
    info = parse_module._mime_header.cache_info()
    print(
        f"memory kept after {len(copies)} messages with their own MIME boundaries: RSS"
        f" +{_rss_mib() - before:.0f} MiB (MIME header cache {info.currsize} of {info.maxsize})"
    )


def _unique_boundaries(raw: bytes, tag: str) -> bytes:
    """raw with each MIME boundary it declares made its own (suffixed with tag)."""
    for found in set(re.findall(rb'boundary="?([^";\r\n]+)', raw, flags=re.IGNORECASE)):
        raw = raw.replace(found, found + b"_" + tag.encode())
    return raw


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="messages in the corpus")
    parser.add_argument("--runs", type=int, default=5, help="runs (the median is printed)")
    parser.add_argument("--generator", type=Path, help="path of gen_corpus.py")
    return parser.parse_args()


def _rate(stage: Callable[[bytes], object], raws: list[bytes], runs: int) -> float:
    """Median messages/s of stage over raws (the MIME header cache emptied per run)."""
    rates = []
    for _ in range(runs):
        parse_module._mime_header.cache_clear()
        start = time.perf_counter()
        for raw in raws:
            stage(raw)
        rates.append(len(raws) / (time.perf_counter() - start))
    return statistics.median(rates)


_STDLIB = BytesParser(policy=policy.default)


def _baseline(raw: bytes) -> object:
    message = _STDLIB.parsebytes(raw)
    body = message.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
    return str(message["subject"]), body.get_content() if body else ""


def _pipeline(raw: bytes) -> object:
    mail = parse_module.parse(raw)
    return new_text(mail.text), classify(mail, None)


if __name__ == "__main__":
    main()
