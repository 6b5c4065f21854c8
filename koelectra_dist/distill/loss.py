"""DistilBERT's losses, in fp32 and averaged over the positions that count (`weights`, [B, T] or
[B, K] bool): soft targets at a temperature, cosine between hidden states."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _mean(values: Tensor, weights: Tensor) -> Tensor:
    w = weights.float()
    return (values * w).sum() / w.sum().clamp(min=1)


def soft_binary_loss(student: Tensor, teacher: Tensor, temperature: float, weights: Tensor) -> Tensor:
    """Soft-target loss of a per-token binary head (replaced-token detection): the sigmoid cross-
    entropy of student logits / T against sigmoid(teacher logits / T), times T^2 (Hinton: keeps the
    gradient scale independent of T). Its minimum is the teacher's entropy, not 0."""
    target = (teacher.float() / temperature).sigmoid()
    bce = F.binary_cross_entropy_with_logits(student.float() / temperature, target, reduction="none")
    return _mean(bce, weights) * temperature**2


def soft_softmax_loss(student: Tensor, teacher: Tensor, temperature: float, weights: Tensor) -> Tensor:
    """Soft-target loss of a softmax head (MLM, [..., V]): KL(teacher || student) of the
    distributions at temperature T, times T^2, as DistilBERT's loss_ce."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return _mean(kl, weights) * temperature**2


def cosine_loss(student: Tensor, teacher: Tensor, weights: Tensor) -> Tensor:
    """1 - cosine similarity of student and teacher hidden states [..., H] (DistilBERT's loss_cos)."""
    return _mean(1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1), weights)
