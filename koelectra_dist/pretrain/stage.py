"""The pre-training stage's driver: checks, then `launcher.fit` running `loop.train_loop` on Ray Train.

The driver checks everything it can (config, shards, vocabulary, the checkpoint to resume from,
whether the cluster can hold the workers) before any worker starts, and chooses the checkpoint the
workers resume from: the newest committed one whose files match their seal.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from koelectra_dist.config import Config
from koelectra_dist.pretrain import init_from
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.pretrain.data import open_shards
from koelectra_dist.pretrain.launcher import fit
from koelectra_dist.pretrain.loop import train_loop
from koelectra_dist.pretrain.resume import check_resume, final_checkpoint


def run(cfg: Config) -> dict[str, Any]:
    """Pre-train to `train.steps`, resuming from the newest verified checkpoint; return a report."""
    if cfg.train.init_from:  # a pair's shape replaces the configured one
        cfg = dataclasses.replace(cfg, model=init_from.model_for(cfg))
    shards = open_shards(cfg)
    root = cfg.paths.checkpoints
    initialised = init_from.check(cfg, shards.manifest.vocab_sha256) if cfg.train.init_from else None
    latest = store.latest_verified(root)
    if latest:
        meta = store.read_meta(latest)
        check_resume(cfg, meta, shards.manifest.vocab_sha256, latest)
        if meta.step == cfg.train.steps:
            return {"steps": meta.step, "checkpoint": latest, "resumed_from": latest, "metrics": meta.metrics}
    fit(cfg, train_loop, latest)
    final, meta = final_checkpoint(cfg)
    report = {"steps": meta.step, "checkpoint": final, "resumed_from": latest, "metrics": meta.metrics}
    return {**report, "init_from": initialised} if initialised else report
