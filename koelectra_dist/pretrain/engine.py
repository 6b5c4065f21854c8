"""DeepSpeed engine construction: the config dict, and the engine over ELECTRA's optimizer and schedule.

`ds_config` is a pure function, tested directly; `build_engine` is the only function that touches
DeepSpeed.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from koelectra_dist.config import Config
from koelectra_dist.pretrain.optim import ElectraAdamW, lr_factor, param_groups


def ds_config(cfg: Config) -> dict[str, Any]:
    """The DeepSpeed config dict for this run (optimizer and scheduler are passed as objects)."""
    t, d = cfg.train, cfg.distributed
    config: dict[str, Any] = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps(),
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": d.zero_stage},
        # Our optimizer is ELECTRA's AdamW variant, not one of DeepSpeed's fused ones.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
    if d.precision == "bf16":
        config["bf16"] = {"enabled": True}
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
    return config


def skip_cpu_shm_build() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory op (g++, minutes on a fresh machine)
    when its comm backend starts. It only serves inference all-reduce, never training, so we mark
    it incompatible: DeepSpeed then uses the process group (gloo) for everything."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def build_engine(cfg: Config, model: torch.nn.Module) -> tuple[Any, torch.optim.Optimizer, Any]:
    """`deepspeed.initialize` over an already-initialised torch process group (Ray Train's)."""
    import deepspeed

    if cfg.distributed.gpus_per_worker == 0:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        skip_cpu_shm_build()
    t = cfg.train
    optimizer = ElectraAdamW(
        param_groups(model, t.weight_decay), lr=t.learning_rate, betas=tuple(t.adam_betas), eps=t.adam_eps
    )

    def scheduler(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, t.warmup_steps, t.steps))

    deepspeed.init_distributed(dist_backend="gloo" if cfg.distributed.gpus_per_worker == 0 else "nccl")
    engine, ds_optimizer, _, lr_scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config(cfg)
    )
    return engine, ds_optimizer, lr_scheduler
