"""ELECTRA's optimizer and learning-rate schedule: pure PyTorch, free of distributed state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from koelectra_dist.config import Config
from koelectra_dist.training import linear_decay

# ELECTRA excludes these from weight decay (google-research/electra optimization.py).
NO_DECAY_MARKERS = ("LayerNorm", "layer_norm", "bias")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """ELECTRA's multiplier: linear warm-up times linear decay; they overlap, they do not chain."""
    warm = 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)
    return warm * linear_decay(step, total_steps)


def lr_at(step: int, cfg: Config) -> float:
    """Learning rate used by optimizer step `step` (0-based): `lr * min(1, step/warmup) * (1 - step/total)`."""
    t = cfg.train
    return t.learning_rate * lr_factor(step, t.warmup_steps, t.steps)


def electra_schedule(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler DeepSpeed steps once after each optimizer step: optimizer step s (0-based)
    runs at `lr_at(s, cfg)`, so the first update uses lr 0."""
    t = cfg.train
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, t.warmup_steps, t.steps))


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
    larger than Adam's: v starts at 0 and grows more slowly than m (b2 > b1), so m / sqrt(v) is
    about (1 - b1^t) / sqrt(1 - b2^t) times the corrected ratio: over 2x for the first 250 or so
    steps. The warm-up damps them; we keep it to reproduce ELECTRA."""

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
                # Not used by the update (no bias correction), but DeepSpeed's universal checkpoint
                # (ZeRO 3) reads it, as torch's Adam keeps it.
                self.state[p]["step"] = self.state[p].get("step", 0) + 1
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
