"""Declarative downstream task specs: KoELECTRA's tasks built in, new delimited-text tasks from config.

A task is a `FinetuneTaskConfig` (files, columns, label set, metric, recipe). Built-ins carry
KoELECTRA's file layout and fine-tuning recipe (reference.md section 1); `finetune.task_specs`
entries change fields of a built-in or define a new task, so a new TSV task needs no code.
"""

from __future__ import annotations

import dataclasses

from koelectra_dist.config import FinetuneConfig, FinetuneTaskConfig
from koelectra_dist.errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
REGRESSION_METRICS = ("spearman", "pearson")
TAGGING_METRICS = ("entity_f1",)
SPAN_METRICS = ("korquad_f1",)
# KoELECTRA's Naver NER tag set (its label.txt): 14 entity types in "TYPE-B" / "TYPE-I" spelling.
NAVER_NER_TYPES = ("PER", "FLD", "AFW", "ORG", "LOC", "CVL", "DAT", "TIM", "NUM", "EVT", "ANM", "PLT", "MAT", "TRM")

BUILTIN_TASKS: dict[str, FinetuneTaskConfig] = {
    t.name: t
    for t in [
        FinetuneTaskConfig(
            name="nsmc",
            train_file="ratings_train.txt",
            dev_file="ratings_dev.txt",
            test_file="ratings_test.txt",
            text_columns=["document"],
            label_column="label",
            labels=["0", "1"],
            metric="accuracy",
            epochs=10,
            batch_size=32,
            learning_rate=5e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="korsts",
            train_file="sts-train.tsv",
            dev_file="sts-dev.tsv",
            test_file="sts-test.tsv",
            text_columns=["sentence1", "sentence2"],
            label_column="score",
            metric="spearman",
            epochs=10,
            batch_size=32,
            learning_rate=5e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="kornli",
            train_file="multinli.train.ko.tsv",
            dev_file="xnli.dev.ko.tsv",
            test_file="xnli.test.ko.tsv",
            text_columns=["sentence1", "sentence2"],
            label_column="gold_label",
            labels=["contradiction", "entailment", "neutral"],
            metric="accuracy",
            epochs=15,
            batch_size=64,
            learning_rate=5e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="paws",
            train_file="translated_train.tsv",
            dev_file="dev_2k.tsv",
            test_file="test_2k.tsv",
            text_columns=["sentence1", "sentence2"],
            label_column="label",
            labels=["0", "1"],
            metric="accuracy",
            epochs=15,
            batch_size=32,
            learning_rate=3e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="question_pair",
            folder="question-pair",
            train_file="kor_pair_train.csv",
            test_file="kor_pair_test.csv",  # the original has no dev split
            text_columns=["question1", "question2"],
            label_column="is_duplicate",
            labels=["0", "1"],
            metric="accuracy",
            epochs=10,
            batch_size=32,
            learning_rate=5e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="hate_speech",
            folder="hate-speech",
            train_file="train.tsv",
            dev_file="dev.tsv",
            text_columns=["comments"],
            label_column="hate",
            labels=["none", "offensive", "hate"],
            metric="macro_f1",
            epochs=10,
            batch_size=32,
            learning_rate=5e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="naver_ner",
            folder="naver-ner",
            train_file="train.tsv",
            test_file="test.tsv",  # KoELECTRA's layout: a sentence and its tags per line, no dev split
            columns=["sentence", "tags"],
            text_columns=["sentence"],
            label_column="tags",
            labels=["O", *(f"{kind}-{position}" for kind in NAVER_NER_TYPES for position in "BI")],
            metric="entity_f1",
            epochs=20,
            batch_size=32,
            learning_rate=5e-5,
            max_length=128,
        ),
        FinetuneTaskConfig(
            name="korquad",
            train_file="KorQuAD_v1.0_train.json",
            dev_file="KorQuAD_v1.0_dev.json",
            metric="korquad_f1",  # SQuAD v1.1 JSON: no columns or labels
            epochs=7,
            batch_size=8,
            learning_rate=5e-5,
            max_length=512,
        ),
    ]
}

# A new task starts from KoELECTRA's most common recipe.
NEW_TASK_DEFAULTS = FinetuneTaskConfig(epochs=10, batch_size=32, learning_rate=5e-5, max_length=128)
_REQUIRED = ("train_file", "metric", "epochs", "batch_size", "learning_rate", "max_length")
_COLUMNS = ("text_columns", "label_column")  # required unless the task reads SQuAD JSON


def is_regression(spec: FinetuneTaskConfig) -> bool:
    return not spec.labels


def is_span(spec: FinetuneTaskConfig) -> bool:
    """A span extraction from SQuAD-format JSON (KorQuAD)."""
    return spec.metric in SPAN_METRICS


def is_tagging(spec: FinetuneTaskConfig) -> bool:
    """A token classification: one label per word of the text."""
    return spec.metric in TAGGING_METRICS


def split_file(spec: FinetuneTaskConfig, split: str) -> str | None:
    """The file name of `split` ("train", "dev" or "test")."""
    return getattr(spec, f"{split}_file")


def _merge(base: FinetuneTaskConfig, changes: dict) -> FinetuneTaskConfig:
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def _problems(spec: FinetuneTaskConfig, eval_split: str) -> list[str]:
    where = f"finetune task {spec.name!r}"
    required = _REQUIRED if is_span(spec) else _REQUIRED + _COLUMNS
    problems = [f"{where}: {name} is not set" for name in required if getattr(spec, name) is None]
    if split_file(spec, eval_split) is None:
        problems.append(
            f"{where}: has no {eval_split}_file to evaluate on (finetune.eval_split={eval_split!r}); "
            f"set it in finetune.task_specs or choose the other split"
        )
    if spec.text_columns is not None and len(spec.text_columns) not in (1, 2):
        problems.append(f"{where}: text_columns needs 1 or 2 columns, got {spec.text_columns}")
    if spec.metric is not None and not is_span(spec):
        allowed = REGRESSION_METRICS if is_regression(spec) else CLASSIFICATION_METRICS + TAGGING_METRICS
        if spec.metric not in allowed:
            kind = "a regression (no labels)" if is_regression(spec) else "a classification"
            problems.append(f"{where}: metric {spec.metric!r} does not fit {kind}; use one of {', '.join(allowed)}")
    if is_tagging(spec):
        if spec.labels and "O" not in spec.labels:
            problems.append(f'{where}: a tagging task needs the outside tag "O" among labels')
        if spec.text_columns is not None and len(spec.text_columns) != 1:
            problems.append(f"{where}: a tagging task tags one text column, got {spec.text_columns}")
    if spec.labels and len(set(spec.labels)) != len(spec.labels):
        problems.append(f"{where}: labels has duplicates: {spec.labels}")
    if spec.labels is not None and len(spec.labels) == 1:
        problems.append(f"{where}: labels needs at least 2 classes (none makes a regression)")
    for name in ("epochs", "batch_size", "learning_rate", "max_length"):
        value = getattr(spec, name)
        if value is not None and value <= 0:
            problems.append(f"{where}: {name} must be > 0, got {value}")
    if spec.delimiter == "":
        problems.append(f"{where}: delimiter must not be empty")
    if spec.columns is not None:
        needed = [c for c in [*(spec.text_columns or []), spec.label_column] if c is not None]
        missing = [c for c in needed if c not in spec.columns]
        if missing:
            problems.append(f"{where}: columns {spec.columns} lack {missing}")
    return problems


def _resolve(cfg: FinetuneConfig) -> tuple[dict[str, FinetuneTaskConfig], list[str]]:
    problems: list[str] = []
    overrides = {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "max_length": cfg.max_length,
    }
    specs = {name: _merge(spec, overrides) for name, spec in BUILTIN_TASKS.items()}
    for i, entry in enumerate(cfg.task_specs):
        if not entry.name:
            problems.append(f"finetune.task_specs[{i}].name: a task name is required")
            continue
        changes = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
        if entry.name in specs:
            specs[entry.name] = _merge(specs[entry.name], changes)
        else:
            specs[entry.name] = _merge(_merge(NEW_TASK_DEFAULTS, overrides), changes)
    for i, name in enumerate(cfg.tasks):
        if name not in specs:
            problems.append(
                f"finetune.tasks[{i}]: unknown task {name!r}; known: {', '.join(sorted(specs))} "
                "(define a new one in finetune.task_specs)"
            )
    for name in dict.fromkeys(cfg.tasks):
        if name in specs:
            problems += _problems(specs[name], cfg.eval_split)
    if not cfg.tasks:
        problems.append('finetune.tasks: empty; name at least one task, e.g. ["nsmc"]')
    if cfg.repeats <= 0:
        problems.append(f"finetune.repeats: must be > 0, got {cfg.repeats}")
    for path, value in [
        ("finetune.max_train_examples", cfg.max_train_examples),
        ("finetune.max_eval_examples", cfg.max_eval_examples),
    ]:
        if value is not None and value <= 0:
            problems.append(f"{path}: must be > 0 (or null for all rows), got {value}")
    if cfg.gpus_per_task < 0 or cfg.cpus_per_task < 1:
        problems.append("finetune.gpus_per_task must be >= 0 and finetune.cpus_per_task >= 1")
    return specs, problems


def config_problems(cfg: FinetuneConfig) -> list[str]:
    """Every problem with the fine-tuning section (called by config validation)."""
    return _resolve(cfg)[1]


def resolve_tasks(cfg: FinetuneConfig) -> list[FinetuneTaskConfig]:
    """The complete specs of the configured tasks, in order; ConfigError listing every problem."""
    specs, problems = _resolve(cfg)
    if problems:
        raise ConfigError("invalid fine-tuning configuration:\n  - " + "\n  - ".join(problems))
    return [specs[name] for name in dict.fromkeys(cfg.tasks)]
