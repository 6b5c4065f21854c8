"""Quality check: does pre-training with this system help downstream?

Pre-trains a tiny ELECTRA with the pipeline's own stages (corpus -> pretrain -> export) on a slice
of ../shared/data/nsmc/corpus.txt.gz, then fine-tunes (the finetune stage, on Ray) the exported
discriminator and the same architecture from random initialisation, under the same fine-tuning
budget, on NSMC (a slice of ratings_train, scored on ratings_dev) and KorSTS (sts-train, sts-dev).

    python benchmarks/bench_quality.py                       # defaults below, ~4 min on 2 cores
    python benchmarks/bench_quality.py --budget hour          # ~85 min: an hour of pre-training at seq 16
    python benchmarks/bench_quality.py --set train.steps=300 --set finetune.max_train_examples=2000

Prints one JSON line per task (pretrained, random_init, margin = pretrained - random_init, scores
x100, mean over seeds, each seed's score) and a last line with the stage timings and the
pre-training report.
Outputs (corpus slice, shards, checkpoints, models, results) go under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The pipeline config of the check; --set changes any field. Tiny towers so that minutes of CPU
# pre-training move the model; the fine-tuning recipe is shared by both models.
PIPELINE = {
    "run": {"name": "quality-check", "stages": ["corpus", "pretrain", "export"]},
    "model": {
        "vocab_size": 8000,
        "embedding_size": 64,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 1,
        "intermediate_size": 256,
        "generator_size": 1.0,
        "max_length": 128,
    },
    "corpus": {
        "vocab": {"pretokenizer": "whitespace", "num_unused": 10, "sample_lines": 100_000},
        "examples_per_shard": 5000,
        "lines_per_block": 20_000,
    },
    "train": {
        "global_batch_size": 32,
        "micro_batch_size": 16,
        "steps": 400,
        "learning_rate": 1e-3,
        "warmup_steps": 40,
        "log_every": 50,
    },
    "distributed": {"num_workers": 2, "gpus_per_worker": 0, "zero_stage": 1, "precision": "fp32"},
    "checkpoint": {"interval_steps": 100_000, "keep_last": 1},
    "finetune": {
        "tasks": ["nsmc", "korsts"],
        "data_dir": str(SHARED),
        "epochs": 2,
        "learning_rate": 3e-4,
        "max_train_examples": 4000,
        "max_eval_examples": 2000,
        "repeats": 1,
        "max_length": 64,
    },
}


# Named budgets, applied before --set. "hour" pre-trains at 16 tokens, NSMC's length (80% of its
# reviews fit), where a tiny model's attention leaves the positional plateau within the budget
# (research/quality.md); 1,000 labelled rows, where pre-training has the most to give, for
# KoELECTRA's 10 epochs; six seeds on 5,000 dev rows, so that a two-point margin stands out.
BUDGETS = {
    "minutes": [],
    "hour": [
        "model.max_length=16",
        "model.vocab_size=4000",
        "corpus.vocab.limit_alphabet=1000",
        "train.global_batch_size=128",
        "train.micro_batch_size=64",
        "train.steps=50000",
        "train.warmup_steps=5000",
        "train.log_every=5000",
        "checkpoint.interval_steps=10000",
        "finetune.epochs=10",
        "finetune.learning_rate=1e-3",
        "finetune.max_train_examples=1000",
        "finetune.max_eval_examples=5000",
        "finetune.repeats=6",
    ],
}


def corpus_slice(src: Path, dst: Path, lines: int) -> int:
    """The first `lines` lines of the corpus, ending at a document boundary (a run artifact, not repo data)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with gzip.open(src, "rt", encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            if written >= lines and not line.strip():
                break
            out.write(line)
            written += 1
    return written


def random_init_copy(pretrained: str, dst: str, seed: int) -> str:
    """The pretrained folder's architecture and tokenizer with freshly initialised weights."""
    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(pretrained, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    torch.manual_seed(seed)
    ElectraForPreTraining(ElectraConfig.from_pretrained(pretrained)).save_pretrained(dst)
    return dst


def pipeline_config(pipeline: dict[str, Any], out: Path, overrides: list[str]) -> Any:
    """The checked Config of `pipeline` with its outputs under `out` (corpus slice: out/corpus.txt)
    and `overrides` (KEY=VALUE) applied; exits naming any bad override."""
    from koelectra_dist.config import config_from_dict
    from koelectra_dist.configbase import apply_overrides

    data: dict[str, Any] = json.loads(json.dumps(pipeline))
    data["run"]["output_uri"] = str(out / "run")
    data["corpus"]["inputs"] = [str(out / "corpus.txt")]
    problems = apply_overrides(data, overrides)
    if problems:
        raise SystemExit("\n".join(problems))
    return config_from_dict(data)


def main() -> None:
    from koelectra_dist import ray_runtime, storage
    from koelectra_dist.finetune import stage as finetune_stage
    from koelectra_dist.pipeline import run_stages

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/bench_quality", help="working folder (local)")
    p.add_argument("--corpus-lines", type=int, default=150_000, help="pre-train on the corpus's first N lines")
    p.add_argument("--budget", choices=BUDGETS, default="minutes", help="a named set of overrides (see BUDGETS)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the config above")
    p.add_argument("--reuse", action="store_true", help="reuse an existing export under --out (fine-tune only)")
    p.add_argument(
        "--min-margin",
        action="append",
        default=[],
        metavar="TASK=POINTS",
        help="exit 1 unless pretrained - random_init >= POINTS (x100 scale) on TASK (repeatable)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    overrides = BUDGETS[args.budget] + args.set
    cfg = pipeline_config(PIPELINE, out, overrides)
    timings: dict[str, float] = {}
    reports: dict[str, Any] = {}
    ray_runtime.connect(cfg)
    if not args.reuse:
        start = time.time()
        lines = corpus_slice(SHARED / "nsmc" / "corpus.txt.gz", out / "corpus.txt", args.corpus_lines)
        reports = run_stages(cfg)
        timings["pipeline_s"] = round(time.time() - start, 1)
        reports["corpus_lines"] = lines
    pretrained = os.path.join(cfg.paths.export, "discriminator")
    models = {"pretrained": pretrained, "random_init": random_init_copy(pretrained, str(out / "random_init"), 0)}
    results: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        start = time.time()
        ft = dataclasses.replace(cfg.finetune, model_uri=model, output_uri=str(out / f"finetune-{name}"))
        report = finetune_stage.run(dataclasses.replace(cfg, finetune=ft))
        results[name] = storage.read_json(storage.join(report["output_uri"], "results.json"))["tasks"]
        timings[f"finetune_{name}_s"] = round(time.time() - start, 1)
    margins = {}
    for task in cfg.finetune.tasks:
        ours, base = results["pretrained"][task], results["random_init"][task]
        line = {"task": task, "metric": ours["metric"], "pretrained": ours["mean"], "random_init": base["mean"]}
        line["margin"] = None if None in (ours["mean"], base["mean"]) else ours["mean"] - base["mean"]
        line["std"] = {"pretrained": ours["std"], "random_init": base["std"]}
        line["seeds"] = {name: [run["score"] for run in results[name][task]["runs"]] for name in results}
        print(json.dumps(line), flush=True)
        margins[task] = line["margin"]
    pretrain = reports.get("pretrain", {})
    print(json.dumps({"timings": timings, "overrides": overrides, "pretrain": pretrain}, default=str), flush=True)
    failed = []
    for item in args.min_margin:
        task, _, points = item.partition("=")
        if margins.get(task) is None or margins[task] < float(points):
            failed.append(f"{task}: margin {margins.get(task)} < {points}")
    if failed:
        raise SystemExit("pre-training did not beat random initialisation by the required margin: " + "; ".join(failed))


if __name__ == "__main__":
    main()
