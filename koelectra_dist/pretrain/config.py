"""The pre-training stage's config sections: objective and schedule, workers, checkpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from koelectra_dist.configbase import non_negative, positive


@dataclass(frozen=True)
class TrainConfig:
    shards_uri: str | None = None
    """Shard folder with manifest.json; None: the corpus stage's output."""
    global_batch_size: int = 256
    """Examples per optimizer step across all workers."""
    micro_batch_size: int = 32
    """Examples per forward/backward on one worker."""
    steps: int = 1_500_000
    """Optimizer steps in total."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    warmup_steps: int = 10_000
    """Linear warm-up steps (ELECTRA multiplies warm-up and linear decay)."""
    weight_decay: float = 0.01
    """Decoupled weight decay, not applied to LayerNorm or bias."""
    optimizer: Literal["electra_adam", "adamw"] = "electra_adam"
    """"electra_adam": ELECTRA's Adam with decoupled weight decay and no bias correction (its first
    updates are larger than the nominal rate); "adamw": torch's AdamW, bias-corrected (DistilBERT,
    DistilKoBERT). Both take adam_betas, adam_eps, weight_decay and grad_clip."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam beta1, beta2."""
    grad_clip: float = 1.0
    """Gradient clipping at this global norm."""
    mask_prob: float = 0.15
    """Fraction of real tokens masked (0.15 Base/Small, 0.25 Large)."""
    gen_weight: float = 1.0
    """Weight of the generator (MLM) loss."""
    disc_weight: float = 50.0
    """Weight of the discriminator (replaced token detection) loss."""
    seed: int = 42
    """Seed for initialisation, data order and masking."""
    log_every: int = 100
    """Log metrics every this many steps."""
    init_from: str | None = None
    """Weights to start from (continued pre-training; new optimizer state and schedule): an exported
    pretraining/ folder, a folder holding discriminator/ and generator/, a discriminator folder alone
    (the generator then starts fresh), or a Hub model hf://ORG/NAME (a pair's name or one repository)."""
    fused_vocab: bool = True
    """The generator's cross-entropy, Gumbel sampling and accuracy in one `torch.compile`d pass over
    the [masked x vocab] logits (same samples and loss as without; eager with a warning where
    torch.compile cannot run). Default from benchmarks/bench_vocab_pass.py (benchmarks/RESULTS.md)."""
    verify_shards: Literal["size", "sha256"] = "sha256"
    """What the driver checks of every shard before training starts: presence, size, row count and
    each file's sha256 ("sha256": reads and hashes every shard once, so that one flipped byte is
    caught), or only presence, size and row count ("size": a listing and each
    Parquet footer; damage inside a shard then stops the run when a worker reads it)."""
    heldout_rows: int = 1024
    """Rows of the corpus stage's validation shards on which the generator's and discriminator's
    held-out losses are computed at every log step (no dropout, fixed masking: comparable across
    recipes and worker counts); 0: none."""
    compile: bool = False
    """Compile each encoder layer of both towers with torch.compile (Inductor). A layer that fails
    to compile fails the run at its first step, naming the cause."""


@dataclass(frozen=True)
class DistributedConfig:
    num_workers: int | list[int] = 1
    """Ray Train workers (one DeepSpeed rank each): a number, or [min, max] for an elastic run that
    starts with min workers, grows to max as the cluster (its autoscaler) adds nodes and shrinks
    when nodes are lost, resuming from the latest checkpoint at each resize. Only counts W with
    train.global_batch_size % (train.micro_batch_size x W) == 0 are used (the global batch never
    changes); see `allowed_worker_counts`."""
    gpus_per_worker: int = 1
    """GPUs per worker; 0 runs on CPU (gloo)."""
    cpus_per_worker: int = 1
    """CPUs reserved per worker."""
    zero_stage: int = 1
    """DeepSpeed ZeRO stage: 0, 1, 2 or 3."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Mixed precision mode; fp16 uses dynamic loss scaling and needs GPUs."""
    max_failures: int = 3
    """Times the worker group is started again after a failure that is not a user error (a lost
    worker or node, a storage outage), resuming from the last committed checkpoint; -1: always.
    A user error (bad data, config, checkpoint) stops the run at once."""
    reduce_bucket_size: int = 50_000_000
    """Elements per ZeRO gradient reduce bucket. DeepSpeed's 5e8 holds all of a 110M model, so the
    reduction cannot start before the backward pass ends; 5e7 gives Base several buckets to overlap."""
    allgather_bucket_size: int = 50_000_000
    """Elements per ZeRO parameter all-gather bucket (same reasoning)."""
    overlap_comm: bool = True
    """Overlap ZeRO's gradient communication with the backward pass (on GPUs; ignored on CPU)."""
    deepspeed_config: str | None = None
    """A JSON file (local or s3://) of your own DeepSpeed settings, merged over the generated ones
    (nested objects key by key). The keys this project sets from its own fields are refused there:
    batch sizes and accumulation, gradient clipping, precision, ZeRO stage, optimizer, scheduler."""
    resize_check_s: float = 60.0
    """An elastic run (num_workers [min, max]) below max looks this often for room to grow; each
    growth restarts the workers from the latest checkpoint."""
    resource_wait_s: int = 600
    """On a cluster that may grow (an autoscaler), seconds to wait for it to hold the workers before
    failing with a clear error; a local Ray started by this process never grows and fails at once."""


@dataclass(frozen=True)
class CheckpointConfig:
    storage_uri: str | None = None
    """Checkpoint root (local or s3://); None: <run.output_uri>/checkpoints."""
    interval_steps: int = 10_000
    """Save every this many steps (and always at the end)."""
    keep_last: int = 3
    """Committed checkpoints to keep; older ones are deleted, except those a downstream probe still
    needs (see probe)."""
    preemption_check_steps: int = 10
    """Every this many steps, ask Ray Train whether a node of the run is being preempted (a drain
    notice, e.g. a spot reclaim); on the first notice every worker saves a checkpoint at once, so
    the restart loses no steps. The check is a barrier across workers (milliseconds); 0: never."""


def worker_range(distributed: DistributedConfig) -> tuple[int, int]:
    """(min, max) workers: (n, n) for a fixed count."""
    n = distributed.num_workers
    if isinstance(n, int):
        return n, n
    return (n[0], n[-1]) if n else (0, 0)


def is_elastic(distributed: DistributedConfig) -> bool:
    return not isinstance(distributed.num_workers, int)


def allowed_worker_counts(train: TrainConfig, distributed: DistributedConfig) -> list[int]:
    """The worker counts in the range that keep the global batch: global % (micro x W) == 0."""
    low, high = worker_range(distributed)
    per_worker = train.micro_batch_size
    if per_worker <= 0 or train.global_batch_size <= 0:
        return []
    return [w for w in range(max(1, low), high + 1) if train.global_batch_size % (per_worker * w) == 0]


def gradient_accumulation_steps(train: TrainConfig, workers: int) -> int:
    """Micro-batches per worker per optimizer step, so that `workers` of them make the global batch."""
    return max(1, train.global_batch_size // (train.micro_batch_size * workers))


def problems(cfg: Any) -> list[str]:
    """What is wrong with the train, distributed and checkpoint sections (`cfg` is the root config)."""
    t, d, c = cfg.train, cfg.distributed, cfg.checkpoint
    found: list[str] = []
    positive(
        found,
        [
            ("train.global_batch_size", t.global_batch_size),
            ("train.micro_batch_size", t.micro_batch_size),
            ("train.steps", t.steps),
            ("train.learning_rate", t.learning_rate),
            ("checkpoint.interval_steps", c.interval_steps),
            ("checkpoint.keep_last", c.keep_last),
        ],
    )
    found += _worker_problems(t, d)
    if not 0 < t.mask_prob < 1:
        found.append(f"train.mask_prob: a fraction in (0, 1), got {t.mask_prob}")
    if t.warmup_steps < 0:
        found.append(f"train.warmup_steps: must be >= 0, got {t.warmup_steps}")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        found.append(f"train.adam_betas: two values in [0, 1), got {t.adam_betas}")
    if d.zero_stage not in (0, 1, 2, 3):
        found.append(f"distributed.zero_stage: one of 0, 1, 2, 3, got {d.zero_stage}")
    if d.gpus_per_worker < 0 or d.cpus_per_worker < 1:
        found.append("distributed.gpus_per_worker must be >= 0 and distributed.cpus_per_worker >= 1")
    if d.precision == "fp16" and d.gpus_per_worker == 0:
        found.append(
            "distributed.precision: fp16 needs GPUs (distributed.gpus_per_worker is 0); use bf16 or fp32 on CPU"
        )
    if not math.isfinite(t.learning_rate):
        found.append("train.learning_rate: must be finite")
    positive(
        found, [("train.grad_clip", t.grad_clip), ("train.adam_eps", t.adam_eps), ("train.log_every", t.log_every)]
    )
    non_negative(
        found,
        [
            ("train.weight_decay", t.weight_decay),
            ("train.gen_weight", t.gen_weight),
            ("train.disc_weight", t.disc_weight),
            ("train.heldout_rows", t.heldout_rows),
        ],
    )
    positive(
        found,
        [
            ("distributed.reduce_bucket_size", d.reduce_bucket_size),
            ("distributed.allgather_bucket_size", d.allgather_bucket_size),
        ],
    )
    if c.preemption_check_steps < 0:
        found.append(f"checkpoint.preemption_check_steps: must be >= 0 (0: never), got {c.preemption_check_steps}")
    if d.resize_check_s < 0:
        found.append(f"distributed.resize_check_s: must be >= 0, got {d.resize_check_s}")
    if d.resource_wait_s < 0:
        found.append(f"distributed.resource_wait_s: must be >= 0, got {d.resource_wait_s}")
    if d.max_failures < -1:
        found.append(f"distributed.max_failures: >= 0 retries, or -1 for unlimited; got {d.max_failures}")
    return found


def _worker_problems(t: TrainConfig, d: DistributedConfig) -> list[str]:
    """distributed.num_workers: a positive count, or [min, max], that keeps the global batch."""
    if is_elastic(d):
        n = d.num_workers
        if len(n) != 2 or not 1 <= n[0] <= n[1]:
            return [f"distributed.num_workers: a count, or [min, max] with 1 <= min <= max; got {n}"]
    low, high = worker_range(d)
    if low <= 0:
        return [f"distributed.num_workers: must be > 0, got {d.num_workers}"]
    if t.micro_batch_size <= 0 or t.global_batch_size <= 0 or allowed_worker_counts(t, d):
        return []
    if not is_elastic(d):
        per_step = t.micro_batch_size * low
        return [
            f"train.global_batch_size ({t.global_batch_size}) must be divisible by train.micro_batch_size "
            f"x distributed.num_workers ({t.micro_batch_size} x {low} = {per_step}); "
            f"use e.g. {max(per_step, t.global_batch_size // per_step * per_step)}"
        ]
    fits = [w for w in range(1, t.global_batch_size + 1) if t.global_batch_size % (t.micro_batch_size * w) == 0]
    return [
        f"distributed.num_workers: no count in [{low}, {high}] keeps train.global_batch_size "
        f"({t.global_batch_size}) in micro-batches of train.micro_batch_size ({t.micro_batch_size}), which needs "
        f"global % (micro x workers) == 0; counts that do: {', '.join(map(str, fits)) or 'none'} (or change the "
        "batch sizes)"
    ]


def warnings(cfg: Any) -> list[str]:
    """Valid values that are probably a mistake (`cfg` is the root config)."""
    t = cfg.train
    found = []
    if t.warmup_steps >= t.steps:
        found.append(
            f"train.warmup_steps ({t.warmup_steps}) >= train.steps ({t.steps}): ELECTRA's schedule multiplies "
            f"warm-up and decay, so the learning rate peaks at {t.steps / (4 * t.warmup_steps):.0%} of "
            "train.learning_rate; lower train.warmup_steps (ELECTRA: 10,000 of 1M steps)"
        )
    d = cfg.distributed
    low = worker_range(d)[0]
    if d.precision == "bf16" and d.zero_stage < 2 and low > 0 and gradient_accumulation_steps(t, low) > 1:
        found.append(
            f"gradients accumulate over {gradient_accumulation_steps(t, low)} micro-batches in bf16 at ZeRO "
            f"{d.zero_stage}; distributed.zero_stage=2 accumulates them in fp32"
        )
    allowed = allowed_worker_counts(t, d)
    low, high = worker_range(d)
    if is_elastic(d) and allowed and len(allowed) < high - low + 1:
        found.append(
            f"distributed.num_workers [{low}, {high}]: only {', '.join(map(str, allowed))} workers keep the global "
            "batch, so a run given another count by the cluster uses the largest of these that fits"
        )
    return found
