"""How the corpus stage grows with the corpus, on a local multi-node Ray cluster.

    .venv/bin/python benchmarks/bench_corpus_scale.py [--sizes 1 4 16] [--lines N] [--nodes 2] [--cpus-per-node 1]

Builds corpora of 1x, 4x, 16x... the first LINES lines of ../shared/data/nsmc/corpus.txt.gz (all
of it by default), copy k of every line prefixed with "k번 " so that every copy's lines are
distinct (deduplication keeps them), one plain file per copy. Trains a vocabulary once on the 1x
text (not timed), starts a Ray cluster of NODES worker nodes (ray.cluster_utils.Cluster; the head
node has no CPUs, so every task runs on a worker node) and runs the corpus stage on each size in a
fresh driver process. Prints one JSON line whose `sizes` list has, per scale: seconds (the stage),
tokens_per_s, driver_peak_rss_mb (the driver process's peak RSS), worker_peak_rss_mb (the largest
RSS any Ray worker process reached, sampled every 0.2 s), shard_bytes; and the ratios the targets
are stated in: seconds per token and driver RSS at the largest size over the smallest.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "nsmc" / "corpus.txt.gz"
ENV = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def run_stage(config_path: str, address: str) -> None:
    """In a fresh driver process: connect, run the stage, print its report with timings and RSS."""
    import ray

    from koelectra_dist.config import load_config
    from koelectra_dist.corpus import stage

    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": ENV})
    start = time.perf_counter()
    report = stage.run(load_config(Path(config_path)))
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"report": report, "seconds": seconds, "driver_peak_rss_mb": peak_kb / 1024}))


class WorkerRss:
    """The largest RSS of any Ray worker process (named ray::...) of this benchmark's own cluster
    (descendants of this process: other Ray instances on the machine are not counted)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.2):
            for proc in me.children(recursive=True):
                try:
                    if proc.name().startswith("ray::"):
                        self.peak = max(self.peak, proc.memory_info().rss)
                except psutil.Error:  # it ended meanwhile
                    pass

    def __enter__(self) -> WorkerRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_corpus(folder: Path, lines: list[str], scale: int) -> None:
    folder.mkdir(parents=True)
    for k in range(scale):
        prefix = f"{k}번 " if k else ""
        text = "".join(f"{prefix}{line}" if line.strip() else line for line in lines)
        (folder / f"copy-{k:04d}.txt").write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--lines", type=int, default=None, help="NSMC lines in the 1x corpus (default: all)")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--run-stage", nargs=2, metavar=("CONFIG", "ADDRESS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_stage:
        run_stage(*args.run_stage)
        return
    if not CORPUS.exists():
        raise SystemExit(f"needs {CORPUS.relative_to(ROOT.parent)} (the shared Korean data beside the project)")

    from ray.cluster_utils import Cluster

    from koelectra_dist.corpus.config import VocabConfig
    from koelectra_dist.corpus.vocab import train_vocab, write_vocab_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench_corpus_scale_"))
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [line for _, line in zip(range(args.lines or sys.maxsize), f, strict=False)]
    text = [line for line in lines if line.strip()]
    vocab = train_vocab(text, VocabConfig(pretokenizer="whitespace", num_unused=200), args.vocab_size)
    write_vocab_dir(vocab, str(tmp / "vocab"), 512)
    del text

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=args.cpus_per_node)
    results = []
    try:
        for scale in args.sizes:
            write_corpus(tmp / f"in-{scale}", lines, scale)
            config = {
                "run": {"output_uri": str(tmp / f"run-{scale}"), "stages": ["corpus"]},
                "model": {"vocab_size": args.vocab_size, "max_length": 512},
                "corpus": {"inputs": [str(tmp / f"in-{scale}")], "vocab": {"vocab_uri": str(tmp / "vocab")}},
            }
            (tmp / f"config-{scale}.json").write_text(json.dumps(config))
            command = [sys.executable, __file__, "--run-stage", str(tmp / f"config-{scale}.json"), cluster.address]
            with WorkerRss() as workers:
                done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
            out = json.loads(done.stdout.strip().splitlines()[-1])
            tokens = out["report"]["total_tokens"]
            manifest = json.loads((tmp / f"run-{scale}" / "corpus" / "shards" / "manifest.json").read_text())
            results.append(
                {
                    "scale": scale,
                    "seconds": round(out["seconds"], 2),
                    "tokens": tokens,
                    "tokens_per_s": round(tokens / out["seconds"]),
                    "driver_peak_rss_mb": round(out["driver_peak_rss_mb"], 1),
                    "worker_peak_rss_mb": round(workers.peak / 2**20, 1),
                    "shard_bytes": sum(s["bytes"] for s in manifest["shards"]),
                }
            )
    finally:
        cluster.shutdown()
    first, last = results[0], results[-1]
    print(
        json.dumps(
            {
                "benchmark": "corpus_scale",
                "lines_per_copy": len(lines),
                "nodes": args.nodes,
                "cpus_per_node": args.cpus_per_node,
                "sizes": results,
                "seconds_per_token_ratio": round(first["tokens_per_s"] / last["tokens_per_s"], 3),
                "driver_rss_ratio": round(last["driver_peak_rss_mb"] / first["driver_peak_rss_mb"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
