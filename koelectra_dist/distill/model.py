"""The distillation objective as one module the DeepSpeed engine trains: only the student is a
registered sub-module (so checkpoints hold the student alone); the frozen teacher and generator
ride along, loaded by every worker from their folders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from koelectra_dist.distill.loss import cosine_loss, soft_binary_loss, soft_softmax_loss
from koelectra_dist.distill.masking import mask_tokens_smoothed
from koelectra_dist.distill.teacher import Teacher
from koelectra_dist.pretrain.model import (
    corrupted,
    example_attention_mask,
    gumbel_sample,
    mask_tokens,
    masked_lm_logits,
    max_predictions,
    replaced_token_loss,
    tower_flops_per_token,
)
from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds


def forward_flops_per_token(model: nn.Module, seq_len: int, mask_prob: float) -> float:
    """Matmul FLOPs per token of one forward pass of a transformers ELECTRA or BERT model with a
    discriminator head (every token) or an MLM head (masked tokens only)."""
    c = model.config
    hidden, embedding = c.hidden_size, getattr(c, "embedding_size", c.hidden_size)
    ffn = getattr(c, "intermediate_size", None) or c.hidden_dim  # DistilBertConfig: hidden_dim
    encoder = tower_flops_per_token(hidden, ffn, c.num_hidden_layers, embedding, seq_len)
    if hasattr(model, "discriminator_predictions"):
        return encoder + 2 * hidden * hidden + 2 * hidden
    return encoder + mask_prob * (2 * hidden * embedding + 2 * embedding * c.vocab_size)


@dataclass
class DistillOutput:
    loss: Tensor
    """0-d: soft_weight * soft + cosine_weight * cosine + student_weight * the student's own loss."""
    metrics: dict[str, Tensor]
    """0-d detached tensors (the pretrain loop's metrics log averages them, sums the token counts)."""


class Distiller(nn.Module):
    def __init__(
        self,
        student: nn.Module,
        teacher_model: nn.Module,
        generator: nn.Module | None,
        teacher: Teacher,
        distill_cfg: Any,
        mask_prob: float,
        special: SpecialIds = DEFAULT_IDS,
        mask_weights: Tensor | None = None,
    ):
        """`mask_weights` [vocab]: DistilBERT's smoothed masking (`masking.masking_weights`); None:
        ELECTRA's uniform masking."""
        super().__init__()
        self.student = student
        frozen = [m.eval().requires_grad_(False) for m in (teacher_model, generator) if m is not None]
        self._frozen = tuple(frozen)  # a tuple: not registered, so neither trained nor checkpointed
        self.objective = teacher.objective
        self.cfg = distill_cfg
        self.mask_prob = mask_prob
        self.special = special
        """The shards' special ids (what masking skips, the [MASK] id)."""
        self.cap = max(1, max_predictions(mask_prob, teacher.config["max_position_embeddings"]))
        self.mask_weights = mask_weights
        self.soft_over_real = distill_cfg.soft_targets != "masked"
        # DistilBERT has no token types; the teacher sees them (all 0 but for a second segment)
        self.student_types = getattr(student.config, "type_vocab_size", 0) > 0

    def flops_per_token(self, seq_len: int) -> float:
        """Matmul FLOPs of one step per real token (for MFU): the student's forward and backward,
        the frozen teacher's (and generator's) forward."""
        student = 3.0 * forward_flops_per_token(self.student, seq_len, self.mask_prob)
        return student + sum(forward_flops_per_token(m, seq_len, self.mask_prob) for m in self._frozen)

    def _frozen_on(self, device: torch.device) -> tuple[nn.Module, ...]:
        if next(self._frozen[0].parameters()).device != device:
            self._frozen = tuple(m.to(device) for m in self._frozen)
        return self._frozen

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor,
        position_ids: Tensor | None = None,
        example_ids: Tensor | None = None,
        with_metrics: bool = True,
    ) -> DistillOutput:
        """The distillation loss on one batch (`attention_mask` None: full rows, no padding; rows of
        several examples as in `ElectraPretrainer.forward`); its metrics are three 0-d losses and
        the token counts, cheap enough for every micro-batch."""
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        towers_mask = attention_mask if example_ids is None else example_attention_mask(example_ids)
        if self.mask_weights is None:
            masked = mask_tokens(input_ids, real, self.mask_prob, self.cap, self.special)
        else:
            masked = mask_tokens_smoothed(
                input_ids, real, self.mask_prob, self.cap, self.mask_weights, self.special.mask
            )
        frozen = self._frozen_on(input_ids.device)
        teacher = frozen[0]
        if self.objective == "rtd":
            with torch.no_grad():
                logits = masked_lm_logits(frozen[1], masked, towers_mask, token_type_ids, position_ids)
                sampled = gumbel_sample(logits)
            inputs, replaced = corrupted(input_ids, masked, sampled, real)
        else:
            inputs = masked.input_ids
        kwargs = dict(
            attention_mask=towers_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_hidden_states=True,
        )
        with torch.no_grad():
            t_out = teacher(input_ids=inputs, **kwargs)
        if not self.student_types:
            kwargs.pop("token_type_ids")
        s_out = self.student(input_ids=inputs, **kwargs)
        c, T = self.cfg, self.cfg.temperature
        if self.objective == "rtd":
            soft = soft_binary_loss(s_out.logits, t_out.logits, T, real)
            own = replaced_token_loss(s_out.logits, replaced, real)
        else:
            index = masked.positions.unsqueeze(-1).expand(-1, -1, s_out.logits.size(-1))
            s_logits, t_logits = s_out.logits.gather(1, index), t_out.logits.gather(1, index)
            if self.soft_over_real:  # DistilBERT: every non-pad token
                soft = soft_softmax_loss(s_out.logits, t_out.logits, T, real)
            else:
                soft = soft_softmax_loss(s_logits, t_logits, T, masked.valid)
            ce = F.cross_entropy(s_logits.float().flatten(0, 1), masked.targets.flatten(), reduction="none")
            own = (ce * masked.valid.flatten()).sum() / masked.valid.sum().clamp(min=1)
        cos = cosine_loss(s_out.hidden_states[-1], t_out.hidden_states[-1], real)
        loss = c.soft_weight * soft + c.cosine_weight * cos + c.student_weight * own
        metrics = {
            "soft_loss": soft.detach(),
            "cos_loss": cos.detach(),
            "student_loss": own.detach(),
            "real_tokens": real.sum().float(),
            "masked_tokens": masked.valid.sum().float(),
        }
        return DistillOutput(loss=loss, metrics=metrics)
