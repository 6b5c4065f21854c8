"""The distill stage's config section: teacher, student layers, objective weights, schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from koelectra_dist.configbase import non_negative, positive


@dataclass(frozen=True)
class DistillConfig:
    teacher_uri: str | None = None
    """The teacher: a transformers ELECTRA discriminator (ElectraForPreTraining) or a masked-LM
    folder (BERT or ELECTRA, with its MLM head), local, s3:// or hf://ORG/NAME, with its vocab.txt;
    None: this run's exported discriminator (<export>/discriminator)."""
    generator_uri: str | None = None
    """For a discriminator teacher, the ELECTRA generator that corrupts the input; None: the
    generator/ folder beside the teacher (a Hub pair's ORG/NAME-generator)."""
    layers: list[int] | None = None
    """The teacher layers (0-based) the student's layers start from, in order; their count is the
    student's depth (DistilKoBERT 12 -> 3: [0, 4, 8]). None: every 4th layer from 0."""
    student: Literal["teacher", "distilbert"] = "teacher"
    """The student's class: "teacher": the teacher's own class with len(layers) layers (token-type
    embeddings, pooler and head included); "distilbert": DistilBERT's shape (DistilBertForMaskedLM:
    no token-type embeddings, no pooler), for a masked-LM teacher whose embedding width is its
    hidden width; its folder loads with DistilBertModel and AutoModel."""
    soft_targets: Literal["real", "masked"] | None = None
    """Where an MLM teacher's soft targets are taken: "real": every non-pad token (DistilBERT);
    "masked": the masked positions only. None: "real". A discriminator teacher's soft targets are
    per-token logits, always over every real token."""
    masking: Literal["electra", "distilbert"] | None = None
    """How the input is masked: "electra": train.mask_prob of the real tokens, uniformly, 85% [MASK]
    and 15% kept (ELECTRA's pre-training); "distilbert": train.mask_prob of the real tokens chosen
    with probability proportional to count^-smoothing (rare tokens more often; counts over the
    shards), 80% [MASK], 10% kept, 10% a random token. None: "distilbert" for an MLM teacher,
    "electra" for a discriminator teacher (whose generator was trained on ELECTRA's masking)."""
    smoothing: float = 0.7
    """DistilBERT's mlm_smoothing: masking weight count^-smoothing (0: uniform over real tokens)."""
    freeze_position_embeddings: bool = False
    """Keep the student's position embeddings at the teacher's values (DistilBERT's
    --freeze_pos_embs, off by default there too)."""
    temperature: float = 2.0
    """Softmax (sigmoid, for replaced-token detection) temperature of the soft-target loss."""
    soft_weight: float = 5.0
    """Weight of the soft-target loss against the teacher's outputs (DistilBERT: 5)."""
    cosine_weight: float = 1.0
    """Weight of the cosine loss between student and teacher last hidden states (DistilBERT: 1)."""
    student_weight: float = 2.0
    """Weight of the student's own objective: replaced-token detection or MLM (DistilBERT: 2)."""
    steps: int = 100_000
    """Optimizer steps; batch sizes, optimizer settings, workers and checkpoints come from the train,
    distributed and checkpoint sections."""
    learning_rate: float = 5e-4
    """Peak learning rate (DistilBERT: 5e-4)."""
    warmup_steps: int = 5_000
    """Linear warm-up steps."""
    output_uri: str | None = None
    """Root of the stage's output: checkpoints/ and model/ (the student, a transformers folder);
    None: <run.output_uri>/distill."""


def default_layers(teacher_layers: int) -> list[int]:
    """Every 4th teacher layer from 0: 12 -> [0, 4, 8] (DistilKoBERT's layers 1, 5, 9)."""
    return list(range(0, teacher_layers, 4))


def problems(cfg: Any) -> list[str]:
    """What is wrong with the distill section (`cfg` is the root config)."""
    d = cfg.distill
    found: list[str] = []
    positive(
        found,
        [
            ("distill.temperature", d.temperature),
            ("distill.steps", d.steps),
            ("distill.learning_rate", d.learning_rate),
        ],
    )
    non_negative(
        found,
        [
            ("distill.soft_weight", d.soft_weight),
            ("distill.cosine_weight", d.cosine_weight),
            ("distill.student_weight", d.student_weight),
            ("distill.warmup_steps", d.warmup_steps),
        ],
    )
    if d.smoothing < 0 or not math.isfinite(d.smoothing):
        found.append(f"distill.smoothing: a finite exponent >= 0 (DistilBERT: 0.7), got {d.smoothing}")
    if d.soft_weight + d.cosine_weight + d.student_weight <= 0:
        found.append("distill: soft_weight, cosine_weight and student_weight are all 0; nothing would be learned")
    if not math.isfinite(d.learning_rate):
        found.append("distill.learning_rate: must be finite")
    if d.layers is not None:
        if not d.layers:
            found.append("distill.layers: at least one teacher layer, e.g. [0, 4, 8]")
        if any(i < 0 for i in d.layers) or len(set(d.layers)) != len(d.layers):
            found.append(f"distill.layers: distinct teacher layer indices >= 0, got {d.layers}")
    return found
