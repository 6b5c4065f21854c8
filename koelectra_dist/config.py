"""The run configuration: the root `Config` composing every stage's section, loaded from JSON.

Each stage package owns its section (`corpus.config`, `pretrain.config`, `export.config`,
`distill.config`, `finetune.config`, `probe.config`) and its checks; the sections shared by every stage (run, storage, model) live
here. Every field has a docstring (the string literal under it). Unknown keys are errors naming
their dotted path; type errors and cross-field problems are collected and raised together, before
any cluster resource is requested. Derived values are methods, never stored fields.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koelectra_dist import layout
from koelectra_dist.configbase import apply_overrides, build, positive
from koelectra_dist.corpus import config as corpus_config
from koelectra_dist.corpus.config import CorpusConfig
from koelectra_dist.distill import config as distill_config
from koelectra_dist.distill.config import DistillConfig
from koelectra_dist.errors import ConfigError, bullets
from koelectra_dist.export.config import BEST, ExportConfig
from koelectra_dist.finetune import config as finetune_config
from koelectra_dist.finetune.config import FinetuneConfig
from koelectra_dist.pretrain import config as pretrain_config
from koelectra_dist.pretrain.config import CheckpointConfig, DistributedConfig, TrainConfig
from koelectra_dist.probe import config as probe_config
from koelectra_dist.probe.config import ProbeConfig

STAGES = ("corpus", "pretrain", "export", "distill", "finetune")
DEFAULT_STAGES = ("corpus", "pretrain", "export", "finetune")
"""What a run does unless run.stages says otherwise: distill is asked for by name."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    name: str = "koelectra"
    """Run name: used in log lines, TensorBoard and default Hub repo names."""
    output_uri: str = "outputs/koelectra"
    """Root for everything the run writes (local path or s3://bucket/prefix); each stage's default
    location lives below it (corpus/, checkpoints/, hf/, distill/, finetune/)."""
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    """Stages `launch.py` runs when none is named on the command line, in pipeline order."""
    mlflow_tracking_uri: str | None = None
    """Also log training and probe metrics to MLflow: a tracking server (http://host:5000)
    or a local folder. Needs the optional extra: pip install 'koelectra_dist[mlflow]'."""
    mlflow_experiment: str | None = None
    """The MLflow experiment of the run; None: run.name."""


@dataclass(frozen=True)
class StorageConfig:
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store (MinIO, moto, R2...). None: AWS, or AWS_ENDPOINT_URL from
    the environment. Credentials come only from the environment / instance profile, never from here."""
    s3_region: str | None = None
    """Region for s3:// URIs; None lets botocore decide (AWS_DEFAULT_REGION)."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 35000
    """Vocabulary size; the corpus stage trains a WordPiece vocabulary of exactly this size."""
    embedding_size: int = 768
    """Width of the shared embeddings (word, position, token type)."""
    hidden_size: int = 768
    """Discriminator hidden size."""
    num_hidden_layers: int = 12
    """Transformer layers, the same for generator and discriminator."""
    num_attention_heads: int = 12
    """Discriminator attention heads."""
    intermediate_size: int = 3072
    """Discriminator feed-forward width."""
    generator_size: float = 0.33333
    """Generator hidden size as a fraction of the discriminator's (KoELECTRA: 1/3 for Base, stored
    as 0.33333 so that 768 gives 256; 1.0 for Small)."""
    max_length: int = 512
    """Maximum sequence length (tokens per example, and position embeddings)."""
    hidden_dropout: float = 0.1
    """Dropout on hidden states."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""

    def generator_hidden_size(self) -> int:
        return max(1, round(self.hidden_size * self.generator_size))

    def generator_num_attention_heads(self) -> int:
        return max(1, self.generator_hidden_size() // 64)

    def generator_intermediate_size(self) -> int:
        return 4 * self.generator_hidden_size()


@dataclass(frozen=True)
class Config:
    notes: list[str] = field(default_factory=list)
    """Free text, read by no stage: where a config's values come from (the shipped configs say which
    are their source's and which are assumed)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Run identity and output root."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    """S3-compatible storage settings."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Generator and discriminator shapes."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Corpus stage: cleaning, vocabulary, packing, shards."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Pre-training objective, optimizer and schedule."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Workers, devices, ZeRO and precision."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint storage and retention."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Hugging Face export."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation into a smaller student (the distill stage)."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Downstream fine-tuning."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Downstream probes of committed checkpoints while pre-training runs (off unless probe.tasks is set)."""

    @functools.cached_property
    def paths(self) -> layout.Layout:
        """Every location the stages read and write, defaults resolved below run.output_uri."""
        return layout.Layout.of(self)

    def gradient_accumulation_steps(self, workers: int | None = None) -> int:
        """Micro-batches per worker per step on `workers` workers (default: distributed.num_workers,
        the minimum of a range)."""
        workers = workers or pretrain_config.worker_range(self.distributed)[0]
        return pretrain_config.gradient_accumulation_steps(self.train, workers)

    def derived(self) -> dict[str, Any]:
        """Values computed from the fields, shown by `--check`."""
        m = self.model
        return {
            "generator": {
                "hidden_size": m.generator_hidden_size(),
                "num_attention_heads": m.generator_num_attention_heads(),
                "intermediate_size": m.generator_intermediate_size(),
                "num_hidden_layers": m.num_hidden_layers,
                "embedding_size": m.embedding_size,
            },
            "gradient_accumulation_steps": {
                w: self.gradient_accumulation_steps(w)
                for w in pretrain_config.allowed_worker_counts(self.train, self.distributed)
            }
            if pretrain_config.is_elastic(self.distributed)
            else self.gradient_accumulation_steps(),
            "cleaning_rules": dataclasses.asdict(self.corpus.cleaning.rules()),
            "corpus_output_uri": self.paths.corpus,
            "checkpoint_storage_uri": self.paths.checkpoints,
            "export_output_uri": self.paths.export,
            "distill_output_uri": self.paths.distill,
            "finetune_output_uri": self.paths.finetune,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_warnings(cfg: Config) -> list[str]:
    """Values that are valid but probably not what the user meant."""
    return pretrain_config.warnings(cfg)


def _problems(cfg: Config) -> list[str]:
    """Cross-field problems of every section, all of them."""
    m = cfg.model
    problems: list[str] = []
    positive(
        problems,
        [
            ("model.vocab_size", m.vocab_size),
            ("model.embedding_size", m.embedding_size),
            ("model.hidden_size", m.hidden_size),
            ("model.num_hidden_layers", m.num_hidden_layers),
            ("model.num_attention_heads", m.num_attention_heads),
            ("model.intermediate_size", m.intermediate_size),
            ("model.generator_size", m.generator_size),
            ("model.max_length", m.max_length),
        ],
    )
    if m.hidden_size > 0 and m.num_attention_heads > 0 and m.hidden_size % m.num_attention_heads:
        problems.append(
            f"model.hidden_size ({m.hidden_size}) must be divisible by model.num_attention_heads "
            f"({m.num_attention_heads})"
        )
    gen_hidden, gen_heads = m.generator_hidden_size(), m.generator_num_attention_heads()
    if m.generator_size > 0 and gen_hidden % gen_heads:
        problems.append(
            f"model.generator_size ({m.generator_size}) gives a generator of width {gen_hidden}, which its "
            f"{gen_heads} attention heads (width // 64) do not divide; choose a size whose width is below 128 or a "
            "multiple of its heads (e.g. a multiple of 64)"
        )
    if m.generator_size > 1:
        problems.append(f"model.generator_size: a fraction in (0, 1], got {m.generator_size}")
    if m.max_length < 8:
        problems.append(f"model.max_length: at least 8 tokens, got {m.max_length}")
    for i, stage in enumerate(cfg.run.stages):
        if stage not in STAGES:
            problems.append(f"run.stages[{i}]: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    problems += _tracking_problems(cfg.run)
    for section in (corpus_config, pretrain_config, distill_config, finetune_config, probe_config):
        problems += section.problems(cfg)
    for dotted in OUTPUT_FIELDS:
        value = _get(cfg, dotted)
        if value and value.startswith(READ_ONLY_SCHEMES):
            problems.append(
                f"{dotted}: {value} is read-only (hf:// and pkg:// name things to read); write to a local folder "
                "or s3://, and publish to the Hub with scripts/publish_to_hub.py"
            )
    return problems


def _tracking_problems(run: RunConfig) -> list[str]:
    uri = run.mlflow_tracking_uri
    if not uri:
        return ["run.mlflow_experiment: set, but run.mlflow_tracking_uri is not"] if run.mlflow_experiment else []
    if uri.startswith(("s3://", "hf://", "pkg://")):
        return [
            f"run.mlflow_tracking_uri: {uri} is not a tracking store; name a tracking server "
            "(http://host:5000) or a local folder"
        ]
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return [
            "run.mlflow_tracking_uri: set, but MLflow is not installed; pip install 'koelectra_dist[mlflow]' "
            "(MLflow's client, mlflow-skinny), or unset it"
        ]
    return []


# Fields naming locations. A relative local path in them is made absolute where the config is
# loaded: Ray workers run in other working directories than the driver.
LOCATION_FIELDS = (
    "run.output_uri",
    "run.mlflow_tracking_uri",
    "corpus.inputs",
    "corpus.output_uri",
    "corpus.vocab.vocab_uri",
    "corpus.vocab.merge_with",
    "corpus.tokenizer_uri",
    "train.shards_uri",
    "train.init_from",
    "distributed.deepspeed_config",
    "checkpoint.storage_uri",
    "export.checkpoint",
    "export.output_uri",
    "export.vocab_uri",
    "distill.teacher_uri",
    "distill.generator_uri",
    "distill.output_uri",
    "finetune.model_uri",
    "finetune.data_dir",
    "finetune.output_uri",
)


def portable(location: str, root: str) -> str:
    """A location as a published file may state it: URIs unchanged; a local path relative to the
    run's output root `root` when below it, else only its last component (a machine's folders
    mean nothing elsewhere and may say too much)."""
    if "://" in location or not os.path.isabs(location):
        return location
    relative = os.path.relpath(location, root)
    return os.path.basename(location.rstrip("/")) if relative.startswith("..") else relative


def portable_config(data: dict[str, Any]) -> dict[str, Any]:
    """A config's `to_dict()` with every location field made `portable` against its run.output_uri."""
    data = json.loads(json.dumps(data))
    root = data["run"]["output_uri"]
    for dotted in LOCATION_FIELDS:
        *parents, key = dotted.split(".")
        section = functools.reduce(lambda d, k: d.get(k) or {}, parents, data)
        value = section.get(key)
        if isinstance(value, list):
            section[key] = [portable(v, root) for v in value]
        elif value:
            section[key] = portable(value, root)
    data["run"]["output_uri"] = portable(root, os.path.dirname(root.rstrip("/")))
    return data


PLACEHOLDER = "YOUR-"
"""Marks the values the shipped configs leave to the user (s3://YOUR-BUCKET/..., YOUR-ORG/...)."""


PLACEHOLDER_HINTS = {
    "corpus.vocab.vocab_uri": (
        "to KoELECTRA v2's vocabulary (EnlipleAI's 32,200 tokens): the vocab.txt of a published v2 model, "
        "e.g. monologg/koelectra-base-v2-discriminator on the Hugging Face Hub, copied to your storage"
    ),
}
"""What to put where a placeholder is more than a bucket name."""


def placeholder_problems(cfg: Config) -> list[str]:
    """Locations that still hold a placeholder: fine for `--check`, fatal for a run."""
    problems = []
    for dotted in LOCATION_FIELDS:
        value = _get(cfg, dotted)
        for v in value if isinstance(value, list) else [value]:
            if v and PLACEHOLDER in v:
                hint = PLACEHOLDER_HINTS.get(dotted, f"e.g. --set {dotted}=s3://my-bucket/...")
                problems.append(f"{dotted}: {v} is a placeholder; set it, {hint}")
    return problems


OUTPUT_FIELDS = (
    "run.output_uri",
    "corpus.output_uri",
    "checkpoint.storage_uri",
    "export.output_uri",
    "distill.output_uri",
    "finetune.output_uri",
)
READ_ONLY_SCHEMES = ("hf://", "pkg://")
RAY_JOB_WORKING_DIR = "/runtime_resources/working_dir_files/"
"""Part of the folder `ray job submit --working-dir` unpacks the job into (removed when Ray cleans up)."""


def ray_job_output_warnings(cfg: Config, relative: list[str], cwd: str) -> list[str]:
    """Under a Ray job's unpacked working directory, a relative output lands in Ray's temporary
    copy of the project: say where each went and how to keep it."""
    if RAY_JOB_WORKING_DIR not in cwd.replace(os.sep, "/") + "/":
        return []
    return [
        f"{dotted} is a relative path, resolved to {_get(cfg, dotted)} inside the Ray job's temporary copy of "
        "the working directory, which Ray deletes; set it to an absolute path on shared storage or an "
        f"s3:// URI (--set {dotted}=s3://my-bucket/...)"
        for dotted in relative
    ]


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _absolute(location: str | list[str] | None) -> str | list[str] | None:
    if isinstance(location, list):
        return [_absolute(x) for x in location]
    if location is None or "://" in location:
        return location
    return os.path.abspath(location)


def _replace_at(obj: Any, path: list[str], fn: Any) -> Any:
    head, *rest = path
    value = getattr(obj, head)
    return dataclasses.replace(obj, **{head: _replace_at(value, rest, fn) if rest else fn(value)})


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and check a Config; relative local paths become absolute against the current directory."""
    errors: list[str] = []
    cfg = build(Config, data, errors)
    if cfg is not None:
        errors += _problems(cfg)
    if errors:
        raise ConfigError("invalid configuration:" + bullets(errors))
    relative = [
        d for d in OUTPUT_FIELDS if _get(cfg, d) and "://" not in _get(cfg, d) and not os.path.isabs(_get(cfg, d))
    ]
    for dotted in LOCATION_FIELDS:
        if _get(cfg, dotted) != BEST or dotted != "export.checkpoint":  # "best" names no location
            cfg = _replace_at(cfg, dotted.split("."), _absolute)
    for warning in ray_job_output_warnings(cfg, relative, os.getcwd()):
        log.warning(warning)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a JSON config file, apply `--set` overrides, check it all; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; see configs/ for examples") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a JSON object")
    problems = apply_overrides(data, overrides or [])
    if problems:
        raise ConfigError("invalid overrides:" + bullets(problems))
    return config_from_dict(data)


def resolved_json(cfg: Config) -> str:
    return json.dumps({**cfg.to_dict(), "derived": cfg.derived()}, indent=2, ensure_ascii=False)
