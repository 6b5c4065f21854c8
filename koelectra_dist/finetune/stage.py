"""Fine-tuning stage: every (task, seed) run is a Ray task of `finetune.cpus_per_task` CPUs and,
when the cluster has GPUs, `finetune.gpus_per_task` GPUs.

The driver checks the model folder and reads every task file first, so bad input fails before any
run starts, with the file and line named. Runs go in parallel as far as the cluster's resources
allow; results.md then results.json (the marker) go to `finetune.output_uri` (`cfg.paths.finetune`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import tempfile
from typing import Any

from koelectra_dist import ray_runtime, storage
from koelectra_dist.config import Config
from koelectra_dist.errors import ConfigError, DataError
from koelectra_dist.finetune.config import FinetuneConfig, resolve_tasks
from koelectra_dist.finetune.data import TaskData, read_split, split_uri
from koelectra_dist.finetune.report import markdown, summarize
from koelectra_dist.finetune.task_specs import BASE_LAYERS, SMALL_MAX_HIDDEN, FinetuneTaskConfig, recipe_size

log = logging.getLogger(__name__)


def check_model_folder(uri: str) -> None:
    for name in ("config.json", "vocab.txt"):
        if not storage.exists(storage.join(uri, name)):
            raise DataError(
                f"{uri}: not a Hugging Face ELECTRA/BERT folder with a tokenizer (no {name}); run the export "
                "stage first or set finetune.model_uri"
            )


def pick_recipe(ft: FinetuneConfig, model_uri: str) -> dict[str, str]:
    """KoELECTRA's recipe family for this model ("base" or "small") and why it was chosen."""
    if ft.recipe != "auto":
        return {"size": ft.recipe, "why": f"finetune.recipe={ft.recipe}"}
    config = storage.read_json(storage.join(model_uri, "config.json"))
    hidden = config.get("hidden_size", config.get("dim"))  # DistilBERT names them dim and n_layers
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    if not isinstance(hidden, int) or not isinstance(layers, int):
        return {"size": "base", "why": "the model's config.json has no hidden_size or layer count; Base is the default"}
    return {
        "size": recipe_size(hidden, layers),
        "why": f"hidden_size {hidden}, {layers} layers in the model's config.json (Small recipes up to "
        f"{SMALL_MAX_HIDDEN} wide; wider: DistilKoBERT's below {BASE_LAYERS} layers, Base from {BASE_LAYERS})",
    }


def _resolved(uri: str) -> str:
    """`uri` with `.`/`..` resolved (and, when local, symbolic links followed)."""
    if storage.is_s3(uri):
        return "s3://" + posixpath.normpath(uri[len("s3://") :])
    return os.path.realpath(storage.local_path(uri) or uri)


def same_file(a: str, b: str) -> str | None:
    """How `a` and `b` are one training file, or None: 'the same file' (after resolving the
    paths), or 'identical copies' (same size and sha256; compared only when both exist)."""
    if _resolved(a) == _resolved(b):
        return "the same file"
    if not (storage.exists(a) and storage.exists(b)):
        return None
    if len({fs.size(path) for fs, path in map(storage.filesystem, (a, b))}) > 1:
        return None  # only files of one size are read and hashed
    digests = {hashlib.sha256(storage.read_bytes(u)).hexdigest() for u in (a, b)}
    return "identical copies of" if len(digests) == 1 else None


def task_files(ft: FinetuneConfig, spec: FinetuneTaskConfig) -> dict[str, str]:
    """The files a task reads, by role: train, the scored split, and dev for model selection when
    test is scored and the dev file exists; ConfigError when training and evaluation would read the same file (a warning
    with finetune.allow_same_files)."""
    files = {
        "train": split_uri(ft.data_dir, spec, "train"),
        spec.eval_split: split_uri(ft.data_dir, spec, spec.eval_split),
    }
    if spec.eval_split == "test" and spec.dev_file:
        dev = split_uri(ft.data_dir, spec, "dev")
        if storage.exists(dev):  # it chooses the epoch; without it the final epoch is scored
            files["dev"] = dev
        else:
            log.warning("task %r: no dev file %s; the test score is the final epoch's", spec.name, dev)
    for split in ("dev", "test"):
        same = same_file(files["train"], files[split]) if split in files else None
        if same:
            message = (
                f"task {spec.name!r} trains and evaluates on {same} {files['train']} (train_file and "
                f"{split}_file {files[split]}); its score would measure memorisation"
            )
            if not ft.allow_same_files:
                raise ConfigError(
                    f"{message}. Give a separate {split}_file in finetune.task_specs (a full path or URI "
                    "may point elsewhere), or set finetune.allow_same_files=true to run it anyway"
                )
            log.warning("%s (finetune.allow_same_files is set)", message)
    return files


def _run_one(
    model_uri: str,
    spec: FinetuneTaskConfig,
    data: dict[str, TaskData],
    seed: int,
    threads: int,
    save_uri: str,
) -> dict[str, Any]:
    """One fine-tuning run inside a Ray worker (downloads an s3:// model folder first); the scored
    model goes to `save_uri`."""
    import torch
    import transformers

    from koelectra_dist.finetune.trainer import finetune

    torch.set_num_threads(threads)
    # The load report lists the dropped pre-training head and the new classifier on every run: expected.
    transformers.logging.set_verbosity_error()
    selecting = spec.eval_split == "test" and "dev" in data
    with tempfile.TemporaryDirectory(prefix="koelectra-finetune-") as tmp:
        local = storage.local_path(model_uri) or storage.download_dir(model_uri, f"{tmp}/model")
        saved = f"{tmp}/fine-tuned"
        result = finetune(
            local,
            spec,
            data["train"],
            data["dev"] if selecting else data[spec.eval_split],
            seed=seed,
            test=data["test"] if selecting else None,
            save_dir=saved,
        )
        storage.upload_dir(saved, save_uri)
    scored_epoch = "best on dev" if selecting else "final"
    return {**result, "eval_split": spec.eval_split, "scored_epoch": scored_epoch, "model_uri": save_uri}


def run(cfg: Config) -> dict[str, Any]:
    import ray

    ft = cfg.finetune
    model_uri = cfg.paths.finetune_model
    check_model_folder(model_uri)
    recipe = pick_recipe(ft, model_uri)
    log.info("fine-tuning recipes: KoELECTRA-%s (%s)", recipe["size"].capitalize(), recipe["why"])
    specs = resolve_tasks(ft, recipe["size"])
    limits = {"train": ft.max_train_examples, "dev": ft.max_eval_examples, "test": ft.max_eval_examples}
    data = {}
    for spec in specs:
        files = task_files(ft, spec)
        data[spec.name] = {split: read_split(ft.data_dir, spec, split, limits[split]) for split in files}
    ray_runtime.connect(cfg)
    gpus = ft.gpus_per_task if ray.cluster_resources().get("GPU", 0) > 0 else 0
    env = storage.worker_env()  # a Ray running before the config was read lacks the S3 settings
    options = {"runtime_env": {"env_vars": env}} if env else {}
    remote = ray.remote(_run_one).options(num_cpus=ft.cpus_per_task, num_gpus=gpus, max_retries=0, **options)
    out = cfg.paths.finetune
    refs = []
    for spec in specs:
        data_ref = ray.put(data[spec.name])
        for r in range(ft.repeats):
            seed = ft.seed + r
            save = storage.join(out, "models", f"{spec.name}-seed{seed}")
            refs.append(remote.remote(model_uri, spec, data_ref, seed, ft.cpus_per_task, save))
    log.info("fine-tuning %s: %d runs, %s GPU each", model_uri, len(refs), gpus)
    tasks = summarize(ray.get(refs))
    results = {
        "model": model_uri,
        "eval_split": ft.eval_split,
        "recipe": recipe,
        "tasks": tasks,
        "specs": {s.name: dataclasses.asdict(s) for s in specs},
        "config": dataclasses.asdict(ft),
    }
    storage.write_bytes(storage.join(out, "results.md"), markdown(tasks, model_uri).encode("utf-8"))
    storage.write_json(storage.join(out, "results.json"), results)  # last: its presence means complete
    return {
        "output_uri": out,
        "scores": {name: {k: e[k] for k in ("metric", "mean", "std")} for name, e in tasks.items()},
    }
