"""The ELECTRA pre-training objective: a generator and a discriminator sharing one embeddings module.

Both towers are plain `transformers` classes (`ElectraForMaskedLM`, `ElectraForPreTraining`), so
`model.generator.save_pretrained(...)` / `model.discriminator.save_pretrained(...)` export them with
no renaming. What this module adds is ELECTRA's objective, done on the device
without host syncs: masking, the generator head on masked positions only, Gumbel-max sampling,
replaced-token labels, both losses and the health metrics. Rows holding several examples
(`example_ids`) attend within each example only (`example_attention_mask`). Attention is PyTorch's SDPA; on CPU the
towers' dropout comes from `koelectra_dist.pretrain.dropout` (p rounded to 1/65536, a quarter of
the random draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist.config import ModelConfig
from koelectra_dist.errors import ConfigError, DataError
from koelectra_dist.pretrain.dropout import use_cpu_fast_dropout
from koelectra_dist.pretrain.vocab_pass import FusedVocabPass
from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds

MASK_TOKEN_FRACTION = 0.85
"""Of the chosen positions, this fraction becomes [MASK]; the rest keep their token (none random)."""


def hf_configs(model_cfg: ModelConfig, special: SpecialIds = DEFAULT_IDS) -> tuple[ElectraConfig, ElectraConfig]:
    """The `transformers` configs of the (generator, discriminator), attention through SDPA;
    `special`: the shards' tokenizer's ids (its [PAD] id goes into the configs)."""
    common = dict(
        vocab_size=model_cfg.vocab_size,
        embedding_size=model_cfg.embedding_size,
        num_hidden_layers=model_cfg.num_hidden_layers,
        hidden_act="gelu",
        hidden_dropout_prob=model_cfg.hidden_dropout,
        attention_probs_dropout_prob=model_cfg.attention_dropout,
        max_position_embeddings=model_cfg.max_length,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=special.pad,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    generator = ElectraConfig(
        hidden_size=model_cfg.generator_hidden_size(),
        num_attention_heads=model_cfg.generator_num_attention_heads(),
        intermediate_size=model_cfg.generator_intermediate_size(),
        **common,
    )
    discriminator = ElectraConfig(
        hidden_size=model_cfg.hidden_size,
        num_attention_heads=model_cfg.num_attention_heads,
        intermediate_size=model_cfg.intermediate_size,
        **common,
    )
    return generator, discriminator


def max_predictions(mask_prob: float, max_length: int) -> int:
    """ELECTRA's cap on masked positions per example."""
    return int((mask_prob + 0.005) * max_length)


def example_attention_mask(example_ids: Tensor) -> Tensor:
    """[B, 1, T, T] bool, True where query and key belong to the same example of their row
    (`example_ids` [B, T], -1 on padding: padding attends only to padding, so no softmax row is
    empty, and no example sees it). `transformers` passes a 4D mask through unchanged to SDPA (or
    to `dropout.attention`); the masked blocks are computed, then ignored."""
    return (example_ids.unsqueeze(-1) == example_ids.unsqueeze(-2)).unsqueeze(1)


@dataclass
class MaskedBatch:
    """Where and how an input batch was masked; K prediction slots per row, the first `count` valid."""

    input_ids: Tensor
    """[B, T] the input with [MASK] at 85% of the chosen positions."""
    positions: Tensor
    """[B, K] int64 chosen positions (distinct within a row; invalid slots point anywhere)."""
    valid: Tensor
    """[B, K] bool: the slot holds a chosen position."""
    targets: Tensor
    """[B, K] the original token at each slot's position."""


def mask_tokens(
    input_ids: Tensor, attention_mask: Tensor, mask_prob: float, cap: int, special: SpecialIds = DEFAULT_IDS
) -> MaskedBatch:
    """Choose `min(cap, max(1, round(mask_prob * real tokens)))` distinct positions per row among
    tokens that are not [CLS]/[SEP]/[MASK]/[PAD] (`special`: the shards' tokenizer's ids),
    uniformly, with the device's default RNG."""
    batch, length = input_ids.shape
    real = attention_mask.bool()
    candidates = real
    for token_id in special.never_masked:  # comparisons with Python ints: no host-to-device copy
        candidates = candidates & (input_ids != token_id)
    # float64 so that the per-row count and the Python slot count K round the same way
    wanted = torch.round(real.sum(-1).double() * mask_prob).clamp(min=1, max=cap)
    count = torch.minimum(wanted.long(), candidates.sum(-1))
    slots = max(1, min(cap, length, round(length * mask_prob)))
    # Random keys; non-candidates sort last, so the top `count` slots are a uniform candidate subset.
    keys = torch.rand(batch, length, device=input_ids.device).masked_fill(~candidates, -1.0)
    positions = keys.topk(slots, dim=-1).indices
    valid = torch.arange(slots, device=input_ids.device) < count.unsqueeze(-1)
    targets = input_ids.gather(1, positions)
    to_mask = valid & (torch.rand(batch, slots, device=input_ids.device) < MASK_TOKEN_FRACTION)
    masked = input_ids.scatter(1, positions, torch.where(to_mask, special.mask, targets))
    return MaskedBatch(input_ids=masked, positions=positions, valid=valid, targets=targets)


@torch.no_grad()
def gumbel_sample(logits: Tensor) -> Tensor:
    """One token per row of `logits` [..., V] from softmax(logits): Gumbel-max in fp32 (Gumbel noise
    underflows in half precision), no gradient."""
    with torch.autocast(logits.device.type, enabled=False):
        scores = torch.rand(logits.shape, device=logits.device, dtype=torch.float32)
        # -log(-log(u)), in place to keep one V-wide buffer
        scores.add_(1e-9).log_().neg_().add_(1e-9).log_().neg_()
        scores.add_(logits.float())
        return scores.argmax(-1)


@dataclass
class PretrainOutput:
    loss: Tensor
    """0-d: gen_weight * generator loss + disc_weight * discriminator loss."""
    metrics: dict[str, Tensor]
    """0-d detached tensors, computed on the device (no host sync)."""
    gen_loss: Tensor
    """0-d generator cross-entropy at the masked positions (differentiable)."""
    disc_loss: Tensor
    """0-d discriminator sigmoid cross-entropy over real tokens (differentiable)."""
    masked: MaskedBatch
    """The generator's input and the prediction slots."""
    fake_input_ids: Tensor
    """[B, T] the discriminator's input: sampled tokens at the chosen positions."""
    replaced: Tensor
    """[B, T] bool discriminator labels: real token differing from the original."""
    disc_logits: Tensor
    """[B, T] discriminator logits."""


def masked_lm_logits(
    generator: ElectraForMaskedLM,
    masked: MaskedBatch,
    attention_mask: Tensor,
    token_type_ids: Tensor,
    position_ids: Tensor | None = None,
) -> Tensor:
    """[B, K, V] logits of an ELECTRA generator at the prediction slots only; the head never sees an
    unmasked position (invalid slots get zero hidden states)."""
    hidden = generator.electra(
        input_ids=masked.input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        position_ids=position_ids,
    ).last_hidden_state
    index = masked.positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    picked = hidden.gather(1, index).masked_fill(~masked.valid.unsqueeze(-1), 0.0)
    return generator.generator_lm_head(generator.generator_predictions(picked))


def corrupted(input_ids: Tensor, masked: MaskedBatch, sampled: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """ELECTRA's discriminator input [B, T] (`sampled` [B, K] tokens at the valid slots) and its
    labels: real tokens differing from the original."""
    fake = input_ids.scatter(1, masked.positions, torch.where(masked.valid, sampled, masked.targets))
    return fake, (fake != input_ids) & real


class ElectraPretrainer(nn.Module):
    """Generator (`.generator`, ElectraForMaskedLM) + discriminator (`.discriminator`,
    ElectraForPreTraining) trained jointly with ELECTRA's replaced-token-detection objective."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        mask_prob: float = 0.15,
        gen_weight: float = 1.0,
        disc_weight: float = 50.0,
        fused_vocab: bool = False,
        special: SpecialIds = DEFAULT_IDS,
    ):
        super().__init__()
        if not 0 < mask_prob < 1:
            raise ConfigError(f"mask_prob must be a fraction in (0, 1), got {mask_prob}")
        self.model_cfg = model_cfg
        self.max_length = model_cfg.max_length
        self.mask_prob = mask_prob
        self.special = special
        """The shards' tokenizer's special ids (masking skips them, [MASK] replaces)."""
        self.gen_weight = gen_weight
        self.disc_weight = disc_weight
        self.cap = max(1, max_predictions(mask_prob, model_cfg.max_length))
        # the generator's cross-entropy, sample and accuracy in one compiled pass (vocab_pass.py)
        self.fused_vocab = FusedVocabPass() if fused_vocab else None
        gen_cfg, disc_cfg = hf_configs(model_cfg, special)
        # post_init in each applies ELECTRA's init (normal 0.02, zero bias, LayerNorm 1) and ties
        # the generator's output layer to its word embeddings.
        self.generator = ElectraForMaskedLM(gen_cfg)
        self.discriminator = ElectraForPreTraining(disc_cfg)
        # One embeddings module (word, position, token type, LayerNorm) for both towers; each tower
        # keeps its own embeddings_project.
        self.discriminator.electra.embeddings = self.generator.electra.embeddings
        for tower in (self.generator, self.discriminator):
            use_cpu_fast_dropout(tower)

    def flops_per_token(self, seq_len: int) -> float:
        """Matmul FLOPs of one training step per real token (for MFU)."""
        return train_flops_per_token(self.model_cfg, seq_len, self.mask_prob)

    def generator_logits(
        self,
        masked: MaskedBatch,
        attention_mask: Tensor | None,
        token_type_ids: Tensor,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """[B, K, V] generator logits at the prediction slots only (see `masked_lm_logits`)."""
        return masked_lm_logits(self.generator, masked, attention_mask, token_type_ids, position_ids)

    def discriminator_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """[B, T] discriminator logits ("replaced" > 0)."""
        return self.discriminator(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids
        ).logits

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor,
        position_ids: Tensor | None = None,
        example_ids: Tensor | None = None,
        with_metrics: bool = True,
    ) -> PretrainOutput:
        """The joint loss on one batch. `attention_mask` None: every position is real (no padding),
        and attention runs without a mask. `position_ids` default to 0..T-1 in every row.
        `example_ids` (rows of several examples, see `example_attention_mask`): each token attends
        only to its own example's. Without `with_metrics` the discriminator's AUC (a sort over
        every token, the costly health metric) is left out: it is for log steps."""
        shapes = [t.shape for t in (attention_mask, token_type_ids, position_ids, example_ids) if t is not None]
        if input_ids.dim() != 2 or any(shape != input_ids.shape for shape in shapes):
            raise DataError(
                "input_ids, attention_mask, token_type_ids, position_ids and example_ids must all be "
                f"[batch, seq]; got {tuple(input_ids.shape)}, {[tuple(shape) for shape in shapes]}"
            )
        if input_ids.size(1) > self.max_length:
            raise DataError(
                f"sequence length {input_ids.size(1)} exceeds model.max_length {self.max_length}; "
                "rebuild the shards with the model's max_length"
            )
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        # the towers' mask: padding only, or block-diagonal over the row's examples
        towers_mask = attention_mask if example_ids is None else example_attention_mask(example_ids)
        masked = mask_tokens(input_ids, real, self.mask_prob, self.cap, self.special)
        gen_logits = self.generator_logits(masked, towers_mask, token_type_ids, position_ids)
        gen_correct = None
        if self.fused_vocab is None:
            sampled = gumbel_sample(gen_logits.detach())
            gen_ce = F.cross_entropy(gen_logits.float().flatten(0, 1), masked.targets.flatten(), reduction="none")
        else:
            # gumbel_sample's own draw, in eager: the same samples for the same seed
            noise = torch.rand(gen_logits.shape, device=gen_logits.device, dtype=torch.float32)
            gen_ce, sampled, gen_correct = self.fused_vocab(
                gen_logits.flatten(0, 1), noise.flatten(0, 1), masked.targets.flatten()
            )
            sampled, gen_correct = sampled.view_as(masked.targets), gen_correct.view_as(masked.targets)
        fake, replaced = corrupted(input_ids, masked, sampled, real)
        disc_logits = self.discriminator_logits(fake, towers_mask, token_type_ids, position_ids)

        valid_f = masked.valid.float()
        n_masked = valid_f.sum().clamp(min=1.0)
        gen_loss = (gen_ce * valid_f.flatten()).sum() / n_masked
        disc_loss = replaced_token_loss(disc_logits, replaced, real)
        loss = self.gen_weight * gen_loss + self.disc_weight * disc_loss
        metrics = pretrain_metrics(
            gen_logits, masked, disc_logits, replaced, real, auc=with_metrics, gen_correct=gen_correct
        )
        metrics.update(gen_loss=gen_loss.detach(), disc_loss=disc_loss.detach())
        return PretrainOutput(
            loss=loss,
            metrics=metrics,
            gen_loss=gen_loss,
            disc_loss=disc_loss,
            masked=masked,
            fake_input_ids=fake,
            replaced=replaced,
            disc_logits=disc_logits,
        )


def replaced_token_loss(disc_logits: Tensor, replaced: Tensor, real: Tensor) -> Tensor:
    """0-d discriminator sigmoid cross-entropy (fp32), averaged over the real tokens."""
    bce = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced.float(), reduction="none")
    return (bce * real).sum() / real.sum().clamp(min=1)


@torch.no_grad()
def pretrain_metrics(
    gen_logits: Tensor,
    masked: MaskedBatch,
    disc_logits: Tensor,
    replaced: Tensor,
    real: Tensor,
    auc: bool = True,
    gen_correct: Tensor | None = None,
) -> dict[str, Tensor]:
    """ELECTRA's health metrics as 0-d device tensors ("replaced" is the positive class); the AUC
    (a sort over every token) only with `auc`. `gen_correct` [B, K]: whether the generator's argmax
    is the target, when the fused vocab pass already knows (else computed from `gen_logits`)."""
    if gen_correct is None:
        gen_correct = gen_logits.argmax(-1) == masked.targets
    n_masked = masked.valid.sum().float()
    n_real = real.sum().float()
    predicted = (disc_logits > 0) & real
    true_pos = (predicted & replaced).sum().float()
    return {
        "gen_acc": (gen_correct & masked.valid).sum() / n_masked.clamp(min=1),
        "disc_acc": (((disc_logits > 0) == replaced) & real).sum() / n_real.clamp(min=1),
        "disc_precision": true_pos / predicted.sum().clamp(min=1),
        "disc_recall": true_pos / replaced.sum().clamp(min=1),
        "replaced_frac": replaced.sum() / n_real.clamp(min=1),
        "masked_tokens": n_masked,
        "real_tokens": n_real,
        **({"disc_auc": binary_auc(disc_logits, replaced, real)} if auc else {}),
    }


@torch.no_grad()
def binary_auc(scores: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """ROC AUC of `scores` for `labels` over the positions where `weights` is true (Mann-Whitney U
    from ranks after one sort; ties counted in sort order). 0.5 when a class is absent."""
    order = scores.float().flatten().argsort()
    kept = weights.flatten()[order].double()
    positive = labels.flatten()[order].double() * kept
    ranks = kept.cumsum(0)
    n_pos = positive.sum()
    n_neg = kept.sum() - n_pos
    u = (ranks * positive).sum() - n_pos * (n_pos + 1) / 2
    auc = u / (n_pos * n_neg).clamp(min=1)
    return torch.where(n_pos * n_neg > 0, auc, torch.full_like(auc, 0.5)).float()


def tower_flops_per_token(hidden: int, ffn: int, layers: int, embedding: int, seq_len: int) -> float:
    """Matmul FLOPs of one encoder's forward pass per token at `seq_len` (projections, attention
    scores and values, feed-forward; the embedding projection when its width differs)."""
    layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq_len * hidden
    return layers * layer + (2 * embedding * hidden if embedding != hidden else 0)


def train_flops_per_token(model_cfg: ModelConfig, seq_len: int, mask_prob: float = 0.15) -> float:
    """Matmul FLOPs of one training step per real token (3x forward: forward + backward): both
    towers at `seq_len`, the discriminator head, and the generator head on masked tokens only."""
    m = model_cfg
    hidden, gen_hidden, emb = m.hidden_size, m.generator_hidden_size(), m.embedding_size
    disc = tower_flops_per_token(hidden, m.intermediate_size, m.num_hidden_layers, emb, seq_len)
    disc += 2 * hidden * hidden + 2 * hidden
    gen_head = 2 * gen_hidden * emb + 2 * emb * m.vocab_size
    gen = tower_flops_per_token(gen_hidden, m.generator_intermediate_size(), m.num_hidden_layers, emb, seq_len)
    return 3.0 * (disc + gen + mask_prob * gen_head)
