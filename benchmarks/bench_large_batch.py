"""Large batch at equal tokens: does the large-batch recipe's rule hold at small scale?

Builds one corpus with the pipeline's corpus stage (a slice of ../shared/data/nsmc/corpus.txt.gz,
with its held-out validation shards), then pre-trains the same tiny ELECTRA on the same tokens with:
- `base`: batch B for S steps at learning rate LR;
- `large_sqrt`: batch 8B for S/8 steps at LR x sqrt(8), the rule of configs/base_v3_large_batch.json
  (warm-up kept at the same number of steps);
- `large_same_lr`: batch 8B for S/8 steps at LR (no scaling), to show what the rule is worth;
each with the same seeds. Reports the held-out generator and discriminator losses (the pretrain
stage's own, at its log steps, on the same held-out rows with the same masking) at equal tokens.

    python benchmarks/bench_large_batch.py                      # ~10 min on 2 idle cores
    python benchmarks/bench_large_batch.py --seeds 1 2 3 --set train.steps=4800

Prints one JSON line per recipe (mean and per-seed held-out losses at the end, and the curve over
examples) and a last line comparing each large-batch recipe with `base` (ratios of the final losses).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench_quality import SHARED, corpus_slice, pipeline_config

SCALE = 8
PIPELINE: dict[str, Any] = {
    "run": {"name": "large-batch", "stages": ["corpus", "pretrain"]},
    "model": {
        "vocab_size": 4000,
        "embedding_size": 64,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 1,
        "intermediate_size": 256,
        "generator_size": 1.0,
        "max_length": 64,
    },
    "corpus": {
        "vocab": {"pretokenizer": "whitespace", "num_unused": 10, "sample_lines": 100_000, "limit_alphabet": 1000},
        "examples_per_shard": 5000,
        "lines_per_block": 20_000,
        "validation_fraction": 0.02,
        "validation_max_rows": 2048,
    },
    # the base recipe: batch 16 for 2,400 steps; log steps every 10% of the run
    "train": {
        "global_batch_size": 16,
        "micro_batch_size": 16,
        "steps": 2400,
        "learning_rate": 1e-3,
        "warmup_steps": 24,  # 1% of the base run; the large recipes keep it in steps (8% of theirs)
        "log_every": 240,
        "heldout_rows": 1024,
        "fused_vocab": False,  # the same math without torch.compile's start-up on every run
    },
    "distributed": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 2, "zero_stage": 1, "precision": "fp32"},
    "checkpoint": {"interval_steps": 1_000_000, "keep_last": 1},
}


def recipes(base: Any) -> dict[str, list[str]]:
    """Overrides of each recipe over the base config: 8x the batch, 1/8 of the steps and log interval."""
    t = base.train
    large = [
        f"train.global_batch_size={t.global_batch_size * SCALE}",
        f"train.steps={t.steps // SCALE}",
        f"train.log_every={max(1, t.log_every // SCALE)}",
    ]
    return {
        "base": [],
        "large_sqrt": [*large, f"train.learning_rate={t.learning_rate * math.sqrt(SCALE)}"],
        "large_same_lr": large,
    }


def heldout_curve(tensorboard_dir: str, examples_per_step: int) -> list[dict[str, float]]:
    """The run's held-out losses at each log step, by examples trained on (from its TensorBoard
    events); both recipes read the same example stream in the same order, so equal examples are
    equal tokens."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tensorboard_dir)
    events.Reload()
    gen = {e.step: e.value for e in events.Scalars("train/heldout_gen_loss")}
    disc = {e.step: e.value for e in events.Scalars("train/heldout_disc_loss")}
    return [
        {"examples": step * examples_per_step, "gen": round(gen[step], 4), "disc": round(disc[step], 4)}
        for step in sorted(gen)
    ]


def main() -> None:
    from koelectra_dist import ray_runtime
    from koelectra_dist.corpus import stage as corpus_stage
    from koelectra_dist.pretrain import stage as pretrain_stage

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/bench_large_batch", help="working folder (local)")
    p.add_argument("--corpus-lines", type=int, default=60_000, help="the corpus's first N lines")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--recipes", nargs="+", default=["base", "large_sqrt", "large_same_lr"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    args = p.parse_args()
    if not (SHARED / "nsmc" / "corpus.txt.gz").exists():
        raise SystemExit(f"needs {SHARED / 'nsmc' / 'corpus.txt.gz'} (the shared Korean data beside the project)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    base = pipeline_config(PIPELINE, out, args.set)
    ray_runtime.connect(base)
    started = time.time()
    corpus_slice(SHARED / "nsmc" / "corpus.txt.gz", out / "corpus.txt", args.corpus_lines)
    corpus = corpus_stage.run(base)
    timings = {"corpus_s": round(time.time() - started, 1)}
    shards = f"train.shards_uri={base.paths.corpus_shards}"
    finals: dict[str, dict[str, float]] = {}
    for name in args.recipes:
        runs = []
        for seed in args.seeds:
            run_out = out / "runs" / f"{name}-seed{seed}"
            overrides = [*args.set, *recipes(base)[name], shards, f"train.seed={seed}", 'run.stages=["pretrain"]']
            cfg = pipeline_config(PIPELINE, run_out, overrides)
            started = time.time()
            report = pretrain_stage.run(cfg)
            curve = heldout_curve(f"{cfg.paths.checkpoints}/tensorboard", cfg.train.global_batch_size)
            runs.append(
                {
                    "seed": seed,
                    "final": {
                        "gen": report["metrics"]["heldout_gen_loss"],
                        "disc": report["metrics"]["heldout_disc_loss"],
                    },
                    "curve": curve,
                    "seconds": round(time.time() - started, 1),
                }
            )
        finals[name] = {k: statistics.mean(r["final"][k] for r in runs) for k in ("gen", "disc")}
        line = {
            "recipe": name,
            "overrides": recipes(base)[name],
            "heldout_gen_loss": round(finals[name]["gen"], 4),
            "heldout_disc_loss": round(finals[name]["disc"], 4),
            "seeds": {r["seed"]: {k: round(v, 4) for k, v in r["final"].items()} for r in runs},
            "curves": {r["seed"]: r["curve"] for r in runs},
            "seconds": [r["seconds"] for r in runs],
        }
        print(json.dumps(line), flush=True)
    comparison = {
        name: {f"{k}_vs_base": round(finals[name][k] / finals["base"][k], 4) for k in ("gen", "disc")}
        for name in finals
        if name != "base" and "base" in finals
    }
    summary = {
        "comparison": comparison,
        "examples_each": base.train.steps * base.train.global_batch_size,
        "corpus": {"rows": corpus["total_rows"], "validation_rows": corpus["validation_rows"]},
        "timings": timings,
        "set": args.set,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
