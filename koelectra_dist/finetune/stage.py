"""Fine-tuning stage: every (task, seed) run is a Ray task, on a GPU each when the cluster has them.

The driver checks the model folder and reads every task file first, so bad input fails before any
run starts, with the file and line named. Runs go in parallel as far as the cluster's resources
allow; results.md then results.json (the marker) go to `finetune output (`cfg.paths.finetune`)`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from typing import Any

from koelectra_dist import ray_runtime, storage
from koelectra_dist.config import Config
from koelectra_dist.errors import DataError
from koelectra_dist.finetune.config import resolve_tasks
from koelectra_dist.finetune.data import TaskData, read_split
from koelectra_dist.finetune.report import markdown, summarize
from koelectra_dist.finetune.tasks import FinetuneTaskConfig

log = logging.getLogger(__name__)


def check_model_folder(uri: str) -> None:
    for name in ("config.json", "vocab.txt"):
        if not storage.exists(storage.join(uri, name)):
            raise DataError(
                f"{uri}: not a Hugging Face ELECTRA/BERT folder with a tokenizer (no {name}); run the export "
                "stage first or set finetune.model_uri"
            )


def _run_one(
    model_uri: str,
    spec: FinetuneTaskConfig,
    train: TaskData,
    evaluation: TaskData,
    seed: int,
    threads: int,
) -> dict[str, Any]:
    """One fine-tuning run inside a Ray worker (downloads an s3:// model folder first)."""
    import torch
    import transformers

    from koelectra_dist.finetune.trainer import finetune

    torch.set_num_threads(threads)
    # The load report lists the dropped pre-training head and the new classifier on every run: expected.
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="koelectra-finetune-") as tmp:
        local = storage.local_path(model_uri) or storage.download_dir(model_uri, tmp)
        return finetune(local, spec, train, evaluation, seed=seed)


def run(cfg: Config) -> dict[str, Any]:
    import ray

    ft = cfg.finetune
    specs = resolve_tasks(ft)
    model_uri = cfg.paths.finetune_model
    check_model_folder(model_uri)
    data = {
        spec.name: (
            read_split(ft.data_dir, spec, "train", ft.max_train_examples),
            read_split(ft.data_dir, spec, ft.eval_split, ft.max_eval_examples),
        )
        for spec in specs
    }
    ray_runtime.connect(cfg)
    gpus = ft.gpus_per_task if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(_run_one).options(num_cpus=ft.cpus_per_task, num_gpus=gpus, max_retries=0)
    refs = []
    for spec in specs:
        train_ref, eval_ref = (ray.put(d) for d in data[spec.name])
        for r in range(ft.repeats):
            refs.append(remote.remote(model_uri, spec, train_ref, eval_ref, ft.seed + r, ft.cpus_per_task))
    log.info("fine-tuning %s: %d runs, %s GPU each", model_uri, len(refs), gpus)
    tasks = summarize(ray.get(refs))
    out = cfg.paths.finetune
    results = {
        "model": model_uri,
        "eval_split": ft.eval_split,
        "tasks": tasks,
        "specs": {s.name: dataclasses.asdict(s) for s in specs},
        "config": dataclasses.asdict(ft),
    }
    storage.write_bytes(storage.join(out, "results.md"), markdown(tasks, model_uri, ft.eval_split).encode("utf-8"))
    storage.write_json(storage.join(out, "results.json"), results)  # last: its presence means complete
    return {
        "output_uri": out,
        "scores": {name: {k: e[k] for k in ("metric", "mean", "std")} for name, e in tasks.items()},
    }
