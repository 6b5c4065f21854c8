"""The pre-training stage's driver: checks, then a Ray Train TorchTrainer running `loop.train_loop`.

The driver checks everything it can (config, shards, vocabulary, the checkpoint to resume from,
whether the cluster can hold the workers) before any worker starts, and chooses the checkpoint the
workers resume from: the newest committed one whose files match their seal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.errors import CheckpointError, user_error_in
from koelectra_dist.pretrain import checkpoint, init_from
from koelectra_dist.pretrain.config import allowed_worker_counts, is_elastic
from koelectra_dist.pretrain.data import open_shards
from koelectra_dist.pretrain.loop import train_loop
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.preflight import check_resources, worker_bundle

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- driver


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


def _ray_storage(root: str) -> dict[str, Any]:
    """RunConfig storage for Ray Train's own bookkeeping, beside our checkpoints."""
    if not storage.is_s3(root):
        return {"storage_path": os.path.abspath(storage.local_path(root) or root)}
    import pyarrow.fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    fs = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, region=os.environ.get("AWS_DEFAULT_REGION"))
    return {"storage_path": root[len("s3://") :].rstrip("/"), "storage_filesystem": fs}


def _attempts(max_failures: int) -> range:
    return range(1, 2**62 if max_failures < 0 else max_failures + 2)


def _fit_elastic(cfg: Config, loop: Callable[[dict[str, Any]], None], resume: str | None) -> None:
    """`fit` for a `distributed.num_workers` range: one Ray Train run in elastic mode, which resizes
    and restarts the worker group itself (see elastic.py); each restarted worker group resumes
    from the newest committed checkpoint (`loop.resume_point`)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from koelectra_dist.pretrain.elastic import ElasticTorchTrainer

    d = cfg.distributed
    allowed = allowed_worker_counts(cfg.train, d)
    trainer = ElasticTorchTrainer(
        loop,
        allowed_workers=allowed,
        train_loop_config={"cfg": cfg, "resume": resume},
        scaling_config=ScalingConfig(
            num_workers=(allowed[0], allowed[-1]),
            use_gpu=d.gpus_per_worker > 0,
            resources_per_worker=worker_bundle(cfg),
            elastic_resize_monitor_interval_s=d.resize_check_s,
        ),
        torch_config=TorchConfig(backend="nccl" if d.gpus_per_worker else "gloo"),
        run_config=RunConfig(
            name=f"{cfg.run.name}-ray",
            failure_config=FailureConfig(max_failures=d.max_failures),
            **_ray_storage(cfg.paths.checkpoints),
        ),
    )
    log.info(
        "elastic: %d to %d workers (counts that keep the global batch: %s), ZeRO %d, %s, resuming from %s",
        allowed[0],
        allowed[-1],
        allowed,
        d.zero_stage,
        d.precision,
        resume,
    )
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - a user error is raised as itself
        user = user_error_in(e)
        if user is not None:
            raise user from None
        raise


def fit(cfg: Config, loop: Callable[[dict[str, Any]], None], resume: str | None) -> None:
    """Run `loop` (a worker loop taking {"cfg": cfg, "resume": step URI or None}) on Ray Train
    worker groups as `cfg.distributed` says, until it returns. The first attempt resumes from
    `resume` (the caller chose and verified it).

    Failures are retried here, not by Ray Train: each later attempt starts a new worker group from
    the newest verified checkpoint under `cfg.paths.checkpoints`, and an attempt that failed with a
    user error stops the run at once, raised as itself (Ray Train's own failure policy cannot tell
    the two apart)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from koelectra_dist import ray_runtime

    d = cfg.distributed
    root = cfg.paths.checkpoints
    ray_runtime.connect(cfg)
    check_resources(cfg, ray_runtime.cluster_can_grow())
    if is_elastic(d):
        _fit_elastic(cfg, loop, resume)
        return
    for attempt in _attempts(d.max_failures):
        trainer = TorchTrainer(
            loop,
            train_loop_config={"cfg": cfg, "resume": resume},
            scaling_config=ScalingConfig(
                num_workers=d.num_workers, use_gpu=d.gpus_per_worker > 0, resources_per_worker=worker_bundle(cfg)
            ),
            torch_config=TorchConfig(backend="nccl" if d.gpus_per_worker else "gloo"),
            run_config=RunConfig(
                name=f"{cfg.run.name}-ray", failure_config=FailureConfig(max_failures=0), **_ray_storage(root)
            ),
        )
        log.info(
            "%d workers, ZeRO %d, %s, attempt %d, resuming from %s",
            d.num_workers,
            d.zero_stage,
            d.precision,
            attempt,
            resume,
        )
        try:
            trainer.fit()
            return
        except Exception as e:  # noqa: BLE001 - a user error stops the run; anything else is retried
            user = user_error_in(e)
            if user is not None:
                raise user from None
            if attempt == _attempts(d.max_failures)[-1]:
                raise
            log.warning("attempt %d failed (%s: %s); starting again", attempt, type(e).__name__, e)
            # After a storage outage the next attempt starts once the store answers again.
            resume = storage.when_available(lambda: checkpoint.latest_verified(root), f"pretrain: {root}")


def final_checkpoint(cfg: Config) -> tuple[str, CheckpointMeta]:
    """The committed checkpoint at `train.steps`, which a finished run must have just written."""
    root = cfg.paths.checkpoints
    final = checkpoint.latest_committed(root)
    meta = checkpoint.read_meta(final) if final else None
    if meta is None or meta.step != cfg.train.steps:
        raise CheckpointError(f"training ended without a committed checkpoint at step {cfg.train.steps} in {root}")
    return final, meta


def run(cfg: Config) -> dict[str, Any]:
    """Pre-train to `train.steps`, resuming from the newest verified checkpoint; return a report."""
    if cfg.train.init_from:  # a pair's shape replaces the configured one
        cfg = dataclasses.replace(cfg, model=init_from.model_for(cfg))
    shards = open_shards(cfg)
    root = cfg.paths.checkpoints
    initialised = init_from.check(cfg, shards.manifest.vocab_sha256) if cfg.train.init_from else None
    latest = checkpoint.latest_verified(root)
    if latest:
        meta = checkpoint.read_meta(latest)
        check_resume(cfg, meta, shards.manifest.vocab_sha256, latest)
        if meta.step == cfg.train.steps:
            return {"steps": meta.step, "checkpoint": latest, "resumed_from": latest, "metrics": meta.metrics}
    fit(cfg, train_loop, latest)
    final, meta = final_checkpoint(cfg)
    report = {"steps": meta.step, "checkpoint": final, "resumed_from": latest, "metrics": meta.metrics}
    return {**report, "init_from": initialised} if initialised else report
