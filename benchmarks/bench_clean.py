"""Time the cleaning presets (`corpus.cleaning.preset`, `koelectra_dist/corpus/clean.py`) on lines
of the NSMC corpus in ../shared/data: CPU seconds per preset, interleaved in one run, against the
default preset (koelectra_v3) as the baseline.

    python benchmarks/bench_clean.py --lines 100000 --repeats 5

Prints one JSON line: lines, per preset the best CPU seconds and lines per CPU second, and
ratio_to_koelectra_v3 (above 1: slower than the default), with the share of lines each preset
keeps and the sentences it makes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

from koelectra_dist.corpus.clean import Cleaner
from koelectra_dist.corpus.config import PRESETS, CleaningConfig

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nsmc" / "corpus.txt.gz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if not CORPUS.exists():
        sys.exit(f"needs {CORPUS} (the shared NSMC corpus beside the project)")
    lines: list[str] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\n"))
            if len(lines) >= args.lines:
                break
    best = dict.fromkeys(PRESETS, float("inf"))
    kept: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so load on the machine falls on every preset alike
        for name in PRESETS:
            cleaner = Cleaner(CleaningConfig(preset=name))
            start = time.process_time()
            out = [cleaner.clean(line) for line in lines]
            best[name] = min(best[name], time.process_time() - start)
            kept[name] = sum(len(o) for o in out)
    base = best["koelectra_v3"]
    result = {"lines": len(lines)}
    for name in PRESETS:
        result[name] = {
            "cpu_s": round(best[name], 3),
            "lines_per_cpu_s": round(len(lines) / best[name]),
            "ratio_to_koelectra_v3": round(best[name] / base, 2),
            "sentences_out": kept[name],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
