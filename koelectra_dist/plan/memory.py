"""Per-GPU memory of a pre-training run by ZeRO stage: model and optimizer states (DeepSpeed's own
estimators for ZeRO 2 and 3, the same accounting for 0 and 1), ZeRO's communication buckets, and
activations by a stated formula; the largest micro-batch that fits."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

from koelectra_dist.config import ModelConfig
from koelectra_dist.pretrain.config import DistributedConfig

HEADROOM = 0.10
"""Share of device memory kept free for the CUDA context, NCCL's buffers and allocator fragmentation."""


@dataclass(frozen=True)
class ParamCount:
    total: int
    """Parameters of generator + discriminator, the shared embeddings counted once (DeepSpeed's
    `model_to_params` of the stage's model)."""
    largest_layer: int
    """Most parameters held directly by one module (the generator's output layer: the tied word
    embeddings and its bias), which ZeRO 3 gathers whole."""


def _tower_layers(hidden: int, ffn: int, layers: int) -> int:
    # q, k, v, output projections with biases; two LayerNorms; the feed-forward in and out
    return layers * (4 * hidden * hidden + 4 * hidden + 2 * hidden * ffn + ffn + hidden + 4 * hidden)


def param_count(m: ModelConfig) -> ParamCount:
    """Parameters of `ElectraPretrainer(m)` by arithmetic (tests pin it against the built model)."""
    e, v, h, hg = m.embedding_size, m.vocab_size, m.hidden_size, m.generator_hidden_size()
    embeddings = v * e + m.max_length * e + 2 * e + 2 * e  # word, position, token type, LayerNorm
    project = sum(e * width + width for width in (h, hg) if width != e)
    disc = _tower_layers(h, m.intermediate_size, m.num_hidden_layers) + (h * h + h) + (h + 1)
    gen = _tower_layers(hg, m.generator_intermediate_size(), m.num_hidden_layers) + (hg * e + e) + 2 * e + v
    largest = max(v * e + v, h * m.intermediate_size + m.intermediate_size, m.max_length * e)
    return ParamCount(total=embeddings + project + disc + gen, largest_layer=largest)


def _deepspeed_estimators():  # noqa: ANN202
    # DeepSpeed logs its accelerator choice to stdout on import; keep stdout for the plan's output.
    with contextlib.redirect_stdout(sys.stderr):
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    return estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs


def model_states_bytes(params: ParamCount, stage: int, gpus: int, precision: str) -> int:
    """Parameters, gradients and Adam states per GPU, no offload. Mixed precision (bf16/fp16), as
    DeepSpeed's estimators count it: 2 bytes/param of 16-bit weights, and 18 of 16-bit gradients, fp32
    gradients, fp32 master weights and two fp32 Adam moments, of which ZeRO 1 partitions the 16 of
    the optimizer (fp32 gradient partition, master, moments), ZeRO 2 all 18 (DeepSpeed's ZeRO 2
    estimator), ZeRO 3 also the weights, keeping the largest layer whole (its ZeRO 3 estimator).
    fp32: 4 (weights) + 4 (gradients) + 8 (moments), partitioned the same way."""
    p, n = params.total, gpus
    if precision == "fp32":
        replicated, partitioned = {0: (16, 0), 1: (8, 8), 2: (4, 12), 3: (0, 16)}[stage]
        extra = 4 * params.largest_layer if stage == 3 else 0
        return int(replicated * p + partitioned * p / n + extra)
    zero2, zero3 = _deepspeed_estimators()
    if stage == 3:
        # GPU memory depends only on the total GPU count (nodes matter to the CPU figure alone)
        return zero3(p, params.largest_layer, n, 1, cpu_offload=False)[1]
    if stage == 2:
        return zero2(p, n, 1, cpu_offload=False)[1]
    if stage == 1:
        return int(4 * p + 16 * p / n)
    return zero2(p, 1, 1, cpu_offload=False)[1]  # nothing partitioned: ZeRO 2's count on one GPU


def bucket_bytes(stage: int, distributed: DistributedConfig, precision: str) -> int:
    """ZeRO's communication buffers: one reduce bucket and one all-gather (ZeRO 3: prefetch) bucket
    of 16-bit elements (fp32 with fp32 training); none without ZeRO."""
    if stage == 0:
        return 0
    width = 4 if precision == "fp32" else 2
    return width * (distributed.reduce_bucket_size + distributed.allgather_bucket_size)


def prediction_slots(mask_prob: float, seq: int) -> int:
    """Masked positions per row the generator's head runs on (`pretrain.model.mask_tokens`' K)."""
    cap = int((mask_prob + 0.005) * seq)
    return max(1, min(cap, seq, round(seq * mask_prob)))


def activation_bytes(m: ModelConfig, micro_batch: int, seq: int, mask_prob: float, precision: str) -> int:
    """Activations kept for the backward pass of one micro-batch, both towers.

    Per encoder layer of width h and feed-forward f, with 16-bit activations and 1-byte dropout
    masks: s*b*(18h + 4f) bytes, i.e. Korthikanti et al. 2022 ("Reducing Activation Recomputation in
    Large Transformer Models", 34*s*b*h at f = 4h) without their 5*a*s^2*b attention-score term,
    which fused attention (SDPA's flash / memory-efficient kernels) never stores. Plus the shared
    embeddings run once per tower (5*s*b*e each), the discriminator head (4*s*b*h), and the
    generator's logits at its k masked slots (b*k*V*6: 16-bit logits and their fp32 softmax).
    fp32 training doubles it all."""
    s, b = seq, micro_batch
    layer = m.num_hidden_layers * s * b
    disc = layer * (18 * m.hidden_size + 4 * m.intermediate_size)
    gen = layer * (18 * m.generator_hidden_size() + 4 * m.generator_intermediate_size())
    embeddings = 2 * 5 * s * b * m.embedding_size
    heads = 4 * s * b * m.hidden_size + 6 * b * prediction_slots(mask_prob, seq) * m.vocab_size
    total = disc + gen + embeddings + heads
    return total * (2 if precision == "fp32" else 1)


def largest_micro_batch(fixed_bytes: int, per_example_bytes: int, usable_bytes: int) -> int:
    """The largest micro-batch whose activations fit beside `fixed_bytes`; 0 if none."""
    room = usable_bytes - fixed_bytes
    return max(0, room // per_example_bytes) if per_example_bytes > 0 else 0
