"""DeepSpeed engine construction: the config dict, and the engine over ELECTRA's optimizer and schedule.

`ds_config` is a pure function, tested directly; `build_engine` is the only function that touches
DeepSpeed.
"""

from __future__ import annotations

import json
import os
import sys
from types import ModuleType
from typing import Any, Protocol

import torch

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.errors import ConfigError, StorageError
from koelectra_dist.pretrain.optim import ElectraAdamW, electra_schedule, param_groups


class Engine(Protocol):
    """What the training machinery uses of a DeepSpeed engine (`deepspeed.DeepSpeedEngine`): the
    loop's forward, backward and step, the wrapped module (held-out evaluation), the metrics'
    learning rate and gradient norm, and the checkpoint modules' save and load."""

    device: torch.device
    module: torch.nn.Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def backward(self, loss: torch.Tensor) -> Any: ...

    def step(self) -> None: ...

    def get_lr(self) -> list[float]: ...

    def get_global_grad_norm(self) -> float | torch.Tensor | None: ...

    def save_checkpoint(self, save_dir: str, tag: str | None = None) -> Any: ...

    def load_checkpoint(
        self, load_dir: str, tag: str | None = None, *, load_optimizer_states: bool, load_lr_scheduler_states: bool
    ) -> tuple[str | None, Any]: ...


# Keys `ds_config` derives from the run's own fields: a user's deepspeed_config may not set them.
OWNED_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "bf16",
    "fp16",
    "optimizer",
    "scheduler",
    "zero_optimization.stage",
)


def ds_config(
    cfg: Config, user: dict[str, Any] | None = None, *, workers: int | None = None, load_universal: bool = False
) -> dict[str, Any]:
    """The DeepSpeed config dict for this run on `workers` workers (default: distributed.num_workers)
    (optimizer and scheduler are passed as objects), with the user's own settings
    (`distributed.deepspeed_config`, already read) merged over it. `load_universal`: the engine
    will load a universal checkpoint (one written by another number of workers)."""
    t, d = cfg.train, cfg.distributed
    on_gpu = d.gpus_per_worker > 0
    config: dict[str, Any] = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps(workers),
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {
            "stage": d.zero_stage,
            "reduce_bucket_size": d.reduce_bucket_size,
            "allgather_bucket_size": d.allgather_bucket_size,
            "overlap_comm": d.overlap_comm and on_gpu,
        },
        # ElectraAdamW (ELECTRA's update) is not one of DeepSpeed's tested optimizers.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,
        # No timers: DeepSpeed's throughput and wall-clock timers synchronise the device every step.
        "wall_clock_breakdown": False,
        "timers": {"throughput": {"enabled": False}},
    }
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    if d.precision == "bf16":
        config["bf16"] = {"enabled": True}
        if d.zero_stage >= 2:
            # Accumulate gradients over micro-batches in fp32, not bf16 (DeepSpeed's default). Its
            # ZeRO 0 path supports only bf16, and at ZeRO 1 fp32 switches to another optimizer
            # whose checkpoints DeepSpeed's zero_to_fp32 (the export) cannot read.
            config["data_types"] = {"grad_accum_dtype": "fp32"}
    elif d.precision == "fp16":
        # loss_scale 0 = dynamic loss scaling; overflowing steps are skipped and counted.
        config["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    return _merged(config, user or {})


def _owned(user: dict[str, Any], prefix: str = "") -> list[str]:
    """The user's keys that set an owned key, or replace a section holding one with a non-object
    (`"zero_optimization": null` would drop the stage and crash DeepSpeed)."""
    found = []
    for key, value in user.items():
        dotted = prefix + key
        holds = [k for k in OWNED_KEYS if k.startswith(dotted + ".")]
        if dotted in OWNED_KEYS:
            found.append(dotted)
        elif isinstance(value, dict):
            found += _owned(value, dotted + ".")
        elif holds:
            found.append(f"{dotted} to {json.dumps(value)} (it must be an object: it holds {', '.join(holds)})")
    return found


def _merged(base: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in user.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def user_ds_config(uri: str | None) -> dict[str, Any]:
    """The user's DeepSpeed settings file; ConfigError naming the keys this project owns."""
    if uri is None:
        return {}
    try:
        user = storage.read_json(uri)
    except (StorageError, ValueError) as e:
        raise ConfigError(f"distributed.deepspeed_config {uri}: cannot be read as JSON ({e})") from None
    if not isinstance(user, dict):
        raise ConfigError(f"distributed.deepspeed_config {uri}: the top level must be a JSON object")
    owned = _owned(user)
    if owned:
        raise ConfigError(
            f"distributed.deepspeed_config {uri} sets {', '.join(owned)}, which come from this project's own "
            "fields (train.*, distributed.zero_stage, distributed.precision); remove them there and set those fields"
        )
    return user


def import_deepspeed() -> ModuleType:
    """DeepSpeed, imported with MLflow hidden: its autotuner, which this project never runs, imports
    MLflow at import time when it is installed (the `[mlflow]` extra), 1-2 s in every worker process.
    A `None` in `sys.modules` makes `import mlflow` raise ImportError, DeepSpeed's "not installed"."""
    if "deepspeed" not in sys.modules and "mlflow" not in sys.modules:
        sys.modules["mlflow"] = None  # type: ignore[assignment]
        try:
            import deepspeed
        finally:
            del sys.modules["mlflow"]
    import deepspeed

    return deepspeed


def skip_cpu_shm_build() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory op (g++, minutes on a fresh machine)
    when its comm backend starts. It only serves inference all-reduce, never training, so we mark
    it incompatible: DeepSpeed then uses the process group (gloo) for everything. (Called after
    `import_deepspeed`.)"""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def fused_adam_available() -> bool:
    """DeepSpeed's FusedAdam needs CUDA and its compiled (or compilable) op."""
    if not torch.cuda.is_available():
        return False
    try:
        from deepspeed.ops.op_builder import FusedAdamBuilder

        return bool(FusedAdamBuilder().is_compatible())
    except ImportError:
        return False


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`train.optimizer`'s update with decoupled decay: ELECTRA's (no bias correction) or AdamW's
    (bias-corrected); DeepSpeed's FusedAdam (one kernel for all parameters) on GPUs where its op is
    available, else ElectraAdamW or torch's AdamW (the same math)."""
    t = cfg.train
    groups = param_groups(model, t.weight_decay)
    bias_correction = t.optimizer == "adamw"
    if cfg.distributed.gpus_per_worker and fused_adam_available():
        from deepspeed.ops.adam import FusedAdam

        return FusedAdam(
            groups,
            lr=t.learning_rate,
            betas=tuple(t.adam_betas),
            eps=t.adam_eps,
            bias_correction=bias_correction,
            adam_w_mode=True,
        )
    if bias_correction:
        return torch.optim.AdamW(groups, lr=t.learning_rate, betas=tuple(t.adam_betas), eps=t.adam_eps)
    return ElectraAdamW(groups, lr=t.learning_rate, betas=tuple(t.adam_betas), eps=t.adam_eps)


def build_engine(
    cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *, load_universal: bool = False
) -> tuple[Engine, torch.optim.Optimizer, Any]:
    """`deepspeed.initialize` over an already-initialised torch process group (Ray Train's), with
    `make_optimizer`'s optimizer unless another is given; `load_universal` as in `ds_config`."""
    deepspeed = import_deepspeed()

    if cfg.distributed.gpus_per_worker == 0:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        skip_cpu_shm_build()
    optimizer = optimizer or make_optimizer(cfg, model)

    def scheduler(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return electra_schedule(opt, cfg)

    deepspeed.init_distributed(dist_backend="gloo" if cfg.distributed.gpus_per_worker == 0 else "nccl")
    engine, ds_optimizer, _, lr_scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config(
            cfg,
            user_ds_config(cfg.distributed.deepspeed_config),
            workers=torch.distributed.get_world_size(),
            load_universal=load_universal,
        ),
    )
    return engine, ds_optimizer, lr_scheduler
