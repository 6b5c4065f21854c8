"""The teacher and the student: which objective a teacher folder implies, and a student of the
teacher's shape with fewer layers, initialised from chosen teacher layers."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Literal

from koelectra_dist import storage
from koelectra_dist.config import Config, ModelConfig
from koelectra_dist.distill.config import default_layers
from koelectra_dist.errors import ConfigError

DISCRIMINATOR = "ElectraForPreTraining"
_LAYER = re.compile(r"\.layer\.(\d+)\.")


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher folder (nothing loaded)."""

    uri: str
    objective: Literal["rtd", "mlm"]
    """rtd: an ELECTRA discriminator (replaced-token detection on generator-corrupted input);
    mlm: a masked-LM head (BERT, or an ELECTRA generator)."""
    config: dict[str, Any]
    """Its transformers config.json."""
    generator_uri: str | None
    """The generator that corrupts the input (rtd only); None: a discriminator alone, corrupted by a
    fresh generator of model.generator_size (`init_from.fresh_generator`)."""


def _sibling_generator(uri: str) -> str | None:
    """The generator of a discriminator's pair: ORG/NAME-generator on the Hub, generator/ beside a
    discriminator/ folder; None when there is none (a single repository, a folder alone)."""
    if uri.startswith("hf://"):
        return storage.hub_model(uri)[1]
    sibling = storage.join(uri.rstrip("/").rsplit("/", 1)[0], "generator")
    return sibling if storage.exists(storage.join(sibling, "config.json")) else None


def resolve_teacher(cfg: Config) -> Teacher:
    """The teacher `distill.teacher_uri` names; ConfigError when it is not one we can distil."""
    d = cfg.distill
    uri = d.teacher_uri or storage.join(cfg.paths.export, "discriminator")
    for names in (("config.json",), ("vocab.txt", "tokenizer.json")):  # a tokenizer: WordPiece, KoBERT's, any
        if not any(storage.exists(storage.join(uri, name)) for name in names):
            raise ConfigError(
                f"distill.teacher_uri={uri}: no {' or '.join(names)}; name a transformers model folder with its "
                "tokenizer (the export stage's discriminator/, a BERT/ELECTRA masked-LM folder, or hf://ORG/NAME)"
            )
    config = storage.read_json(storage.join(uri, "config.json"))
    architectures = config.get("architectures") or []
    if config.get("model_type") not in ("electra", "bert"):
        raise ConfigError(f"distill.teacher_uri={uri}: model_type {config.get('model_type')!r}; ELECTRA or BERT only")
    if DISCRIMINATOR in architectures:
        return Teacher(uri, "rtd", config, d.generator_uri or _sibling_generator(uri))
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures):
        return Teacher(uri, "mlm", config, None)
    raise ConfigError(
        f"distill.teacher_uri={uri}: architectures {architectures} have no head to distil; use an ELECTRA "
        "discriminator (ElectraForPreTraining) or a masked-LM folder (BertForMaskedLM, ElectraForMaskedLM)"
    )


def student_layers(cfg: Config, teacher: Teacher) -> list[int]:
    """`distill.layers`, checked against the teacher's depth (default: every 4th layer)."""
    depth = teacher.config["num_hidden_layers"]
    layers = cfg.distill.layers if cfg.distill.layers is not None else default_layers(depth)
    if max(layers) >= depth:
        raise ConfigError(f"distill.layers={layers}: the teacher {teacher.uri} has layers 0..{depth - 1} only")
    return list(layers)


def student_model_config(teacher: Teacher, layers: list[int], configured: ModelConfig) -> ModelConfig:
    """The student's shape as a model config (the teacher's with len(layers) layers): what the
    shards, checkpoints and metrics of the shared machinery check against. Its generator_size is the
    fresh generator's for a discriminator alone (so a resume with another one is refused), else unused."""
    c = teacher.config
    fresh_generator = teacher.objective == "rtd" and teacher.generator_uri is None
    return ModelConfig(
        vocab_size=c["vocab_size"],
        embedding_size=c.get("embedding_size", c["hidden_size"]),
        hidden_size=c["hidden_size"],
        num_hidden_layers=len(layers),
        num_attention_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"],
        generator_size=configured.generator_size if fresh_generator else 1.0,
        max_length=c["max_position_embeddings"],
        hidden_dropout=c.get("hidden_dropout_prob", configured.hidden_dropout),
        attention_dropout=c.get("attention_probs_dropout_prob", configured.attention_dropout),
    )


def teacher_key(student_key: str, layers: list[int]) -> str:
    """The teacher weight a student weight starts from: student layer i <- teacher layer layers[i];
    everything else (embeddings, heads) the same name."""
    return _LAYER.sub(lambda m: f".layer.{layers[int(m.group(1))]}.", student_key, count=1)


def make_student(teacher: Any, layers: list[int]) -> Any:
    """A model of the teacher's class and shape with len(layers) layers, its weights copied from the
    teacher (`teacher_key`)."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    source = teacher.state_dict()
    student.load_state_dict({k: source[teacher_key(k, layers)].clone() for k in student.state_dict()})
    return student
