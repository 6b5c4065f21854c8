"""Typed run configuration: nested frozen dataclasses loaded from JSON.

Every field has a docstring (the string literal under it). Unknown keys are errors naming their
dotted path; type errors and cross-field problems are collected and raised together, before any
cluster resource is requested. Derived values are methods, never stored fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from koelectra_dist.errors import ConfigError

STAGES = ("corpus", "pretrain", "export", "finetune")


@dataclass(frozen=True)
class RunConfig:
    name: str = "koelectra"
    """Run name: used in log lines, TensorBoard and default Hub repo names."""
    output_uri: str = "outputs/koelectra"
    """Root for everything the run writes (local path or s3://bucket/prefix); each stage's default
    location lives below it (corpus/, checkpoints/, hf/, finetune/)."""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """Stages `launch.py` runs when none is named on the command line, in pipeline order."""


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
class CleaningConfig:
    enabled: bool = True
    """Master switch; when false lines are only stripped of surrounding whitespace."""
    normalize_nfc: bool = True
    """Unicode NFC normalisation (never NFD: it splits Hangul into jamo)."""
    remove_control_chars: bool = True
    """Remove control and format characters (zero-width spaces, BOMs, ...)."""
    max_repeats: int = 2
    """Collapse a character repeated more than this many times (ㅋㅋㅋㅋ -> ㅋㅋ); 0 disables."""
    remove_urls: bool = True
    """Remove http(s)/www URLs."""
    remove_emails: bool = True
    """Remove e-mail addresses."""
    remove_mentions: bool = True
    """Remove @user mentions."""
    remove_hashtags: bool = True
    """Remove #hashtags."""
    min_chars: int = 2
    """Drop lines shorter than this after cleaning."""
    deduplicate: bool = True
    """Drop exact duplicate lines (across the whole corpus)."""


@dataclass(frozen=True)
class VocabConfig:
    vocab_uri: str | None = None
    """Existing vocabulary folder or vocab.txt to use instead of training one."""
    pretokenizer: Literal["mecab", "whitespace"] = "mecab"
    """How words are split before WordPiece training: 'mecab' morphemes (KoELECTRA v3) or none."""
    sample_lines: int | None = None
    """Train the vocabulary on at most this many cleaned lines (None: all)."""
    limit_alphabet: int = 6000
    """WordPiece trainer's initial alphabet limit (KoELECTRA: 6000)."""
    min_frequency: int = 2
    """Minimum pair frequency for a merge."""
    num_unused: int = 200
    """[unusedN] tokens reserved inside vocab_size (KoELECTRA v1: 200)."""


@dataclass(frozen=True)
class CorpusConfig:
    inputs: list[str] = field(default_factory=list)
    """Text files or folders of them (local or s3://, .gz allowed); one sentence per line, a blank
    line between documents."""
    output_uri: str | None = None
    """Where vocab/ and shards/ go; None: <run.output_uri>/corpus."""
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    """Text cleaning rules."""
    vocab: VocabConfig = field(default_factory=VocabConfig)
    """Vocabulary training."""
    examples_per_shard: int = 100_000
    """Packed examples per Parquet shard file."""
    single_segment_prob: float = 0.1
    """Probability that an example has one segment only (ELECTRA: 0.1)."""
    short_seq_prob: float = 0.05
    """Probability that the next example targets a random shorter length (ELECTRA: 0.05)."""
    flush_documents: bool = True
    """A document end closes the current example (ELECTRA); false packs across documents."""
    lines_per_block: int = 5_000
    """About this many lines go to one Ray Data task (whole documents only; a document longer than
    4x this is cut, closing an example there). Small blocks keep every CPU busy to the end."""
    seed: int = 12345
    """Seed for packing and sampling."""

    def resolved_output_uri(self, run: RunConfig) -> str:
        return self.output_uri or f"{run.output_uri.rstrip('/')}/corpus"


@dataclass(frozen=True)
class TrainConfig:
    shards_uri: str | None = None
    """Shard folder with manifest.json; None: the corpus stage's output."""
    global_batch_size: int = 256
    """Examples per optimizer step across all workers."""
    micro_batch_size: int = 32
    """Examples per forward/backward on one worker."""
    steps: int = 1_500_000
    """Optimizer steps in total."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    warmup_steps: int = 10_000
    """Linear warm-up steps (ELECTRA multiplies warm-up and linear decay)."""
    weight_decay: float = 0.01
    """Decoupled weight decay, not applied to LayerNorm or bias."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam beta1, beta2."""
    grad_clip: float = 1.0
    """Gradient clipping at this global norm."""
    mask_prob: float = 0.15
    """Fraction of real tokens masked (0.15 Base/Small, 0.25 Large)."""
    gen_weight: float = 1.0
    """Weight of the generator (MLM) loss."""
    disc_weight: float = 50.0
    """Weight of the discriminator (replaced token detection) loss."""
    seed: int = 42
    """Seed for initialisation, data order and masking."""
    log_every: int = 100
    """Log metrics every this many steps."""
    init_from: str | None = None
    """An exported pretraining/ folder to start from (continued pre-training)."""


@dataclass(frozen=True)
class DistributedConfig:
    num_workers: int = 1
    """Ray Train workers (one DeepSpeed rank each)."""
    gpus_per_worker: int = 1
    """GPUs per worker; 0 runs on CPU (gloo)."""
    cpus_per_worker: int = 1
    """CPUs reserved per worker."""
    zero_stage: int = 1
    """DeepSpeed ZeRO stage: 0, 1, 2 or 3."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Mixed precision mode; fp16 uses dynamic loss scaling and needs GPUs."""
    max_failures: int = 3
    """Times Ray Train restarts the worker group after a failure (resuming from the last checkpoint)."""


@dataclass(frozen=True)
class CheckpointConfig:
    storage_uri: str | None = None
    """Checkpoint root (local or s3://); None: <run.output_uri>/checkpoints."""
    interval_steps: int = 10_000
    """Save every this many steps (and always at the end)."""
    keep_last: int = 3
    """Committed checkpoints to keep; older ones are deleted."""

    def resolved_storage_uri(self, run: RunConfig) -> str:
        return self.storage_uri or f"{run.output_uri.rstrip('/')}/checkpoints"


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str | None = None
    """Checkpoint to export: a step-N URI; None: the latest committed one."""
    output_uri: str | None = None
    """Export folder; None: <run.output_uri>/hf."""
    vocab_uri: str | None = None
    """Vocabulary folder shipped with the models (vocab.txt, tokenizer.json, ...); None: the corpus
    stage's vocab/ recorded in the checkpoint's config. Checked against the checkpoint's vocab_sha256."""

    def resolved_output_uri(self, run: RunConfig) -> str:
        return self.output_uri or f"{run.output_uri.rstrip('/')}/hf"


@dataclass(frozen=True)
class HubConfig:
    repo_prefix: str | None = None
    """ORG/NAME: repos ORG/NAME-discriminator and ORG/NAME-generator are created."""
    private: bool = False
    """Create private repositories."""
    license: str = "apache-2.0"
    """License written in the model card metadata."""


@dataclass(frozen=True)
class FinetuneTaskConfig:
    name: str = ""
    """Task name, as listed in `finetune.tasks`. For a built-in task (nsmc, korsts, kornli, paws,
    question_pair, hate_speech, naver_ner, korquad) only the fields given here change; a new name needs train_file, the
    evaluated split's file, text_columns, label_column, metric (and labels for classification), and
    starts from the recipe 10 epochs / batch 32 / lr 5e-5."""
    folder: str | None = None
    """Folder of the task's files below `finetune.data_dir`; None: the task name."""
    train_file: str | None = None
    """Training file name inside the folder."""
    dev_file: str | None = None
    """Development file name inside the folder."""
    test_file: str | None = None
    """Test file name inside the folder (None: the task has no test split here)."""
    delimiter: str | None = None
    """Field separator; None: a tab. Lines are split on it without quoting, like the original files."""
    columns: list[str] | None = None
    """Names of all columns, in order, for files without a header line; None: the first line is the header."""
    text_columns: list[str] | None = None
    """One column (single sentence) or two (sentence pair) holding the text."""
    label_column: str | None = None
    """Column holding the label (classification), the score (regression), or one tag per word of the
    text, space-separated (tagging: metric entity_f1, whose text is words separated by spaces)."""
    labels: list[str] | None = None
    """Label values (or tags, "O" among them) as written in the file, for classification and tagging;
    None (or empty) makes the task a regression with one output."""
    metric: Literal["accuracy", "macro_f1", "spearman", "pearson", "entity_f1", "korquad_f1"] | None = None
    """Reported metric (x100): accuracy or macro_f1 for classification, spearman or pearson for regression,
    entity_f1 (seqeval's micro F1 over exactly matching BIO entities) for word tagging, which makes the
    task a token classification; korquad_f1 (character F1, exact match beside it) for span extraction
    from SQuAD-format JSON files, which need no columns."""
    epochs: float | None = None
    """Training epochs (fractions allowed)."""
    batch_size: int | None = None
    """Training batch size."""
    learning_rate: float | None = None
    """Peak learning rate (decays linearly to 0, no warm-up)."""
    max_length: int | None = None
    """Maximum tokens per example (KoELECTRA: 128; 512 for KorQuAD)."""


@dataclass(frozen=True)
class FinetuneConfig:
    model_uri: str | None = None
    """Model folder to fine-tune; None: the exported discriminator (<export>/discriminator)."""
    tasks: list[str] = field(default_factory=lambda: ["nsmc", "korsts"])
    """Task names to fine-tune on."""
    data_dir: str = "../shared/data"
    """Folder (local or s3://) holding the task files."""
    output_uri: str | None = None
    """Results folder; None: <run.output_uri>/finetune."""
    max_length: int | None = None
    """Maximum tokens per fine-tuning example for every task, replacing the recipes' (128; 512 for
    korquad; a task_specs entry still wins); None: recipes."""
    seed: int = 42
    """Fine-tuning seed (KoELECTRA: 42); repeated runs use seed, seed+1, ..."""
    repeats: int = 1
    """Runs per task with different seeds; results report each run, their mean and standard deviation."""
    task_specs: list[FinetuneTaskConfig] = field(default_factory=list)
    """New tasks, or changes to built-in ones (by name); see FinetuneTaskConfig."""
    epochs: float | None = None
    """Epochs for every task, replacing the built-in recipes' (a task_specs entry still wins); None: recipes."""
    batch_size: int | None = None
    """Batch size for every task (like epochs); None: recipes."""
    learning_rate: float | None = None
    """Learning rate for every task (like epochs); None: recipes."""
    max_train_examples: int | None = None
    """Train on at most the first N rows of each training file (a budget); None: all."""
    max_eval_examples: int | None = None
    """Evaluate on at most the first N rows of each evaluation file; None: all."""
    eval_split: Literal["dev", "test"] = "dev"
    """Split the results are measured on (KoELECTRA reported test; the shared data has dev only)."""
    gpus_per_task: float = 1.0
    """GPUs reserved by each fine-tuning run (fractions share a GPU) when the cluster has GPUs; on a
    cluster without GPUs runs go to CPUs."""
    cpus_per_task: int = 1
    """CPUs reserved by each fine-tuning run (also its torch thread count on CPU)."""

    def resolved_output_uri(self, run: RunConfig) -> str:
        return self.output_uri or f"{run.output_uri.rstrip('/')}/finetune"

    def resolved_model_uri(self, export_uri: str) -> str:
        """The model folder to fine-tune, given the export stage's output folder."""
        return self.model_uri or f"{export_uri.rstrip('/')}/discriminator"


@dataclass(frozen=True)
class Config:
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
    hub: HubConfig = field(default_factory=HubConfig)
    """Hugging Face Hub publishing."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Downstream fine-tuning."""

    def gradient_accumulation_steps(self) -> int:
        per_step = self.train.micro_batch_size * self.distributed.num_workers
        return max(1, self.train.global_batch_size // per_step)

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
            "gradient_accumulation_steps": self.gradient_accumulation_steps(),
            "corpus_output_uri": self.corpus.resolved_output_uri(self.run),
            "checkpoint_storage_uri": self.checkpoint.resolved_storage_uri(self.run),
            "export_output_uri": self.export.resolved_output_uri(self.run),
            "finetune_output_uri": self.finetune.resolved_output_uri(self.run),
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- building from plain data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the converted value (or None on error)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {json.dumps(value)}")
            return None
        return _build(tp, value, f"{path}.", errors)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(value, inner[0], path, errors)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            errors.append(f"{path}: {json.dumps(value)} is not one of {', '.join(map(json.dumps, allowed))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {json.dumps(value)}")
            return None
        return [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        errors.append(f"{path}: expected {_type_name(tp)}, got {json.dumps(value, ensure_ascii=False)}")
        return None
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            errors.append(f"{prefix}{key}: unknown key (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names & data.keys():
        kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", errors)
    if errors:
        return None
    return cls(**kwargs)


def _validate(cfg: Config) -> list[str]:
    """Cross-field problems, all of them."""
    problems: list[str] = []
    m, t, d, c = cfg.model, cfg.train, cfg.distributed, cfg.checkpoint

    def positive(path: str, value: float) -> None:
        if value <= 0:
            problems.append(f"{path}: must be > 0, got {value}")

    for path, value in [
        ("model.vocab_size", m.vocab_size),
        ("model.embedding_size", m.embedding_size),
        ("model.hidden_size", m.hidden_size),
        ("model.num_hidden_layers", m.num_hidden_layers),
        ("model.num_attention_heads", m.num_attention_heads),
        ("model.intermediate_size", m.intermediate_size),
        ("model.generator_size", m.generator_size),
        ("model.max_length", m.max_length),
        ("train.global_batch_size", t.global_batch_size),
        ("train.micro_batch_size", t.micro_batch_size),
        ("train.steps", t.steps),
        ("train.learning_rate", t.learning_rate),
        ("distributed.num_workers", d.num_workers),
        ("checkpoint.interval_steps", c.interval_steps),
        ("checkpoint.keep_last", c.keep_last),
        ("corpus.examples_per_shard", cfg.corpus.examples_per_shard),
    ]:
        positive(path, value)
    if m.hidden_size > 0 and m.num_attention_heads > 0 and m.hidden_size % m.num_attention_heads:
        problems.append(
            f"model.hidden_size ({m.hidden_size}) must be divisible by model.num_attention_heads "
            f"({m.num_attention_heads})"
        )
    if m.generator_size > 1:
        problems.append(f"model.generator_size: a fraction in (0, 1], got {m.generator_size}")
    if m.max_length < 8:
        problems.append(f"model.max_length: at least 8 tokens, got {m.max_length}")
    if m.vocab_size > 0 and m.vocab_size <= cfg.corpus.vocab.num_unused + 5:
        problems.append(
            f"model.vocab_size ({m.vocab_size}) leaves no room beyond 5 special tokens and "
            f"corpus.vocab.num_unused ({cfg.corpus.vocab.num_unused}) [unused] tokens"
        )
    per_step = t.micro_batch_size * d.num_workers
    if per_step > 0 and t.global_batch_size > 0 and t.global_batch_size % per_step:
        problems.append(
            f"train.global_batch_size ({t.global_batch_size}) must be divisible by train.micro_batch_size "
            f"x distributed.num_workers ({t.micro_batch_size} x {d.num_workers} = {per_step}); "
            f"use e.g. {max(per_step, t.global_batch_size // per_step * per_step)}"
        )
    if not 0 < t.mask_prob < 1:
        problems.append(f"train.mask_prob: a fraction in (0, 1), got {t.mask_prob}")
    if t.warmup_steps < 0:
        problems.append(f"train.warmup_steps: must be >= 0, got {t.warmup_steps}")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        problems.append(f"train.adam_betas: two values in [0, 1), got {t.adam_betas}")
    if d.zero_stage not in (0, 1, 2, 3):
        problems.append(f"distributed.zero_stage: one of 0, 1, 2, 3, got {d.zero_stage}")
    if d.gpus_per_worker < 0 or d.cpus_per_worker < 1:
        problems.append("distributed.gpus_per_worker must be >= 0 and distributed.cpus_per_worker >= 1")
    if d.precision == "fp16" and d.gpus_per_worker == 0:
        problems.append(
            "distributed.precision: fp16 needs GPUs (distributed.gpus_per_worker is 0); use bf16 or fp32 on CPU"
        )
    for i, stage in enumerate(cfg.run.stages):
        if stage not in STAGES:
            problems.append(f"run.stages[{i}]: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    for name, p in [
        ("corpus.single_segment_prob", cfg.corpus.single_segment_prob),
        ("corpus.short_seq_prob", cfg.corpus.short_seq_prob),
    ]:
        if not 0 <= p <= 1:
            problems.append(f"{name}: a probability in [0, 1], got {p}")
    if "corpus" in cfg.run.stages and not cfg.corpus.inputs:
        problems.append(
            "corpus.inputs: empty; list text files or folders (local or s3://), or drop 'corpus' from run.stages"
        )
    if not math.isfinite(t.learning_rate):
        problems.append("train.learning_rate: must be finite")
    for path, value in [
        ("train.grad_clip", t.grad_clip),
        ("train.adam_eps", t.adam_eps),
        ("train.log_every", t.log_every),
    ]:
        positive(path, value)
    for path, value in [
        ("train.weight_decay", t.weight_decay),
        ("train.gen_weight", t.gen_weight),
        ("train.disc_weight", t.disc_weight),
    ]:
        if value < 0:
            problems.append(f"{path}: must be >= 0, got {value}")
    if d.max_failures < -1:
        problems.append(f"distributed.max_failures: >= 0 retries, or -1 for unlimited; got {d.max_failures}")
    if "finetune" in cfg.run.stages:
        from koelectra_dist.finetune.tasks import config_problems  # lazy: config must not import stages

        problems += config_problems(cfg.finetune)
    return problems


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as s3://bucket/x


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `a.b.c=value` overrides in place (value parsed as JSON, else a string); return problems."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {key}: {part} is not a section")
                break
        else:
            node[leaf] = _parse_value(raw)
    return problems


# Fields naming locations. A relative local path in them is made absolute where the config is
# loaded: Ray workers run in other working directories than the driver.
LOCATION_FIELDS = (
    "run.output_uri",
    "corpus.inputs",
    "corpus.output_uri",
    "corpus.vocab.vocab_uri",
    "train.shards_uri",
    "train.init_from",
    "checkpoint.storage_uri",
    "export.checkpoint",
    "export.output_uri",
    "export.vocab_uri",
    "finetune.model_uri",
    "finetune.data_dir",
    "finetune.output_uri",
)


PLACEHOLDER = "YOUR-"
"""Marks the values the shipped configs leave to the user (s3://YOUR-BUCKET/..., YOUR-ORG/...)."""


def placeholder_problems(cfg: Config) -> list[str]:
    """Locations that still hold a placeholder: fine for `--check`, fatal for a run."""
    problems = []
    for dotted in LOCATION_FIELDS:
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        for v in value if isinstance(value, list) else [value]:
            if v and PLACEHOLDER in v:
                problems.append(f"{dotted}: {v} is a placeholder; set it, e.g. --set {dotted}=s3://my-bucket/...")
    return problems


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
    cfg = _build(Config, data, "", errors)
    if cfg is not None:
        errors += _validate(cfg)
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    for dotted in LOCATION_FIELDS:
        cfg = _replace_at(cfg, dotted.split("."), _absolute)
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
        raise ConfigError("invalid overrides:\n  - " + "\n  - ".join(problems))
    return config_from_dict(data)


def resolved_json(cfg: Config) -> str:
    return json.dumps({**cfg.to_dict(), "derived": cfg.derived()}, indent=2, ensure_ascii=False)
