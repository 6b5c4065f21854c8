"""The generator's work over the vocabulary in one pass: cross-entropy, Gumbel-max sample and
argmax accuracy from the same [masked slots x vocab] logits.

The reference (`model.py`: `gumbel_sample`, `F.cross_entropy`, `argmax`) reads the V-wide rows
four times and writes two V-wide temporaries; here `torch.compile` fuses the three reductions
over each row (and the backward, softmax - one-hot). The uniform noise is drawn in eager, before
the compiled call, with the same `torch.rand` call as `gumbel_sample`: inductor's own RNG gives
other numbers than eager's (unless `torch._inductor.config.fallback_random`, which is global and
slows every compiled random op), so drawing it outside keeps the samples identical to the
reference for the same seed (the per-micro-batch seed of loop.py covers it).

Where `torch.compile` cannot run (no C++ compiler, an unsupported platform), the same function
runs eagerly, with one logged warning.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


def vocab_pass(logits: Tensor, noise: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From `logits` [N, V], uniform `noise` [N, V] (fp32, as `torch.rand` draws it) and `targets`
    [N]: the per-row cross-entropy [N] (fp32, differentiable), the Gumbel-max sample [N] (no
    gradient) and whether the argmax is the target [N] bool. Written as `gumbel_sample` computes,
    in fp32, so that the samples are the same."""
    x = logits.float()
    ce = F.cross_entropy(x, targets, reduction="none")
    detached = x.detach()
    gumbel = -torch.log(-torch.log(noise + 1e-9) + 1e-9)
    sampled = (gumbel + detached).argmax(-1)
    correct = detached.argmax(-1) == targets
    return ce, sampled, correct


class FusedVocabPass:
    """`vocab_pass`, compiled on first use; eager (same numbers) where compiling fails."""

    def __init__(self) -> None:
        self._compiled = None
        self._eager = False

    def __call__(self, logits: Tensor, noise: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.autocast(logits.device.type, enabled=False):
            if self._eager:
                return vocab_pass(logits, noise, targets)
            try:
                if self._compiled is None:
                    # dynamic: the slot count follows each batch's padded width; one graph for all
                    self._compiled = torch.compile(vocab_pass, dynamic=True)
                return self._compiled(logits, noise, targets)
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager function is equal
                log.warning(
                    "train.fused_vocab: torch.compile is unavailable here (%s); running the vocab pass eagerly", e
                )
                self._eager = True
                return vocab_pass(logits, noise, targets)
