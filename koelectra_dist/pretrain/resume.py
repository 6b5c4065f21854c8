"""The driver's side of resuming, for both training stages: whether a checkpoint can be continued
by this run's config, and the checkpoint a finished run must have left."""

from __future__ import annotations

from koelectra_dist.config import Config
from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.position import start_position


def check_resume(cfg: Config, meta: CheckpointMeta, vocab_sha256: str, where: str) -> None:
    """Refuse a checkpoint this run cannot continue exactly, saying how to proceed."""
    saved = meta.config
    if meta.vocab_sha256 != vocab_sha256:
        raise CheckpointError(
            f"{where} was trained with another vocabulary (sha256 {meta.vocab_sha256[:12]}..., the shards "
            f"have {vocab_sha256[:12]}...); point checkpoint.storage_uri at a new folder to start afresh"
        )
    if saved["model"] != cfg.to_dict()["model"]:
        raise CheckpointError(f"{where} holds another model shape; use a new checkpoint.storage_uri for this one")
    if saved["train"]["global_batch_size"] != cfg.train.global_batch_size:
        raise CheckpointError(
            f"{where} used train.global_batch_size={saved['train']['global_batch_size']}; the data position and "
            f"schedule depend on it, so resume with that value (now {cfg.train.global_batch_size})"
        )
    start_position(meta, cfg.train.global_batch_size, where)  # its stream position is step global batches
    if meta.precision != cfg.distributed.precision:
        raise CheckpointError(
            f"{where} was trained in {meta.precision}; resume with distributed.precision={meta.precision} (the "
            "engine state holds that precision's master weights and optimizer layout)"
        )
    if meta.zero_stage != cfg.distributed.zero_stage:
        raise CheckpointError(
            f"{where} was written with ZeRO stage {meta.zero_stage}; resume with distributed.zero_stage="
            f"{meta.zero_stage}"
        )
    if meta.step > cfg.train.steps:
        raise CheckpointError(f"{where} is at step {meta.step}, beyond train.steps={cfg.train.steps}")


def final_checkpoint(cfg: Config) -> tuple[str, CheckpointMeta]:
    """The committed checkpoint at `train.steps`, which a finished run must have just written."""
    root = cfg.paths.checkpoints
    final = store.latest_committed(root)
    meta = store.read_meta(final) if final else None
    if meta is None or meta.step != cfg.train.steps:
        raise CheckpointError(f"training ended without a committed checkpoint at step {cfg.train.steps} in {root}")
    return final, meta
