"""A DistilBERT-shaped student (`distill.student: distilbert`): DistilBertForMaskedLM, no
token-type embeddings and no pooler, initialised from a BERT or ELECTRA masked-LM teacher's
embeddings, chosen layers and MLM head (DistilBERT's extract_distilbert.py, name for name)."""

from __future__ import annotations

from typing import Any

import torch

from koelectra_dist.errors import ConfigError

# teacher encoder layer sub-module -> DistilBERT's name for it (weight and bias each)
LAYER_NAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
# the MLM head: (BERT name, ELECTRA generator name) -> DistilBERT's
HEAD_NAMES = {
    ("cls.predictions.transform.dense", "generator_predictions.dense"): "vocab_transform",
    ("cls.predictions.transform.LayerNorm", "generator_predictions.LayerNorm"): "vocab_layer_norm",
}


def check_teacher(config: dict[str, Any], objective: str, uri: str) -> None:
    """ConfigError unless a DistilBERT student can start from this teacher."""
    if objective != "mlm":
        raise ConfigError(
            f"distill.student=distilbert: the teacher {uri} is an ELECTRA discriminator; a DistilBERT student is "
            "a masked LM and needs a masked-LM teacher (BertForMaskedLM, ElectraForMaskedLM), or set "
            'distill.student="teacher"'
        )
    if config.get("embedding_size", config["hidden_size"]) != config["hidden_size"]:
        raise ConfigError(
            f"distill.student=distilbert: the teacher {uri} has embedding_size {config['embedding_size']} != "
            f"hidden_size {config['hidden_size']}; DistilBERT has no embeddings projection: set "
            'distill.student="teacher"'
        )


def student_config(teacher_config: Any, layers: int) -> Any:
    """The DistilBertConfig of the teacher's width with `layers` layers."""
    from transformers import DistilBertConfig

    t = teacher_config
    return DistilBertConfig(
        vocab_size=t.vocab_size,
        max_position_embeddings=t.max_position_embeddings,
        dim=t.hidden_size,
        n_layers=layers,
        n_heads=t.num_attention_heads,
        hidden_dim=t.intermediate_size,
        dropout=t.hidden_dropout_prob,
        attention_dropout=t.attention_probs_dropout_prob,
        activation=t.hidden_act,
        initializer_range=t.initializer_range,
        pad_token_id=t.pad_token_id,
        tie_word_embeddings=True,
    )


def teacher_weights(teacher: Any, layers: list[int]) -> dict[str, torch.Tensor]:
    """The student's state dict, every entry a copy of a teacher weight. The teacher's token-type-0
    embedding is added into the position embeddings: DistilBERT's extraction drops it, which shifts
    every input embedding; added, the student's embeddings equal the teacher's on single-segment input."""
    prefix = teacher.base_model_prefix  # "bert" or "electra"
    src = teacher.state_dict()
    emb = f"{prefix}.embeddings."
    out = {
        "distilbert.embeddings.word_embeddings.weight": src[emb + "word_embeddings.weight"],
        "distilbert.embeddings.position_embeddings.weight": src[emb + "position_embeddings.weight"]
        + src[emb + "token_type_embeddings.weight"][0],
        "distilbert.embeddings.LayerNorm.weight": src[emb + "LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": src[emb + "LayerNorm.bias"],
    }
    for i, source in enumerate(layers):
        for theirs, mine in LAYER_NAMES.items():
            for p in ("weight", "bias"):
                out[f"distilbert.transformer.layer.{i}.{mine}.{p}"] = src[
                    f"{prefix}.encoder.layer.{source}.{theirs}.{p}"
                ]
    for names, mine in HEAD_NAMES.items():
        theirs = next(n for n in names if f"{n}.weight" in src)
        for p in ("weight", "bias"):
            out[f"{mine}.{p}"] = src[f"{theirs}.{p}"]
    out["vocab_projector.weight"] = out["distilbert.embeddings.word_embeddings.weight"]  # tied, as in the teacher
    out["vocab_projector.bias"] = src[
        "cls.predictions.bias" if "cls.predictions.bias" in src else "generator_lm_head.bias"
    ]
    return {k: v.detach().clone() for k, v in out.items()}


def make_student(teacher: Any, layers: list[int]) -> Any:
    """A DistilBertForMaskedLM of len(layers) layers initialised from the teacher (`teacher_weights`)."""
    from transformers import DistilBertForMaskedLM

    student = DistilBertForMaskedLM(student_config(teacher.config, len(layers)))
    student.load_state_dict(teacher_weights(teacher, layers), strict=True)
    student.tie_weights()
    return student


def position_embeddings(student: Any) -> torch.nn.Parameter:
    """The student's position embedding table, either student class."""
    return student.base_model.embeddings.position_embeddings.weight
