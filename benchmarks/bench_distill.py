"""Quality check of the distill stage: does distillation transfer? On this project's own models, a
student of fewer layers distilled from a teacher the pipeline pre-trained, against the same student
shape from random initialisation and against the same shape pre-trained directly (ELECTRA, the
pretrain stage) for the same compute, each fine-tuned on NSMC and KorSTS by the finetune stage over
several seeds; with size and CPU inference-speed ratios.

    python benchmarks/bench_distill.py --budget smoke          # minutes: shows the chain runs, nothing about transfer
    python benchmarks/bench_distill.py --budget hour           # bench_quality's hour budget, a 4-layer teacher
    python benchmarks/bench_distill.py --budget hour --set model.num_hidden_layers=2   # its 2-layer teacher (RESULTS.md)
    python benchmarks/bench_distill.py --teacher DIR --budget hour   # an exported teacher (DIR/discriminator, DIR/generator)
    python benchmarks/bench_distill.py --reuse ...             # fine-tune and time the models under --out only

Runs under --out: corpus (a slice of ../shared/data/nsmc/corpus.txt.gz; with --teacher, tokenized
with the teacher's vocabulary) -> pretrain -> export (the teacher; skipped with --teacher) ->
distill (the student: every other teacher layer, `--layers` to choose) -> pretrain + export of the
student's shape directly, its step count set so that its training FLOPs equal the distillation's
(the student's forward and backward plus the frozen teacher's and generator's forwards, per token;
the pretrain and distill objects' own `flops_per_token`). Prints one JSON line per model (scores
x100 per task: mean, std, each seed; parameters; weights MiB; inference ms per batch) and a last
line with the margins (student - random_init, student - direct, with their spread), ratios,
compute, timings and the overrides used. Needs ../shared/data (skips, saying so, without it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench_quality import BUDGETS as QUALITY_BUDGETS
from bench_quality import SHARED, corpus_slice, pipeline_config, random_init_copy

# The teacher is bench_quality's pipeline at 4 layers (so that the student has fewer than the
# teacher and more than one); --set or a budget changes any field.
PIPELINE = {
    "run": {"name": "distill-check", "stages": ["corpus", "pretrain", "export", "distill"]},
    "model": {
        "vocab_size": 8000,
        "embedding_size": 64,
        "hidden_size": 64,
        "num_hidden_layers": 4,
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
    "distill": {"steps": 200, "learning_rate": 1e-3, "warmup_steps": 20},
    "distributed": {"num_workers": 2, "gpus_per_worker": 0, "zero_stage": 1, "precision": "fp32"},
    "checkpoint": {"interval_steps": 100_000, "keep_last": 1},
    "finetune": {
        "tasks": ["nsmc", "korsts"],
        "data_dir": str(SHARED),
        "epochs": 2,
        "learning_rate": 3e-4,
        "max_train_examples": 4000,
        "max_eval_examples": 2000,
        "repeats": 3,
        "max_length": 64,
    },
}

BUDGETS = {
    # A few minutes on 2 cores: every stage runs, on models too small and short to transfer anything.
    "smoke": [
        "model.max_length=16",
        "model.vocab_size=2000",
        "corpus.vocab.limit_alphabet=1000",
        "corpus.vocab.sample_lines=20000",
        "train.steps=60",
        "train.warmup_steps=6",
        "train.log_every=20",
        "distill.steps=30",
        "distill.warmup_steps=3",
        "finetune.epochs=1",
        "finetune.max_length=16",
        "finetune.max_train_examples=300",
        "finetune.max_eval_examples=300",
        "finetune.repeats=2",
    ],
    # bench_quality's hour budget (its 2-layer teacher beats random init on NSMC; here 4 layers), then a
    # distillation of a quarter of its steps; six fine-tuning seeds on 5,000 dev rows.
    "hour": [
        *QUALITY_BUDGETS["hour"],
        "distill.steps=12500",
        "distill.warmup_steps=1250",
        "distill.learning_rate=1e-3",
    ],
}
CORPUS = SHARED / "nsmc" / "corpus.txt.gz"


def inference_ms(model_dir: str, batch: int, length: int, repeats: int = 30) -> float:
    """Fastest of `repeats` forward passes of AutoModel on a [batch, length] input, in milliseconds
    (CPU, no grad): the minimum, because other jobs on a shared machine only ever add time."""
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
    return 1000 * min(times)


def size_of(model_dir: str) -> dict[str, float]:
    from transformers import AutoModel

    params = AutoModel.from_pretrained(model_dir).num_parameters()
    return {
        "parameters": params,
        "weights_mib": round(os.path.getsize(Path(model_dir) / "model.safetensors") / 2**20, 3),
    }


def teacher_overrides(teacher: Path) -> list[str]:
    """The model section and vocabulary of an exported teacher (a folder with discriminator/ and
    generator/, or a discriminator folder, its generator/ beside it when there is one): the corpus
    stage tokenizes with its vocabulary, the student takes its shape."""
    disc_dir = teacher if (teacher / "config.json").exists() else teacher / "discriminator"
    gen_dir = teacher.parent / "generator" if disc_dir == teacher else teacher / "generator"
    disc = json.loads((disc_dir / "config.json").read_text())
    overrides = [
        f"model.vocab_size={disc['vocab_size']}",
        f"model.embedding_size={disc['embedding_size']}",
        f"model.hidden_size={disc['hidden_size']}",
        f"model.num_hidden_layers={disc['num_hidden_layers']}",
        f"model.num_attention_heads={disc['num_attention_heads']}",
        f"model.intermediate_size={disc['intermediate_size']}",
        f"model.max_length={disc['max_position_embeddings']}",
        f"corpus.vocab.vocab_uri={disc_dir}",
        f"distill.teacher_uri={disc_dir}",
        'run.stages=["corpus", "distill"]',
    ]
    if (gen_dir / "config.json").exists():  # else the distill stage corrupts with a fresh generator
        gen = json.loads((gen_dir / "config.json").read_text())
        overrides += [
            f"model.generator_size={gen['hidden_size'] / disc['hidden_size']}",
            f"distill.generator_uri={gen_dir}",
        ]
    return overrides


def matched_direct_steps(cfg: Any) -> tuple[int, dict[str, float]]:
    """Steps of direct pre-training of the student's shape whose FLOPs equal the distillation's:
    the same batches, so steps scale with the FLOPs per token of one step of each."""
    from koelectra_dist.distill.stage import build_distiller, run_config
    from koelectra_dist.pretrain.model import ElectraPretrainer

    distill_cfg = run_config(cfg)
    seq = cfg.model.max_length
    per_token = {"distill": build_distiller(distill_cfg).flops_per_token(seq)}
    student_shape = dataclasses.replace(cfg.model, num_hidden_layers=distill_cfg.model.num_hidden_layers)
    per_token["direct"] = ElectraPretrainer(student_shape, cfg.train.mask_prob).flops_per_token(seq)
    steps = max(1, round(cfg.distill.steps * per_token["distill"] / per_token["direct"]))
    return steps, per_token


def scores(results: dict[str, Any], task: str) -> dict[str, Any]:
    entry = results[task]
    return {"mean": entry["mean"], "std": entry["std"], "seeds": [run["score"] for run in entry["runs"]]}


def margin(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """a - b over the tasks' means, with the spread: the seeds' standard deviations of both."""
    return {
        task: {
            "margin": round(a[task]["mean"] - b[task]["mean"], 2),
            "std": [round(a[task]["std"], 2), round(b[task]["std"], 2)],
        }
        for task in a
        if a[task]["mean"] is not None and b[task]["mean"] is not None
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/bench_distill", help="working folder (local)")
    p.add_argument("--budget", choices=BUDGETS, default="smoke", help="a named set of overrides (see BUDGETS)")
    p.add_argument(
        "--teacher",
        type=Path,
        help="an exported teacher (a folder with discriminator/ and generator/, or a discriminator folder): "
        "no teacher pre-training; the corpus is tokenized with its vocabulary",
    )
    p.add_argument(
        "--layers", type=json.loads, help="teacher layers the student keeps, e.g. [0,2]; default every other"
    )
    p.add_argument("--corpus-lines", type=int, default=150_000, help="distil (and pre-train) on the first N lines")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the config above")
    p.add_argument("--reuse", action="store_true", help="reuse the models under --out (fine-tune and time only)")
    p.add_argument("--batch", type=int, default=32, help="inference timing batch size")
    args = p.parse_args()
    if not CORPUS.exists():
        print(
            json.dumps(
                {
                    "skipped": f"needs the Korean data in {SHARED} (nsmc/corpus.txt.gz, nsmc/ratings_*.txt, "
                    "korsts/sts-*.tsv); see benchmarks/RESULTS.md"
                }
            )
        )
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from koelectra_dist import ray_runtime, storage
    from koelectra_dist.finetune import stage as finetune_stage
    from koelectra_dist.pipeline import run_stages

    out = Path(args.out).resolve()
    overrides = BUDGETS[args.budget] + (teacher_overrides(args.teacher.resolve()) if args.teacher else []) + args.set
    cfg = pipeline_config(PIPELINE, out, overrides)
    layers = args.layers or list(range(0, cfg.model.num_hidden_layers, 2))
    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, layers=layers))
    timings: dict[str, float] = {}
    ray_runtime.connect(cfg)
    if not args.reuse:
        start = time.time()
        corpus_slice(CORPUS, out / "corpus.txt", args.corpus_lines)
        reports = run_stages(cfg)
        timings["teacher_and_distill_s"] = round(time.time() - start, 1)
        timings["distill_s"] = reports["distill"]["seconds"]
    direct_steps, per_token = matched_direct_steps(cfg)
    direct = pipeline_config(
        PIPELINE,
        out / "direct",
        [
            *overrides,
            f"model.num_hidden_layers={len(layers)}",
            f"train.steps={direct_steps}",
            f"train.warmup_steps={max(1, direct_steps // 10)}",
            f"train.shards_uri={cfg.paths.shards}",
            f"export.vocab_uri={cfg.paths.vocab}",
            'run.stages=["pretrain", "export"]',
        ],
    )
    if not args.reuse:
        start = time.time()
        run_stages(direct)
        timings["direct_and_export_s"] = round(time.time() - start, 1)
    teacher = cfg.distill.teacher_uri or os.path.join(cfg.paths.export, "discriminator")
    student = cfg.paths.distill_model
    models = {
        "teacher": teacher,
        "student": student,
        "random_init": random_init_copy(student, str(out / "random_init"), 0),
        "direct": os.path.join(direct.paths.export, "discriminator"),
    }
    lines: dict[str, dict[str, Any]] = {}
    # the fine-tuning length, within the models' positions (the hour budget pre-trains at 16)
    timing_length = min(cfg.finetune.max_length or cfg.model.max_length, cfg.model.max_length)
    for name, model in models.items():
        start = time.time()
        ft = dataclasses.replace(cfg.finetune, model_uri=model, output_uri=str(out / f"finetune-{name}"))
        report = finetune_stage.run(dataclasses.replace(cfg, finetune=ft))
        results = storage.read_json(storage.join(report["output_uri"], "results.json"))["tasks"]
        timings[f"finetune_{name}_s"] = round(time.time() - start, 1)
        lines[name] = {
            "model": name,
            **{task: scores(results, task) for task in cfg.finetune.tasks},
            **size_of(model),
            "inference_ms": round(inference_ms(model, args.batch, timing_length), 2),
        }
        print(json.dumps(lines[name]), flush=True)
    t, s, r, d = (
        {task: lines[n][task] for task in cfg.finetune.tasks} for n in ("teacher", "student", "random_init", "direct")
    )
    summary = {
        "student_minus_random_init": margin(s, r),
        "student_minus_direct": margin(s, d),
        "teacher_minus_random_init": margin(t, r),
        "student_over_teacher_size": round(lines["student"]["parameters"] / lines["teacher"]["parameters"], 3),
        "teacher_over_student_inference_time": round(
            lines["teacher"]["inference_ms"] / lines["student"]["inference_ms"], 2
        ),
        "layers": layers,
        "compute": {
            "distill_steps": cfg.distill.steps,
            "direct_steps": direct_steps,
            "flops_per_token": {k: round(v) for k, v in per_token.items()},
        },
        "timings": timings,
        "budget": args.budget,
        "teacher": str(args.teacher) if args.teacher else "pre-trained here",
        "overrides": args.set,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
