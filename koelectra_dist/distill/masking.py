"""DistilBERT's masking (`distill.masking: distilbert`): the positions are drawn with probability
proportional to count(token)^-smoothing, so frequent tokens are masked less often, and each chosen
position becomes [MASK] (80%), stays (10%) or becomes a uniformly random token (10%).

DistilBERT draws ceil(15% of the batch's tokens) over the whole batch; here each row gets
round(mask_prob x its real tokens), capped as ELECTRA caps them, so the result has the prediction
slots (`MaskedBatch`) the rest of the objective reads. The token counts come from one pass over the
shards (`token_counts`), made by the driver once per shard set (`ensure_counts`: a resumed or
restarted run reuses them) and read by every worker."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import torch
from torch import Tensor

from koelectra_dist import storage
from koelectra_dist.pretrain.data import ShardSet, read_shard
from koelectra_dist.pretrain.model import MaskedBatch

FRACTIONS = (0.8, 0.1, 0.1)
"""[MASK], kept, random token: DistilBERT's word_mask / word_keep / word_rand."""


def token_counts(shards: ShardSet, vocab_size: int) -> np.ndarray:
    """How often each token id occurs in the shards ([vocab_size] int64)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for uri in shards.uris:
        counts += np.bincount(read_shard(uri, vocab_size).ids, minlength=vocab_size)
    return counts


def write_counts(uri: str, counts: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, counts)
    storage.write_bytes(uri, buf.getvalue())


def ensure_counts(uri: str, shards: ShardSet, vocab_size: int) -> None:
    """`token_counts` of `shards` at `uri` (a .npy), unless the counts there are of the same shard
    set: the pass reads every shard, so it is made once, not at every start of the driver. The shard
    set's key (its manifest's per-shard entries) is written beside them, last."""
    key_uri = uri.removesuffix(".npy") + ".json"
    key = hashlib.sha256(json.dumps([dataclasses.astuple(s) for s in shards.manifest.shards]).encode()).hexdigest()
    if storage.exists(key_uri) and storage.read_json(key_uri).get("shards") == key and storage.exists(uri):
        return
    write_counts(uri, token_counts(shards, vocab_size))
    storage.write_json(key_uri, {"shards": key})


def read_counts(uri: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(uri)))


def masking_weights(counts: np.ndarray, smoothing: float, never_masked: list[int]) -> Tensor:
    """DistilBERT's token_probs: max(count, 1)^-smoothing, 0 for the special tokens ([vocab] fp32)."""
    weights = np.maximum(counts, 1).astype(np.float64) ** -smoothing
    weights[never_masked] = 0.0
    return torch.from_numpy(weights).float()


def mask_tokens_smoothed(
    input_ids: Tensor, real: Tensor, mask_prob: float, cap: int, weights: Tensor, mask_id: int
) -> MaskedBatch:
    """Choose `min(cap, max(1, round(mask_prob * real tokens)))` distinct positions per row among
    real tokens of nonzero weight, each draw proportional to its token's weight (weighted sampling
    without replacement: the top keys of log(weight) + Gumbel noise), then apply `FRACTIONS`."""
    batch, length = input_ids.shape
    device = input_ids.device
    w = weights.to(device)[input_ids] * real
    candidates = w > 0
    wanted = torch.round(real.sum(-1).double() * mask_prob).clamp(min=1, max=cap)
    count = torch.minimum(wanted.long(), candidates.sum(-1))
    slots = max(1, min(cap, length, round(length * mask_prob)))
    noise = torch.rand(batch, length, device=device).clamp_(min=1e-12)
    keys = (w.clamp(min=1e-30).log() - (-noise.log()).log()).masked_fill(~candidates, -float("inf"))
    positions = keys.topk(slots, dim=-1).indices
    valid = torch.arange(slots, device=device) < count.unsqueeze(-1)
    targets = input_ids.gather(1, positions)
    u = torch.rand(batch, slots, device=device)
    random_tokens = torch.randint(0, weights.numel(), (batch, slots), device=device)
    keep = FRACTIONS[0] + FRACTIONS[1]
    replacement = torch.where(u < FRACTIONS[0], mask_id, torch.where(u < keep, targets, random_tokens))
    masked = input_ids.scatter(1, positions, torch.where(valid, replacement, targets))
    return MaskedBatch(input_ids=masked, positions=positions, valid=valid, targets=targets)
