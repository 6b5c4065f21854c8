"""One Ray Train worker of a training stage (pretrain; distill with its own model): build the model
and its DeepSpeed engine, resume from the latest committed checkpoint if there is one, train,
checkpoint.

Randomness does not depend on the worker count: before each micro-batch, torch is seeded from
(train.seed, the micro-batch's global index in the example stream), so masking, generator sampling
and dropout of an example are the same whichever rank of however many workers trains it. A
checkpoint therefore holds no RNG state, and a run resumed on another number of workers draws
exactly what the uninterrupted run would have."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.errors import ConfigError
from koelectra_dist.pretrain.checkpoint import restore, store
from koelectra_dist.pretrain.checkpoint.checkpointer import Checkpointer
from koelectra_dist.pretrain.config import allowed_worker_counts
from koelectra_dist.pretrain.data import Prefetcher, ShardStream, open_shards, shard_special_ids
from koelectra_dist.pretrain.engine import Engine, build_engine
from koelectra_dist.pretrain.heldout import evaluate, load_heldout
from koelectra_dist.pretrain.init_from import init_weights
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.metrics import MetricsLog
from koelectra_dist.pretrain.position import micro_batch_indices, start_position
from koelectra_dist.training import seed_everything

log = logging.getLogger(__name__)


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
        cfg.model,
        mask_prob=t.mask_prob,
        gen_weight=t.gen_weight,
        disc_weight=t.disc_weight,
        fused_vocab=t.fused_vocab,
        special=shard_special_ids(cfg),
    )
    if t.init_from:
        init_weights(model, t.init_from)
    if t.compile:
        from koelectra_dist.pretrain.compiled import compile_layers

        compile_layers(model)
    return model


def micro_batch_seed(seed: int, index: int) -> int:
    """The torch seed of the micro-batch at global index `index` of the example stream (positions
    [index x micro, (index + 1) x micro)): a hash of (train.seed, index), so neighbouring
    micro-batches get unrelated streams."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def train_step(
    engine: Engine,
    loader: Prefetcher,
    metrics: MetricsLog,
    micro_batches: int,
    log_step: bool,
    seeds: list[int] | None = None,
) -> None:
    """One optimizer step over `micro_batches` micro-batches, torch seeded with `seeds[i]` before
    micro-batch i (None: left as it is). Nothing here waits for the device: no .item(), .cpu() or
    tensor truth test; the discriminator's AUC is computed on log steps only."""
    for i in range(micro_batches):
        if seeds is not None:
            torch.manual_seed(seeds[i])
        batch = {k: v if v is None else v.to(engine.device, non_blocking=True) for k, v in loader.next().items()}
        out = engine(**batch, with_metrics=log_step)
        engine.backward(out.loss)
        engine.step()
        metrics.add_micro(out.loss.detach(), out.metrics)


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker of the pretrain stage."""
    run_worker(config["cfg"], pretrainer, config["resume"])


def resume_point(root: str, hint: str | None) -> str | None:
    """The step every rank resumes from, chosen by rank 0 and broadcast: `hint` (the driver's
    verified choice) while it is still the newest committed step, else the newest verified one.
    An elastic run's worker group is restarted by Ray Train with the driver's first hint, after
    later checkpoints were committed."""
    import torch.distributed as dist

    chosen: list[str | None] = [None]
    if dist.get_rank() == 0:
        newest = store.latest_committed(root)
        chosen[0] = hint if hint is not None and newest == hint else store.latest_verified(root)
    dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def start_engine(
    cfg: Config, build_model: Callable[[Config], torch.nn.Module], resume: str | None, world: int
) -> tuple[Engine, torch.nn.Module, CheckpointMeta | None]:
    """The model and its DeepSpeed engine, with the state of the step every rank resumes from
    (`resume_point`; None: a fresh start, whose meta is then None)."""
    resume = resume_point(cfg.paths.checkpoints, resume)
    meta = store.read_meta(resume) if resume else None
    # Identical initial weights on every rank (ZeRO-3 keeps each rank's own slice of them).
    seed_everything(cfg.train.seed)
    model = build_model(cfg)
    universal = meta is not None and restore.needs_universal(meta, world)
    engine, _, _ = build_engine(cfg, model, load_universal=universal)
    if resume:
        meta = restore.load(engine, resume, world)
    return engine, model, meta


def check_world(cfg: Config, world: int) -> None:
    """The driver offers Ray only worker counts that keep the global batch; never train with another."""
    t, allowed = cfg.train, allowed_worker_counts(cfg.train, cfg.distributed)
    if world not in allowed:
        raise ConfigError(
            f"{world} workers cannot keep train.global_batch_size={t.global_batch_size} with "
            f"train.micro_batch_size={t.micro_batch_size}; allowed: {allowed}"
        )


def run_worker(cfg: Config, build_model: Callable[[Config], torch.nn.Module], resume: str | None) -> None:
    """One Ray Train worker: build the model (its forward returns `.loss` and `.metrics`;
    `flops_per_token(seq_len)` gives MFU its numerator) and its engine, resume from the newest
    committed checkpoint (`resume_point`) if any, train on the shards to `train.steps`, checkpoint
    under `cfg.paths.checkpoints`."""
    import ray.train

    _quiet_ray_train_reports()
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    t = cfg.train
    check_world(cfg, world)
    if cfg.distributed.gpus_per_worker == 0:
        torch.set_num_threads(max(1, cfg.distributed.cpus_per_worker))
    engine, model, meta = start_engine(cfg, build_model, resume, world)
    position = start_position(meta, t.global_batch_size, resume or "")
    shards = open_shards(cfg, hashes=False)  # the driver checked their sha256
    stream = ShardStream(
        shards.uris,
        shards.rows,
        seed=t.seed,
        rank=rank,
        world_size=world,
        micro_batch=t.micro_batch_size,
        start=position.consumed,
        vocab_size=shards.manifest.vocab_size,
        pad_id=shards.manifest.special_ids.pad,
    )
    loader = Prefetcher(stream.batches(), pin=cfg.distributed.gpus_per_worker > 0)  # asynchronous copies to the GPU
    heldout = load_heldout(cfg, shards)
    flops = model.flops_per_token(shards.manifest.max_length)
    metrics = MetricsLog(cfg, rank, world, cfg.paths.checkpoints, resumed_step=position.step, flops_per_token=flops)
    saver = Checkpointer(cfg, rank, world, shards.manifest.vocab_sha256, resumed_step=position.step, metrics=metrics)
    accumulation = cfg.gradient_accumulation_steps(world)
    if rank == 0:
        log.info(
            "training on %d workers (%d micro-batches of %d each per step) from step %d",
            world,
            accumulation,
            t.micro_batch_size,
            position.step,
        )
    try:
        while position.step < t.steps:
            metrics.start_step(loader.wait_seconds, lr=engine.get_lr()[0])
            log_step = (position.step + 1) % t.log_every == 0 or position.step + 1 == t.steps
            indices = micro_batch_indices(position.step, accumulation, rank, world)
            train_step(engine, loader, metrics, accumulation, log_step, [micro_batch_seed(t.seed, c) for c in indices])
            position = position.after_step()
            step = position.step
            if heldout is not None and (step % t.log_every == 0 or step == t.steps):
                started = time.perf_counter()
                values = evaluate(engine.module, heldout, engine.device)
                metrics.add_heldout(values, time.perf_counter() - started)
            metrics.end_step(step, loader.wait_seconds, engine)
            saver.step_done(engine, step, position.consumed)
        saver.finish()  # the final checkpoint is committed before the worker returns
    finally:
        saver.close()
        loader.close()
        metrics.close()
