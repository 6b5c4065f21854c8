"""Research helper: cut rows into short windows that keep their true positions (diagnose_positions,
diagnose_transfer). Not used by the product."""

from __future__ import annotations

import torch
from torch import Tensor

from koelectra_dist.errors import ConfigError


def short_windows(
    input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """[B, T] rows cut into [B * T / width, width] windows that keep their true position ids
    (windows holding only padding dropped): ids, attention mask, token types, position ids.

    Attention spread over T positions gives the gradient that would teach a small model to look at
    its neighbours only ~1/T of its strength; on a synthetic copy corpus a tiny model at T = 128
    stays a bag of words for thousands of steps, over `width` positions it learns quickly, and since
    the windows tile every position the habit holds on whole rows afterwards. On real text the gain
    is small (quality.md)."""
    rows, length = input_ids.shape
    if width < 2 or length % width:
        raise ConfigError(
            f"a short window of {width} tokens must be at least 2 and divide the sequence length {length}"
        )
    positions = torch.arange(length, device=input_ids.device).expand(rows, length)
    cut = [t.reshape(-1, width) for t in (input_ids, attention_mask, token_type_ids, positions)]
    keep = cut[1].bool().any(dim=1)
    return tuple(t[keep] for t in cut)
