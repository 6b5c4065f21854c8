"""Quality check of the distill stage (DistilKoBERT's table, on this project's own models):
a 3-layer student distilled from a 12-layer teacher pre-trained by the pipeline, against the same
3-layer shape from random initialisation and against the teacher, each fine-tuned on NSMC with the
finetune stage over several seeds; with size and CPU inference-speed ratios.

    python benchmarks/bench_distill.py                      # defaults below: a tiny 12-layer teacher
    python benchmarks/bench_distill.py --set train.steps=2000 --set distill.steps=1000 --set finetune.repeats=5
    python benchmarks/bench_distill.py --reuse              # fine-tune and time existing models only

Runs corpus -> pretrain -> export -> distill on a slice of ../shared/data/nsmc/corpus.txt.gz under
--out, then fine-tunes. Prints one JSON line per model (NSMC accuracy x100: mean, std, each seed;
parameters; weights MiB; inference ms per batch) and a last line with the ratios, the timings and
the overrides used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench_quality import SHARED, corpus_slice, pipeline_config, random_init_copy

# A 12-layer teacher small enough to pre-train in minutes on CPU; the student keeps layers 0, 4, 8.
PIPELINE = {
    "run": {"name": "distill-check", "stages": ["corpus", "pretrain", "export", "distill"]},
    "model": {
        "vocab_size": 4000,
        "embedding_size": 64,
        "hidden_size": 64,
        "num_hidden_layers": 12,
        "num_attention_heads": 1,
        "intermediate_size": 256,
        "generator_size": 0.5,
        "max_length": 32,
    },
    "corpus": {
        "vocab": {"pretokenizer": "whitespace", "num_unused": 10, "sample_lines": 50_000, "limit_alphabet": 1000},
        "examples_per_shard": 5000,
        "lines_per_block": 20_000,
    },
    "train": {
        "global_batch_size": 32,
        "micro_batch_size": 16,
        "steps": 300,
        "learning_rate": 1e-3,
        "warmup_steps": 30,
        "log_every": 50,
    },
    "distill": {"layers": [0, 4, 8], "steps": 200, "learning_rate": 1e-3, "warmup_steps": 20},
    "distributed": {"num_workers": 2, "gpus_per_worker": 0, "zero_stage": 1, "precision": "fp32"},
    "checkpoint": {"interval_steps": 100_000, "keep_last": 1},
    "finetune": {
        "tasks": ["nsmc"],
        "data_dir": str(SHARED),
        "epochs": 2,
        "learning_rate": 3e-4,
        "max_train_examples": 2000,
        "max_eval_examples": 1000,
        "repeats": 3,
        "max_length": 32,
    },
}


def inference_ms(model_dir: str, batch: int, length: int, repeats: int = 20) -> float:
    """Median milliseconds of one forward pass of AutoModel on a [batch, length] input (CPU, no grad)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        model(input_ids=ids)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def size_of(model_dir: str) -> dict[str, float]:
    from transformers import AutoModel

    params = AutoModel.from_pretrained(model_dir).num_parameters()
    return {
        "parameters": params,
        "weights_mib": round(os.path.getsize(Path(model_dir) / "model.safetensors") / 2**20, 3),
    }


def main() -> None:
    from koelectra_dist import ray_runtime, storage
    from koelectra_dist.finetune import stage as finetune_stage
    from koelectra_dist.pipeline import run_stages

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/bench_distill", help="working folder (local)")
    p.add_argument(
        "--corpus-lines", type=int, default=50_000, help="pre-train and distil on the corpus's first N lines"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the config above")
    p.add_argument("--reuse", action="store_true", help="reuse the models under --out (fine-tune and time only)")
    p.add_argument("--batch", type=int, default=32, help="inference timing batch size")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    cfg = pipeline_config(PIPELINE, out, args.set)
    timings: dict[str, float] = {}
    ray_runtime.connect(cfg)
    if not args.reuse:
        start = time.time()
        corpus_slice(SHARED / "nsmc" / "corpus.txt.gz", out / "corpus.txt", args.corpus_lines)
        run_stages(cfg)
        timings["pipeline_s"] = round(time.time() - start, 1)
    student = cfg.paths.distill_model
    models = {
        "teacher": os.path.join(cfg.paths.export, "discriminator"),
        "student": student,
        "random_init": random_init_copy(student, str(out / "random_init"), 0),
    }
    lines: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        start = time.time()
        ft = dataclasses.replace(cfg.finetune, model_uri=model, output_uri=str(out / f"finetune-{name}"))
        report = finetune_stage.run(dataclasses.replace(cfg, finetune=ft))
        nsmc = storage.read_json(storage.join(report["output_uri"], "results.json"))["tasks"]["nsmc"]
        timings[f"finetune_{name}_s"] = round(time.time() - start, 1)
        lines[name] = {
            "model": name,
            "nsmc_acc": nsmc["mean"],
            "std": nsmc["std"],
            "seeds": [run["score"] for run in nsmc["runs"]],
            **size_of(model),
            "inference_ms": round(inference_ms(model, args.batch, cfg.finetune.max_length or 128), 2),
        }
        print(json.dumps(lines[name]), flush=True)
    t, s, r = lines["teacher"], lines["student"], lines["random_init"]
    summary = {
        "student_minus_random_init": s["nsmc_acc"] - r["nsmc_acc"],
        "student_over_teacher_score": s["nsmc_acc"] / t["nsmc_acc"],
        "student_over_teacher_size": s["parameters"] / t["parameters"],
        "teacher_over_student_inference_time": t["inference_ms"] / s["inference_ms"],
        "timings": timings,
        "overrides": args.set,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
