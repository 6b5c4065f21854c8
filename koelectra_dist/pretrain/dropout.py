"""Cheaper dropout for training on CPU.

On CPU, torch's dropout draws one random number per element (`bernoulli_`), and SDPA with
`dropout_p > 0` leaves its fused kernel for the unfused math path, which draws them again: on a
Small step that is about a fifth of the time. Here one 64-bit draw serves four elements (16-bit
lanes compared with a threshold, so the drop probability is rounded to a multiple of 1/65536), and
attention with dropout runs as plain matmul + softmax + that mask. On other devices, and whenever
dropout is off, the towers use torch's own dropout and SDPA unchanged (fused on GPU).

`use_cpu_fast_dropout(model)` switches a `transformers` ELECTRA model over; parameters, state-dict
keys and the saved config are unchanged, so export is not affected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

ATTENTION = "koelectra_sdpa"
"""Registered with `transformers`: SDPA, except for CPU training with attention dropout."""
_LANES = 65536


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """Bool mask of `shape`, each element kept with probability 1 - round(p * 65536) / 65536,
    from the device's default generator (so the per-micro-batch seed of loop.py covers it)."""
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:numel].view(shape)  # uniform over [-32768, 32767]
    return lanes >= round(p * _LANES) - _LANES // 2


def kept_fraction(p: float) -> float:
    """The probability that `keep_mask` keeps an element (1 - p up to the 1/65536 rounding)."""
    return 1.0 - round(p * _LANES) / _LANES


def fast_dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout of `x` with `keep_mask`: kept elements scaled by 1 / kept fraction."""
    return x * keep_mask(x.shape, p, x.device) * (1.0 / kept_fraction(p))


class CpuFastDropout(nn.Dropout):
    """`nn.Dropout` that uses `fast_dropout` above when training on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.p > 0 and x.device.type == "cpu":
            return fast_dropout(x, self.p)
        return F.dropout(x, self.p, self.training, self.inplace)


def attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """`transformers` attention function ([B, H, T, D] in, [B, T, H, D] out). SDPA unless this is CPU
    training with attention dropout, where SDPA's own fallback is the same math with a dearer mask."""
    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.size(-1) ** -0.5)
    if attention_mask is not None:  # sdpa_mask's format: True = attend, or an additive float mask
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(scores.softmax(-1), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_cpu_fast_dropout(model: PreTrainedModel) -> None:
    """Switch `model`'s dropout modules and attention to the ones above (in place)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, CpuFastDropout(child.p, child.inplace).train(child.training))
    model.set_attn_implementation(ATTENTION)
