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
import json
import logging
import os
import tempfile
import time
from typing import Any

from koelectra_dist import hf_tokenizer, layout, storage
from koelectra_dist.config import Config
from koelectra_dist.corpus.shards import read_manifest, vocab_sha256
from koelectra_dist.distill import distilbert
from koelectra_dist.distill.masking import ensure_counts, masking_weights, read_counts
from koelectra_dist.distill.model import Distiller
from koelectra_dist.distill.teacher import Teacher, make_student, resolve_teacher, student_layers, student_model_config
from koelectra_dist.errors import ConfigError
from koelectra_dist.export.hf_layout import EXPORT_INFO
from koelectra_dist.export.model_card import build_student_card
from koelectra_dist.export.stage import export_info, fetch_vocab, write_tokenizer
from koelectra_dist.pretrain.checkpoint import restore, store
from koelectra_dist.pretrain.data import open_shards, shard_special_ids
from koelectra_dist.pretrain.dropout import use_cpu_fast_dropout
from koelectra_dist.pretrain.init_from import check_vocabulary, fresh_generator, load_tower, load_weights
from koelectra_dist.pretrain.launcher import fit
from koelectra_dist.pretrain.loop import run_worker
from koelectra_dist.pretrain.resume import check_resume, final_checkpoint

log = logging.getLogger(__name__)

TOKEN_COUNTS = "token_counts.npy"


def run_config(cfg: Config) -> Config:
    """The config the shared machinery runs with (module docstring), the teacher, generator and
    layers resolved into the distill section so that checkpoints record them."""
    teacher = resolve_teacher(cfg)
    layers = student_layers(cfg, teacher)
    d = cfg.distill
    if d.student == "distilbert":
        distilbert.check_teacher(teacher.config, teacher.objective, teacher.uri)
    masking = d.masking or ("distilbert" if teacher.objective == "mlm" else "electra")
    return dataclasses.replace(
        cfg,
        model=student_model_config(teacher, layers, cfg.model),
        train=dataclasses.replace(
            cfg.train,
            steps=d.steps,
            learning_rate=d.learning_rate,
            warmup_steps=d.warmup_steps,
            init_from=None,
            heldout_rows=0,  # the held-out losses are pre-training's generator and discriminator losses
        ),
        checkpoint=dataclasses.replace(cfg.checkpoint, storage_uri=cfg.paths.distill_checkpoints),
        distill=dataclasses.replace(
            d,
            teacher_uri=teacher.uri,
            generator_uri=teacher.generator_uri,
            layers=layers,
            masking=masking,
            soft_targets=d.soft_targets or "real",
        ),
    )


def counts_uri(cfg: Config) -> str:
    """Token counts over the shards, for DistilBERT's masking (written by the driver)."""
    return storage.join(cfg.paths.distill, TOKEN_COUNTS)


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
    d = cfg.distill
    if d.student == "distilbert":
        student = distilbert.make_student(teacher_model, d.layers)
    else:
        student = make_student(teacher_model, d.layers)
    if d.freeze_position_embeddings:
        distilbert.position_embeddings(student).requires_grad_(False)
    student.train()
    use_cpu_fast_dropout(student)
    special = shard_special_ids(cfg)
    weights = None
    if d.masking == "distilbert":
        weights = masking_weights(read_counts(counts_uri(cfg)), d.smoothing, [*special.never_masked, special.unk])
    return Distiller(student, teacher_model, generator, teacher, d, cfg.train.mask_prob, special, weights)


def distill_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker of the distill stage: the pretrain stage's loop over a Distiller."""
    run_worker(config["cfg"], build_distiller, config["resume"])


def check_teacher(cfg: Config, shards_sha256: str, shards_tokenizer: dict[str, Any] | None = None) -> None:
    """Refuse, before any worker starts, a teacher (or generator) of another vocabulary than the
    shards', or one whose weights do not load; warn when a discriminator alone gets a fresh generator.
    Shards built with a teacher's tokenizer (corpus.tokenizer_uri: `shards_tokenizer`, the manifest's
    record) are compared through the teacher's tokenizer as `hf_tokenizer` loads it."""
    d = cfg.distill
    if shards_tokenizer is None:
        found = vocab_sha256(d.teacher_uri)
    else:
        found = hf_tokenizer.vocab_sha256(hf_tokenizer.load_tokenizer(d.teacher_uri, "distill.teacher_uri"))
    check_vocabulary("distill.teacher_uri", d.teacher_uri, found, shards_sha256, d.teacher_uri)
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


def export_student(cfg: Config, final: str, meta: Any) -> dict[str, Any]:
    """<distill>/model: the student of checkpoint `final` as a transformers folder, written by the
    export stage's machinery: its tokenizer writer, export_info.json (kind "student") and model card,
    so that scripts/publish_to_hub.py publishes the folder as it is."""
    distiller = build_distiller(cfg)
    load_weights(distiller, restore.consolidated_state_dict(final), final)
    student, teacher_model = distiller.student.eval(), distiller._frozen[0]
    out = cfg.paths.distill_model
    params = {"student": student.num_parameters(), "teacher": teacher_model.num_parameters()}
    info = export_info(params, cfg, meta, final, kind="student")
    with tempfile.TemporaryDirectory(prefix="koelectra-distill-") as scratch:
        # the tokenizer the shards were built with: the teacher's, or (corpus.tokenizer_uri) the
        # corpus's vocab/, where a KoBERT-family one is already converted
        converted = read_manifest(cfg.paths.shards).tokenizer is not None
        source = layout.vocab_beside(cfg.paths.shards) if converted else cfg.distill.teacher_uri
        vocab_dir = fetch_vocab(source, os.path.join(scratch, "vocab"), meta.vocab_sha256, cfg.model.vocab_size)
        folder = os.path.join(scratch, "model")
        student.save_pretrained(folder)
        write_tokenizer(vocab_dir, folder, cfg.model.max_length)
        size = os.path.getsize(os.path.join(folder, "model.safetensors"))
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            card = build_student_card(cfg.run.name, info, json.load(f), "apache-2.0", None)
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
        storage.remove(out)
        storage.upload_dir(folder, out)
    storage.write_json(storage.join(out, EXPORT_INFO), info.to_json())  # last: marks a complete folder
    return {"model": out, "parameters": params, "weights_mib": round(size / 2**20, 2)}


def run(cfg: Config) -> dict[str, Any]:
    """Distil to `distill.steps`, resuming from the latest committed checkpoint; export the student."""
    start = time.time()
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    cfg = run_config(cfg)
    shards = open_shards(cfg)
    if cfg.distill.masking == "distilbert":
        ensure_counts(counts_uri(cfg), shards, cfg.model.vocab_size)
    check_teacher(cfg, shards.manifest.vocab_sha256, shards.manifest.tokenizer)
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
