"""Corpus stage throughput against bare `tokenizers` encode_batch_fast, in the same run.

    .venv/bin/python benchmarks/bench_corpus.py [--lines 700000] [--cpus 2] [--vocab-size 32000]

Takes the first LINES lines of ../shared/data/nsmc/corpus.txt.gz (the default: all 677K), trains a
vocabulary on them once (not timed), then times (a) the whole corpus stage with that vocabulary
(read -> dedup -> clean -> tokenize -> pack -> write Parquet, Ray tasks on a local Ray with CPUS
CPUs) and (b) `encode_batch_fast` over the same lines with the same vocabulary and CPUS threads:
the call the stage itself tokenizes with. Each is run `--repeats` times, alternating, after a
warm-up. Prints one JSON line; the headline `ratio` = median over the (raw, pipeline) pairs of
pipeline / raw tokens per second (pipeline tokens include [CLS]/[SEP]; duplicates are dropped
first). `ratio_vs_encode_batch` (the slower call with character offsets) is only beside it.

`profile` is where the stage's work goes, in CPU seconds of one process over the same lines (so a
loaded machine changes it less than the wall-clock ratio): reading (twice, as the stage does),
dedup hashing and sorting, cleaning, tokenizing, packing, Parquet writing. `tokenize_share` is
tokenizing's part of it: the ratio the stage would reach with no task overheads at all.
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


def profile(path: Path, tokenizer, max_length: int, lines_per_block: int) -> dict:
    """CPU seconds (one process) of each part of the stage's work on the file at `path`."""
    import random
    from collections import Counter

    from koelectra_dist.corpus import dedup, shards
    from koelectra_dist.corpus.clean import Cleaner
    from koelectra_dist.corpus.config import CleaningConfig
    from koelectra_dist.corpus.examples import ExampleBuilder, PackedExamples
    from koelectra_dist.corpus.read import ReadOptions, decode_documents, iter_chunk_lines, plan_chunks, resolve_inputs

    spent: Counter[str] = Counter()

    def timed(part, call):
        start = time.process_time()
        out = call()
        spent[part] += time.process_time() - start
        return out

    with tempfile.TemporaryDirectory() as tmp:  # pyarrow imports pandas on first use: once per worker, not timed
        shards.write_shard(tmp, 0, [(PackedExamples().arrays("uint16"), 0, 0)])
    chunk = plan_chunks(resolve_inputs([str(path)]), 1 << 40)[0]
    lines = timed("read", lambda: list(iter_chunk_lines(chunk, ReadOptions(), Counter())))
    timed("read", lambda: list(iter_chunk_lines(chunk, ReadOptions(), Counter())))  # the stage reads twice
    text = [line for line in lines if line]
    dups = timed("dedup", lambda: dedup.later_occurrences(dedup.split_parts(dedup.hash_lines(text), 1))[0])
    skip, index, documents, doc = set(dups.tolist()), 0, [], []
    for line in lines:  # whole documents, duplicate lines dropped
        if line:
            if index not in skip:
                doc.append(line)
            index += 1
        elif doc:
            documents, doc = [*documents, doc], []
    documents += [doc] if doc else []
    cleaner, out, rng = Cleaner(CleaningConfig()), PackedExamples(), random.Random(0)
    builder = ExampleBuilder(max_length, rng, 0.1, 0.05, out)
    block: list[list[bytes]] = []
    for n, doc in enumerate(documents):
        block.append(doc)
        if sum(map(len, block)) < lines_per_block and n + 1 < len(documents):
            continue
        docs = timed("clean", lambda b=block: cleaner.clean_documents(decode_documents(b, Counter())))
        flat = [line for d in docs for line in d]
        encodings = timed("tokenize", lambda f=flat: tokenizer.encode_batch_fast(f, add_special_tokens=False))

        def pack(docs=docs, encodings=encodings):
            position = 0
            for d in docs:
                for encoding in encodings[position : position + len(d)]:
                    builder.add_sentence(encoding.ids)
                position += len(d)
                builder.end_document()

        timed("pack", pack)
        block = []
    arrays = timed("pack", lambda: out.arrays("uint16"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = out.rows
        timed(
            "parquet",
            lambda: [
                shards.write_shard(tmp, i, [(arrays, lo, min(lo + 100_000, rows))])
                for i, lo in enumerate(range(0, rows, 100_000))
            ],
        )
    total = sum(spent.values())
    return {
        "cpu_seconds": {k: round(v, 2) for k, v in spent.items()},
        "share": {k: round(v / total, 3) for k, v in spent.items()},
        "tokenize_share": round(spent["tokenize"] / total, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=700_000)
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
        raw(tokenizer.encode_batch_fast)
        pipeline(-1)  # warm-up: Ray worker processes start once per cluster, not once per stage
        fast_runs, slow_runs, pipe_runs = [], [], []
        for i in range(args.repeats):
            fast_runs.append(raw(tokenizer.encode_batch_fast))
            slow_runs.append(raw(tokenizer.encode_batch))
            pipe_runs.append(pipeline(i))
    finally:
        ray.shutdown()
    raw_s, raw_tokens = min(fast_runs)
    pipe_s, report = min(pipe_runs, key=lambda r: r[0])
    tokens = report["total_tokens"]
    # Each raw run is paired with the pipeline run right after it: on a shared machine the median
    # of paired ratios is steadier than a ratio of best times.
    ratios = sorted((tokens / p[0]) / (r[1] / r[0]) for r, p in zip(fast_runs, pipe_runs, strict=True))
    slow_ratios = sorted((tokens / p[0]) / (r[1] / r[0]) for r, p in zip(slow_runs, pipe_runs, strict=True))
    result = {
        "benchmark": "corpus_stage_vs_encode_batch_fast",
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
        # Beside it only: encode_batch also computes character offsets, which the stage skips.
        "ratio_vs_encode_batch": round(statistics.median(slow_ratios), 3),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "profile": profile(tmp / "slice.txt", tokenizer, 512, cfg_lines_per_block(args.lines_per_block)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
