"""One Ray Train worker of the pretrain stage: build the model and its DeepSpeed engine, resume
from the latest committed checkpoint if there is one, train, checkpoint."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.pretrain import checkpoint
from koelectra_dist.pretrain.data import Prefetcher, ShardStream, open_shards
from koelectra_dist.pretrain.init_from import init_weights
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.metrics import MetricsLog


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


def pretrainer(cfg: Config) -> torch.nn.Module:
    """The generator + discriminator, from `train.init_from` when it names weights."""
    from koelectra_dist.pretrain.model import ElectraPretrainer

    t = cfg.train
    model = ElectraPretrainer(
        cfg.model, mask_prob=t.mask_prob, gen_weight=t.gen_weight, disc_weight=t.disc_weight, fused_vocab=t.fused_vocab
    )
    if t.init_from:
        init_weights(model, t.init_from)
    if t.compile:
        from koelectra_dist.pretrain.compiled import compile_layers

        compile_layers(model)
    return model


def train_step(engine: Any, loader: Prefetcher, metrics: MetricsLog, micro_batches: int, log_step: bool) -> None:
    """One optimizer step over `micro_batches` micro-batches. Nothing here waits for the device:
    no .item(), .cpu() or tensor truth test; the discriminator's AUC is computed on log steps only."""
    for _ in range(micro_batches):
        batch = {k: v if v is None else v.to(engine.device, non_blocking=True) for k, v in loader.next().items()}
        out = engine(**batch, with_metrics=log_step)
        engine.backward(out.loss)
        engine.step()
        metrics.add_micro(out.loss.detach(), out.metrics)


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker of the pretrain stage."""
    run_worker(config["cfg"], pretrainer, config["resume"])


def run_worker(cfg: Config, build_model: Callable[[Config], torch.nn.Module], resume: str | None) -> None:
    """One Ray Train worker: build the model (its forward returns `.loss` and `.metrics`; `flops_per_token(seq_len)` gives MFU its numerator) and its
    engine, resume from `resume` (a step the driver chose and verified) if any, train on the shards
    to `train.steps`, checkpoint under `cfg.paths.checkpoints`."""
    import ray.train

    from koelectra_dist.pretrain.engine import build_engine

    _quiet_ray_train_reports()
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    t, d = cfg.train, cfg.distributed
    if d.gpus_per_worker == 0:
        torch.set_num_threads(max(1, d.cpus_per_worker))
    # Identical initial weights on every rank (ZeRO-3 keeps each rank's own slice of them).
    _seed_all(t.seed)
    model = build_model(cfg)
    engine, _, _ = build_engine(cfg, model)
    # Masking and dropout differ across ranks (a checkpoint restores these states per rank).
    _seed_all(t.seed * 1_000_003 + rank + 1)

    shards = open_shards(cfg)
    root = cfg.paths.checkpoints
    step, consumed = 0, 0
    if resume:
        meta = checkpoint.load(engine, resume, rank)
        step, consumed = meta.step, meta.consumed_samples
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
    flops = model.flops_per_token(shards.manifest.max_length)
    metrics = MetricsLog(cfg, rank, world, root, resumed_step=step, flops_per_token=flops)
    saver = checkpoint.Checkpointer(root, cfg.checkpoint.keep_last, resumed_step=step)
    try:
        while step < t.steps:
            metrics.start_step(loader.wait_seconds, lr=engine.get_lr()[0])
            log_step = (step + 1) % t.log_every == 0 or step + 1 == t.steps
            train_step(engine, loader, metrics, cfg.gradient_accumulation_steps(), log_step)
            step += 1
            consumed += t.global_batch_size
            metrics.end_step(step, loader.wait_seconds, engine)
            if step % cfg.checkpoint.interval_steps == 0 or step == t.steps:
                meta = CheckpointMeta(
                    step=step,
                    consumed_samples=consumed,
                    world_size=world,
                    zero_stage=d.zero_stage,
                    precision=d.precision,
                    vocab_sha256=shards.manifest.vocab_sha256,
                    metrics=metrics.last,
                    config=cfg.to_dict(),
                )
                metrics.checkpoint_saved(step, **saver.save(engine, step, meta))
            # a background upload's failure fails the run here, at the step boundary
            if committed := saver.poll():
                metrics.checkpoint_committed(*committed)
        # the final checkpoint is committed before the worker returns
        if committed := saver.wait():
            metrics.checkpoint_committed(*committed)
    finally:
        saver.close()
        loader.close()
        metrics.close()
