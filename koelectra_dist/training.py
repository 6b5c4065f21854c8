"""What every training loop shares (pretrain and distill on Ray Train, finetune in Ray tasks):
seeding, the linear decay of their learning-rate schedules, and the ETA of their console lines."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch's on every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def linear_decay(step: int, total_steps: int) -> float:
    """1 at step 0, falling linearly to 0 at `total_steps` (and 0 after it)."""
    return max(0.0, 1.0 - step / total_steps)


def format_eta(seconds: float) -> str:
    """A remaining time as h:mm:ss (or m:ss under an hour)."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
