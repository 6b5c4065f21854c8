"""The pre-training stage: a Ray Train TorchTrainer driver and the per-worker DeepSpeed loop.

The driver checks everything it can (config, shards, vocabulary, the checkpoint to resume from)
before any worker starts. Each worker builds the model, its DeepSpeed engine and its share of the
data stream, resumes from the latest committed checkpoint if there is one, and trains. When a
worker dies, Ray Train restarts the group (FailureConfig) and the loop resumes again from the
latest committed checkpoint, so retries need no special path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from koelectra_dist import checkpoint, storage
from koelectra_dist.config import Config
from koelectra_dist.data import Prefetcher, ShardStream, open_shards
from koelectra_dist.errors import CheckpointError, KoelectraError
from koelectra_dist.train_metrics import MetricsLog

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- driver


def check_resume(cfg: Config, meta: dict[str, Any], vocab_sha256: str, where: str) -> None:
    """Refuse a checkpoint this run cannot continue exactly, saying how to proceed."""
    saved = meta["config"]
    if meta["vocab_sha256"] != vocab_sha256:
        raise CheckpointError(
            f"{where} was trained with another vocabulary (sha256 {meta['vocab_sha256'][:12]}..., the shards "
            f"have {vocab_sha256[:12]}...); point checkpoint.storage_uri at a new folder to start afresh"
        )
    if saved["model"] != cfg.to_dict()["model"]:
        raise CheckpointError(f"{where} holds another model shape; use a new checkpoint.storage_uri for this one")
    if saved["train"]["global_batch_size"] != cfg.train.global_batch_size:
        raise CheckpointError(
            f"{where} used train.global_batch_size={saved['train']['global_batch_size']}; the data position and "
            f"schedule depend on it, so resume with that value (now {cfg.train.global_batch_size})"
        )
    if meta["world_size"] != cfg.distributed.num_workers:
        # The data position would carry over (it does not depend on the worker count), but the
        # engine state does not: ZeRO and DeepSpeed's bf16 optimizer partition it per worker, and
        # each rank restores its own RNG state.
        raise CheckpointError(
            f"{where} was written by {meta['world_size']} workers; resume with distributed.num_workers="
            f"{meta['world_size']} (the data position, {meta['consumed_samples']} samples, does not depend on "
            "the worker count), or export this checkpoint and start a new run from it with train.init_from"
        )
    if meta["zero_stage"] != cfg.distributed.zero_stage:
        raise CheckpointError(
            f"{where} was written with ZeRO stage {meta['zero_stage']}; resume with distributed.zero_stage="
            f"{meta['zero_stage']}"
        )
    if meta["step"] > cfg.train.steps:
        raise CheckpointError(f"{where} is at step {meta['step']}, beyond train.steps={cfg.train.steps}")


def check_init_from(cfg: Config, vocab_sha256: str) -> None:
    """Refuse an exported pretraining/ folder of another model shape or vocabulary."""
    from koelectra_dist.export import pretraining_config

    uri = cfg.train.init_from
    _, saved = pretraining_config(uri, expect=cfg.model)
    if saved.get("vocab_sha256") != vocab_sha256:
        raise CheckpointError(
            f"train.init_from={uri} was pre-trained with another vocabulary than the shards' (sha256 "
            f"{str(saved.get('vocab_sha256'))[:12]}... vs {vocab_sha256[:12]}...); build the shards with its "
            f"vocabulary: --set corpus.vocab.vocab_uri={uri} and run the corpus stage again"
        )


def _unwrap_user_error(exc: BaseException) -> KoelectraError | None:
    """The KoelectraError a worker raised, from inside Ray Train's error wrappers."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KoelectraError):
            return e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        todo += list(getattr(e, "worker_failures", {}).values())
        todo += [x for x in getattr(e, "args", ()) if isinstance(x, BaseException)]
    return None


def _ray_storage(root: str) -> dict[str, Any]:
    """RunConfig storage for Ray Train's own bookkeeping, beside our checkpoints."""
    if not storage.is_s3(root):
        return {"storage_path": os.path.abspath(storage.local_path(root) or root)}
    import pyarrow.fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    fs = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, region=os.environ.get("AWS_DEFAULT_REGION"))
    return {"storage_path": root[len("s3://") :].rstrip("/"), "storage_filesystem": fs}


def run(cfg: Config) -> dict[str, Any]:
    """Pre-train to `train.steps`, resuming from the latest committed checkpoint; return a report."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from koelectra_dist import ray_runtime

    d = cfg.distributed
    shards = open_shards(cfg)
    root = cfg.checkpoint.resolved_storage_uri(cfg.run)
    if cfg.train.init_from:
        check_init_from(cfg, shards.manifest["vocab_sha256"])
    latest = checkpoint.latest_committed(root)
    if latest:
        meta = checkpoint.read_meta(latest)
        check_resume(cfg, meta, shards.manifest["vocab_sha256"], latest)
        if meta["step"] == cfg.train.steps:
            return {"steps": meta["step"], "checkpoint": latest, "resumed_from": latest, "metrics": meta["metrics"]}
    ray_runtime.connect(cfg)
    resources = {"CPU": d.cpus_per_worker, **({"GPU": d.gpus_per_worker} if d.gpus_per_worker else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg},
        scaling_config=ScalingConfig(
            num_workers=d.num_workers, use_gpu=d.gpus_per_worker > 0, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if d.gpus_per_worker else "gloo"),
        run_config=RunConfig(
            name=f"{cfg.run.name}-ray", failure_config=FailureConfig(max_failures=d.max_failures), **_ray_storage(root)
        ),
    )
    log.info("pretrain: %d workers, ZeRO %d, %s, resuming from %s", d.num_workers, d.zero_stage, d.precision, latest)
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - re-raised as the user's error when there is one
        user = _unwrap_user_error(e)
        if user is not None:
            raise user from None
        raise
    final = checkpoint.latest_committed(root)
    meta = checkpoint.read_meta(final) if final else {}
    if meta.get("step") != cfg.train.steps:
        raise CheckpointError(f"training ended without a committed checkpoint at step {cfg.train.steps} in {root}")
    return {"steps": meta["step"], "checkpoint": final, "resumed_from": latest, "metrics": meta["metrics"]}


# ---------------------------------------------------------------- worker


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report in full, per rank, at INFO; rank 0's metric line says it once."""
    with contextlib.suppress(ImportError):
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: build, resume, train, checkpoint."""
    import ray.train

    from koelectra_dist.engine import build_engine
    from koelectra_dist.model import ElectraPretrainer

    cfg: Config = config["cfg"]
    _quiet_ray_train_reports()
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    t, d = cfg.train, cfg.distributed
    if d.gpus_per_worker == 0:
        torch.set_num_threads(max(1, d.cpus_per_worker))
    # Identical initial weights on every rank (ZeRO-3 keeps each rank's own slice of them).
    _seed_all(t.seed)
    model = ElectraPretrainer(cfg.model, mask_prob=t.mask_prob, gen_weight=t.gen_weight, disc_weight=t.disc_weight)
    if t.init_from:
        from koelectra_dist.export import load_pretraining_weights

        load_pretraining_weights(model, t.init_from)
    engine, _, _ = build_engine(cfg, model)
    # Masking and dropout differ across ranks (a checkpoint restores these states per rank).
    _seed_all(t.seed * 1_000_003 + rank + 1)

    shards = open_shards(cfg)
    root = cfg.checkpoint.resolved_storage_uri(cfg.run)
    step, consumed = 0, 0
    latest = checkpoint.latest_committed(root)
    if latest:
        meta = checkpoint.load(engine, latest, rank)
        step, consumed = meta["step"], meta["consumed_samples"]
    stream = ShardStream(
        shards.uris,
        shards.rows,
        seed=t.seed,
        rank=rank,
        world_size=world,
        micro_batch=t.micro_batch_size,
        start=consumed,
    )
    loader = Prefetcher(stream.batches())
    metrics = MetricsLog(cfg, rank, world, root, resumed_step=step)
    try:
        while step < t.steps:
            metrics.start_step(loader.wait_seconds, lr=engine.get_lr()[0])
            for _ in range(cfg.gradient_accumulation_steps()):
                batch = {k: v.to(engine.device, non_blocking=True) for k, v in loader.next().items()}
                out = engine(**batch)
                engine.backward(out.loss)
                engine.step()
                metrics.add_micro(out.loss.detach(), out.metrics)
            step += 1
            consumed += t.global_batch_size
            metrics.end_step(step, loader.wait_seconds, engine)
            if step % cfg.checkpoint.interval_steps == 0 or step == t.steps:
                meta = {
                    "step": step,
                    "consumed_samples": consumed,
                    "world_size": world,
                    "zero_stage": d.zero_stage,
                    "precision": d.precision,
                    "vocab_sha256": shards.manifest["vocab_sha256"],
                    "metrics": metrics.last,
                    "config": cfg.to_dict(),
                }
                seconds = checkpoint.save(engine, root, step, meta, cfg.checkpoint.keep_last)
                metrics.checkpoint_saved(step, seconds)
    finally:
        loader.close()
        metrics.close()
