"""One probe, inside a Ray task of its own (never a training worker): consolidate a committed
checkpoint's discriminator with the export stage's machinery, then fine-tune it on each probe
task and seed with the finetune stage's trainer, and return the scores."""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import time
from typing import Any

from koelectra_dist.finetune.data import TaskData
from koelectra_dist.finetune.task_specs import FinetuneTaskConfig


def probe_checkpoint(
    ckpt: str,
    vocab_uri: str | None,
    specs: list[FinetuneTaskConfig],
    data: dict[str, dict[str, TaskData]],
    seeds: list[int],
    threads: int,
) -> dict[str, Any]:
    """Scores of the committed checkpoint `ckpt`: {"tasks": {name: {metric, mean, std, scores}},
    "train_loss": the run's loss logged last before the checkpoint, "seconds"}. `data[name]` holds
    the task's "train" and "dev" rows (read once by the driver)."""
    import torch
    import transformers

    started = time.time()
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()  # the dropped pre-training head, on every run: expected
    # DeepSpeed's consolidation, transformers' progress bars and the trainer's per-epoch lines would
    # reach the driver's console from every probe: the driver prints one line per probe instead
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tasks, meta = _probe(ckpt, vocab_uri, specs, data, seeds)
    loss = (meta.metrics or {}).get("loss")
    return {"tasks": tasks, "train_loss": loss, "seconds": round(time.time() - started, 1)}


def _probe(
    ckpt: str,
    vocab_uri: str | None,
    specs: list[FinetuneTaskConfig],
    data: dict[str, dict[str, TaskData]],
    seeds: list[int],
) -> tuple[dict[str, Any], Any]:
    from koelectra_dist.export.stage import consolidate, training_config, write_tokenizer
    from koelectra_dist.finetune.trainer import finetune
    from koelectra_dist.pretrain.checkpoint import store

    meta = store.read_meta(ckpt)
    train_cfg = training_config(meta, ckpt)
    tasks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="koelectra-probe-") as scratch:
        model, vocab_dir = consolidate(ckpt, meta, train_cfg, vocab_uri or train_cfg.paths.vocab, scratch)
        model_dir = os.path.join(scratch, "discriminator")
        model.discriminator.save_pretrained(model_dir)
        write_tokenizer(vocab_dir, model_dir, train_cfg.model.max_length)
        del model
        for spec in specs:
            scores = []
            for seed in seeds:
                result = finetune(model_dir, spec, data[spec.name]["train"], data[spec.name]["dev"], seed=seed)
                scores.append(result["score"])
            mean = sum(scores) / len(scores)
            std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) if len(scores) > 1 else 0.0
            tasks[spec.name] = {"metric": spec.metric, "mean": mean, "std": std, "scores": scores}
    return tasks, meta
