"""Corpus stage throughput against bare `tokenizers` encode_batch, in the same run.

    .venv/bin/python benchmarks/bench_corpus.py [--lines 200000] [--cpus 2] [--vocab-size 32000]

Takes the first LINES lines of ../shared/data/nsmc/corpus.txt.gz, trains a vocabulary on them once
(not timed), then times (a) the whole corpus stage with that vocabulary (read -> clean -> tokenize
-> pack -> write Parquet, Ray Data on a local Ray with CPUS CPUs) and (b) `encode_batch` over the
same lines with the same vocabulary and CPUS threads (and `encode_batch_fast`, which the stage
itself uses, as a second baseline). Each is run `--repeats` times, alternating,
after a warm-up. Prints one JSON line: ratio = median over the (raw, pipeline) pairs of pipeline /
raw tokens per second (pipeline tokens include [CLS]/[SEP]; duplicates are dropped first).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "nsmc" / "corpus.txt.gz"


def cfg_lines_per_block(value: int | None) -> int:
    from koelectra_dist.corpus.config import CorpusConfig

    return value or CorpusConfig().lines_per_block


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lines-per-block", type=int, default=None, help="default: the config's default")
    args = p.parse_args()
    if not CORPUS.exists():
        raise SystemExit(f"needs {CORPUS.relative_to(ROOT.parent)} (the shared Korean data beside the project)")
    # The raw baseline's thread count; Ray workers get TOKENIZERS_PARALLELISM=false (one thread each).
    os.environ["RAYON_NUM_THREADS"] = str(args.cpus)

    import ray

    from koelectra_dist.config import config_from_dict
    from koelectra_dist.corpus import stage
    from koelectra_dist.corpus.config import VocabConfig
    from koelectra_dist.corpus.vocab import build_tokenizer, train_vocab, write_vocab_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        text = "".join(line for _, line in zip(range(args.lines), f, strict=False))
    (tmp / "slice.txt").write_text(text, encoding="utf-8")
    lines = [line for line in text.split("\n") if line.strip()]
    vocab = train_vocab(lines, VocabConfig(pretokenizer="whitespace", num_unused=200), args.vocab_size)
    write_vocab_dir(vocab, str(tmp / "vocab"), 512)
    tokenizer = build_tokenizer(vocab)

    def raw(encode) -> tuple[float, int]:
        start = time.perf_counter()
        encodings = encode(lines, add_special_tokens=False)
        return time.perf_counter() - start, sum(len(e.ids) for e in encodings)

    def pipeline(run: int) -> tuple[float, dict]:
        cfg = config_from_dict(
            {
                "run": {"output_uri": str(tmp / f"run{run}"), "stages": ["corpus"]},
                "model": {"vocab_size": args.vocab_size, "max_length": 512},
                "corpus": {
                    "inputs": [str(tmp / "slice.txt")],
                    "vocab": {"vocab_uri": str(tmp / "vocab")},
                    **({"lines_per_block": args.lines_per_block} if args.lines_per_block else {}),
                },
            }
        )
        start = time.perf_counter()
        report = stage.run(cfg)
        return time.perf_counter() - start, report

    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    )
    try:
        raw(tokenizer.encode_batch)
        pipeline(-1)  # warm-up: Ray worker processes start once per cluster, not once per stage
        raw_runs, fast_runs, pipe_runs = [], [], []
        for i in range(args.repeats):
            raw_runs.append(raw(tokenizer.encode_batch))
            fast_runs.append(raw(tokenizer.encode_batch_fast))
            pipe_runs.append(pipeline(i))
    finally:
        ray.shutdown()
    raw_s, raw_tokens = min(raw_runs)
    pipe_s, report = min(pipe_runs, key=lambda r: r[0])
    tokens = report["total_tokens"]
    # Each raw run is paired with the pipeline run right after it: on a shared machine the median
    # of paired ratios is steadier than a ratio of best times.
    ratios = sorted((tokens / p[0]) / (r[1] / r[0]) for r, p in zip(raw_runs, pipe_runs, strict=True))
    fast_ratios = sorted((tokens / p[0]) / (r[1] / r[0]) for r, p in zip(fast_runs, pipe_runs, strict=True))
    result = {
        "benchmark": "corpus_stage_vs_encode_batch",
        "lines": args.lines,
        "cpus": args.cpus,
        "vocab_size": args.vocab_size,
        "lines_per_block": cfg_lines_per_block(args.lines_per_block),
        "repeats": args.repeats,
        "raw_seconds_best": round(raw_s, 3),
        "raw_tokens": raw_tokens,
        "raw_tokens_per_s": round(raw_tokens / raw_s),
        "pipeline_seconds_best": round(pipe_s, 3),
        "pipeline_tokens": tokens,
        "pipeline_examples": report["total_rows"],
        "pipeline_tokens_per_s": round(tokens / pipe_s),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        # The stage tokenizes with encode_batch_fast (no character offsets): against that as the
        # baseline, the ratio is the pure cost of reading, cleaning, packing and writing.
        "raw_fast_tokens_per_s": round(min(fast_runs)[1] / min(fast_runs)[0]),
        "ratio_vs_encode_batch_fast": round(statistics.median(fast_ratios), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
