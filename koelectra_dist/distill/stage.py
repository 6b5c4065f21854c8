"""The distill stage's driver: a student with fewer layers distilled from a teacher, on the
pretrain stage's machinery (the same shards, Ray Train worker loop, DeepSpeed engine, checkpoints
with exact resume and metrics), then exported as a transformers folder with a model card.

The machinery runs on a derived config (`run_config`): the model section is the student's shape,
the train section's schedule is distill.steps/learning_rate/warmup_steps, and checkpoints go to
<distill>/checkpoints. Under <distill> (`cfg.paths.distill`):

    checkpoints/   step-N/ folders holding the student (the teacher is read from its folder)
    model/         the student: config.json, model.safetensors, tokenizer files, README.md (model card)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from typing import Any

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.corpus.shards import vocab_sha256
from koelectra_dist.distill.model import Distiller
from koelectra_dist.distill.teacher import Teacher, make_student, resolve_teacher, student_layers, student_model_config
from koelectra_dist.errors import ConfigError
from koelectra_dist.export.hf_layout import TOKENIZER_FILES
from koelectra_dist.pretrain.checkpoint import restore, store
from koelectra_dist.pretrain.data import open_shards, shard_special_ids
from koelectra_dist.pretrain.dropout import use_cpu_fast_dropout
from koelectra_dist.pretrain.init_from import check_vocabulary, fresh_generator, load_tower, load_weights
from koelectra_dist.pretrain.launcher import fit
from koelectra_dist.pretrain.loop import run_worker
from koelectra_dist.pretrain.resume import check_resume, final_checkpoint

log = logging.getLogger(__name__)


def run_config(cfg: Config) -> Config:
    """The config the shared machinery runs with (module docstring), the teacher, generator and
    layers resolved into the distill section so that checkpoints record them."""
    teacher = resolve_teacher(cfg)
    layers = student_layers(cfg, teacher)
    d = cfg.distill
    return dataclasses.replace(
        cfg,
        model=student_model_config(teacher, layers, cfg.model),
        train=dataclasses.replace(
            cfg.train, steps=d.steps, learning_rate=d.learning_rate, warmup_steps=d.warmup_steps, init_from=None
        ),
        checkpoint=dataclasses.replace(cfg.checkpoint, storage_uri=cfg.paths.distill_checkpoints),
        distill=dataclasses.replace(d, teacher_uri=teacher.uri, generator_uri=teacher.generator_uri, layers=layers),
    )


def _teacher_class(teacher: Teacher) -> Any:
    import transformers

    if teacher.objective == "rtd":
        return transformers.ElectraForPreTraining
    return transformers.AutoModelForMaskedLM


def build_distiller(cfg: Config) -> Distiller:
    """The student (from the teacher's layers, step 0 of the run) with its frozen teacher and
    generator (a fresh one, seeded by the caller, for a discriminator alone); `cfg` is a `run_config`."""
    from transformers import ElectraForMaskedLM

    teacher = resolve_teacher(cfg)
    teacher_model = load_tower(_teacher_class(teacher), teacher.uri)
    generator = None
    if teacher.objective == "rtd":
        if teacher.generator_uri:
            generator = load_tower(ElectraForMaskedLM, teacher.generator_uri)
        else:
            generator = fresh_generator(teacher.uri, cfg.model)
    student = make_student(teacher_model, cfg.distill.layers)
    student.train()
    use_cpu_fast_dropout(student)
    return Distiller(
        student, teacher_model, generator, teacher, cfg.distill, cfg.train.mask_prob, shard_special_ids(cfg)
    )


def distill_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker of the distill stage: the pretrain stage's loop over a Distiller."""
    run_worker(config["cfg"], build_distiller, config["resume"])


def check_teacher(cfg: Config, shards_sha256: str) -> None:
    """Refuse, before any worker starts, a teacher (or generator) of another vocabulary than the
    shards', or one whose weights do not load; warn when a discriminator alone gets a fresh generator."""
    d = cfg.distill
    check_vocabulary("distill.teacher_uri", d.teacher_uri, vocab_sha256(d.teacher_uri), shards_sha256, d.teacher_uri)
    if d.generator_uri:
        if not storage.exists(storage.join(d.generator_uri, "config.json")):
            raise ConfigError(
                f"distill.generator_uri={d.generator_uri}: no generator there; a discriminator teacher needs the "
                "ELECTRA generator of its pair to corrupt the input: set distill.generator_uri"
            )
    if build_distiller(cfg).objective == "rtd" and not d.generator_uri:
        log.warning(
            "distill.teacher_uri=%s: a discriminator alone (no generator beside it); the input is corrupted by a "
            "fresh generator (model.generator_size %s); set distill.generator_uri to use a trained one",
            d.teacher_uri,
            cfg.model.generator_size,
        )


def model_card(cfg: Config, teacher_model: Any, student: Any, meta: Any, weights_bytes: int) -> str:
    """README.md of the student folder: teacher, layers, sizes, objective, training."""
    d, m = cfg.distill, cfg.model
    own = "masked LM"
    if hasattr(teacher_model, "discriminator_predictions"):  # an ELECTRA discriminator
        generator = d.generator_uri or f"a fresh one (model.generator_size {m.generator_size})"
        own = f"replaced-token detection on generator-corrupted input, generator {generator}"
    teacher_params, student_params = teacher_model.num_parameters(), student.num_parameters()
    return f"""---
language: ko
tags: [distillation, electra]
---
# {cfg.run.name}: distilled student

Distilled with koelectra_dist's `distill` stage (DistilBERT's objective) from the teacher
`{d.teacher_uri}`.

| | teacher | student |
|---|---|---|
| layers | {teacher_model.config.num_hidden_layers} | {m.num_hidden_layers} (from teacher layers {d.layers}, 0-based) |
| hidden / heads / FFN | {m.hidden_size} / {m.num_attention_heads} / {m.intermediate_size} | same |
| parameters | {teacher_params:,} | {student_params:,} ({student_params / teacher_params:.0%}) |
| weights file | | {weights_bytes / 2**20:.1f} MiB |

Objective: {d.soft_weight} x soft targets (temperature {d.temperature}) + {d.cosine_weight} x cosine
of the last hidden states + {d.student_weight} x the student's own loss
({own}).
Trained {meta.step} steps of {cfg.train.global_batch_size} examples (up to {m.max_length} tokens) at peak
learning rate {d.learning_rate}; vocabulary sha256 {meta.vocab_sha256[:12]}...

Load it with `AutoModel.from_pretrained(...)` (or a task head, e.g. `AutoModelForSequenceClassification`).
"""


def export_student(cfg: Config, final: str, meta: Any) -> dict[str, Any]:
    """<distill>/model: the student of checkpoint `final` as a transformers folder."""
    distiller = build_distiller(cfg)
    load_weights(distiller, restore.consolidated_state_dict(final), final)
    student, teacher_model = distiller.student.eval(), distiller._frozen[0]
    out = cfg.paths.distill_model
    with tempfile.TemporaryDirectory(prefix="koelectra-distill-") as scratch:
        student.save_pretrained(scratch)
        for f in storage.list_files(cfg.distill.teacher_uri):
            if os.path.basename(f) in TOKENIZER_FILES:
                storage.write_bytes(os.path.join(scratch, os.path.basename(f)), storage.read_bytes(f))
        params = {"teacher": teacher_model.num_parameters(), "student": student.num_parameters()}
        size = os.path.getsize(os.path.join(scratch, "model.safetensors"))
        card = model_card(cfg, teacher_model, student, meta, size)
        with open(os.path.join(scratch, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
        storage.remove(out)
        storage.upload_dir(scratch, out)
    return {"model": out, "parameters": params, "weights_mib": round(size / 2**20, 2)}


def run(cfg: Config) -> dict[str, Any]:
    """Distil to `distill.steps`, resuming from the latest committed checkpoint; export the student."""
    start = time.time()
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    cfg = run_config(cfg)
    shards = open_shards(cfg)
    check_teacher(cfg, shards.manifest.vocab_sha256)
    root = cfg.paths.checkpoints
    latest = store.latest_verified(root)
    if latest:
        check_resume(cfg, store.read_meta(latest), shards.manifest.vocab_sha256, latest)
    if latest is None or store.read_meta(latest).step < cfg.train.steps:
        fit(cfg, distill_loop, latest)
    final, meta = final_checkpoint(cfg)
    exported = export_student(cfg, final, meta)
    log.info("distill: %s from %s, layers %s", exported["model"], cfg.distill.teacher_uri, cfg.distill.layers)
    return {
        "steps": meta.step,
        "checkpoint": final,
        "resumed_from": latest,
        "teacher": cfg.distill.teacher_uri,
        "layers": cfg.distill.layers,
        "metrics": meta.metrics,
        **exported,
        "seconds": round(time.time() - start, 1),
    }
