"""DeepSpeed engine construction: config dict, ELECTRA's optimizer and learning-rate schedule.

Pure helpers (`lr_at`, `ds_config`, `param_groups`) are kept free of distributed state so that
they can be tested directly; `build_engine` is the only function that touches DeepSpeed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from koelectra_dist.config import Config

# ELECTRA excludes these from weight decay (google-research/electra optimization.py).
NO_DECAY_MARKERS = ("LayerNorm", "layer_norm", "bias")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """ELECTRA's multiplier: linear warm-up times linear decay; they overlap, they do not chain."""
    warm = 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)
    return warm * max(0.0, 1.0 - step / total_steps)


def lr_at(step: int, cfg: Config) -> float:
    """Learning rate used by optimizer step `step` (0-based): `lr * min(1, step/warmup) * (1 - step/total)`."""
    t = cfg.train
    return t.learning_rate * lr_factor(step, t.warmup_steps, t.steps)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and LayerNorm/bias without decay. Shared parameters (the
    embeddings used by generator and discriminator) appear once."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if any(m in name for m in NO_DECAY_MARKERS) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class ElectraAdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay and NO bias correction, as ELECTRA's
    AdamWeightDecayOptimizer: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * (m / (sqrt(v) + eps) + wd * p). Without bias correction the first updates are
    smaller (m starts at 0), which the warm-up hides; we keep it to reproduce ELECTRA."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads = [p.grad for p in params]
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denom, group["eps"])
            update = torch._foreach_div(exp_avg, denom)
            if group["weight_decay"]:
                torch._foreach_add_(update, params, alpha=group["weight_decay"])
            torch._foreach_add_(params, update, alpha=-group["lr"])
        return loss


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
