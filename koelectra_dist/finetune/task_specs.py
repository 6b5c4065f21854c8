"""Declarative downstream task specs: KoELECTRA's tasks built in, new delimited-text tasks from config.

A task is a `FinetuneTaskConfig` (files, columns, label set, metric, recipe). Built-ins carry
KoELECTRA's file layout and fine-tuning recipe; `finetune.task_specs`
entries change fields of a built-in or define a new task, so a new TSV task needs no code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "matthews")
REGRESSION_METRICS = ("spearman", "pearson")
TAGGING_METRICS = ("entity_f1",)
SPAN_METRICS = ("korquad_f1",)
# KoELECTRA's Naver NER tag set (its label.txt): 14 entity types in "TYPE-B" / "TYPE-I" spelling.
NAVER_NER_TYPES = ("PER", "FLD", "AFW", "ORG", "LOC", "CVL", "DAT", "TIM", "NUM", "EVT", "ANM", "PLT", "MAT", "TRM")


UNSET = "(unset)"
"""A task_specs entry's dev_file/test_file when not given (null means the task has no such file)."""
FILE_FIELDS = ("dev_file", "test_file")


@dataclass(frozen=True)
class FinetuneTaskConfig:
    name: str = ""
    """Task name, as listed in `finetune.tasks`. For a built-in task (nsmc, korsts, kornli, paws,
    question_pair, question_pair_koelectra, hate_speech, naver_ner, korquad) only the fields given here change; a new name needs train_file, the
    evaluated split's file, text_columns, label_column, metric (and labels for classification), and
    starts from the recipe 10 epochs / batch 32 / lr 5e-5."""
    folder: str | None = None
    """Folder of the task's files below `finetune.data_dir`; None: the task name."""
    train_file: str | None = None
    """Training file name inside the folder, or a full path / URI of its own (then data_dir and
    folder do not apply), so training and evaluation files may live in different places."""
    dev_file: str | None = UNSET
    """Development file name inside the folder (or a full path / URI, like train_file); null: the
    task has none; unset: the built-in task's. With eval_split "test" it is used to choose the
    epoch when it exists, and the final epoch is scored when it does not."""
    test_file: str | None = UNSET
    """Test file name inside the folder (or a full path / URI); null: the task has none; unset: the
    built-in task's."""
    eval_split: Literal["dev", "test"] | None = None
    """The split this task is scored on; None: finetune.eval_split, or the split the task has when
    it has no file for that one. "test" scores the test file once, at the end, with the epoch that
    scored best on the dev file, or the final epoch when there is no dev file (as KoELECTRA, which
    scored test without selection, and the results say which)."""
    delimiter: str | None = None
    """Field separator; None: detected from the header line (a tab: tab-separated, split without
    quoting like KoELECTRA's readers; else a comma: CSV with quoting). A given delimiter splits
    lines on it without quoting."""
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
    metric: Literal["accuracy", "macro_f1", "matthews", "spearman", "pearson", "entity_f1", "korquad_f1"] | None = None
    """Reported metric (x100): accuracy, macro_f1 or matthews (Matthews correlation, CoLA's) for
    classification, spearman or pearson for regression,
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


# A new task starts from KoELECTRA's most common recipe; a built-in one states where it differs.
NEW_TASK_DEFAULTS = FinetuneTaskConfig(
    dev_file=None, test_file=None, epochs=10, batch_size=32, learning_rate=5e-5, max_length=128
)


def _recipe(**fields: object) -> FinetuneTaskConfig:
    return dataclasses.replace(NEW_TASK_DEFAULTS, **fields)


BUILTIN_TASKS: dict[str, FinetuneTaskConfig] = {
    t.name: t
    for t in [
        _recipe(  # e9t/nsmc publishes train and test only: ratings_dev.txt is used when present
            name="nsmc",
            train_file="ratings_train.txt",
            dev_file="ratings_dev.txt",
            test_file="ratings_test.txt",
            text_columns=["document"],
            label_column="label",
            labels=["0", "1"],
            metric="accuracy",
        ),
        _recipe(
            name="korsts",
            train_file="sts-train.tsv",
            dev_file="sts-dev.tsv",
            test_file="sts-test.tsv",
            text_columns=["sentence1", "sentence2"],
            label_column="score",
            metric="spearman",
        ),
        _recipe(
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
        ),
        _recipe(
            name="paws",
            train_file="translated_train.tsv",
            dev_file="dev_2k.tsv",
            test_file="test_2k.tsv",
            text_columns=["sentence1", "sentence2"],
            label_column="label",
            labels=["0", "1"],
            metric="accuracy",
            epochs=15,
            learning_rate=3e-5,
        ),
        _recipe(
            name="question_pair",
            folder="question-pair",
            train_file="kor_pair_train.csv",
            test_file="kor_pair_test.csv",  # the original has no dev split
            text_columns=["question1", "question2"],
            label_column="is_duplicate",
            labels=["0", "1"],
            metric="accuracy",
        ),
        _recipe(  # KoELECTRA's own re-split of songys' pairs (its finetune/data/question-pair)
            name="question_pair_koelectra",
            folder="question-pair",
            train_file="train.tsv",
            dev_file="dev.tsv",
            test_file="test.tsv",
            text_columns=["question1", "question2"],
            label_column="is_duplicate",
            labels=["0", "1"],
            metric="accuracy",
        ),
        _recipe(
            name="hate_speech",
            folder="hate-speech",
            train_file="train.tsv",
            dev_file="dev.tsv",
            text_columns=["comments"],
            label_column="hate",
            labels=["none", "offensive", "hate"],
            metric="macro_f1",
        ),
        _recipe(
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
        ),
        _recipe(
            name="korquad",
            train_file="KorQuAD_v1.0_train.json",
            dev_file="KorQuAD_v1.0_dev.json",
            metric="korquad_f1",  # SQuAD v1.1 JSON: no columns or labels
            epochs=7,
            batch_size=8,
            max_length=512,
        ),
    ]
}
# KoELECTRA's Small configs (finetune/config/<task>/koelectra-small-v3.json) differ from Base only here.
SMALL_RECIPES: dict[str, dict[str, object]] = {
    "kornli": {"batch_size": 128},
    "paws": {"batch_size": 64},
    "korquad": {"batch_size": 32},
}
# KoELECTRA's configs for DistilKoBERT (finetune/config/<task>/distilkobert.json): 768 wide, 3 layers.
DISTILKOBERT_RECIPES: dict[str, dict[str, object]] = {
    "kornli": {"batch_size": 128},
    "paws": {"batch_size": 32},
    "korquad": {"batch_size": 32},
}
RECIPES = {"small": SMALL_RECIPES, "distilkobert": DISTILKOBERT_RECIPES}
SMALL_MAX_HIDDEN = 256
"""Models this wide or narrower get the Small recipes (KoELECTRA-Small is 256 wide, Base 768)."""
BASE_LAYERS = 12
"""Wider models with fewer layers than Base (distilled students) get DistilKoBERT's recipes."""


def recipe_size(hidden_size: int, num_layers: int = BASE_LAYERS) -> str:
    """Which of KoELECTRA's recipe families fits a model of this shape: "small" (up to 256 wide),
    "distilkobert" (wider, fewer layers than Base) or "base"."""
    if hidden_size <= SMALL_MAX_HIDDEN:
        return "small"
    return "distilkobert" if num_layers < BASE_LAYERS else "base"


def builtin_tasks(size: str) -> dict[str, FinetuneTaskConfig]:
    """The built-in tasks with the recipes of KoELECTRA's `size` ("base", "small" or
    "distilkobert") configs."""
    if size == "base":
        return dict(BUILTIN_TASKS)
    return {name: merge_spec(spec, RECIPES[size].get(name, {})) for name, spec in BUILTIN_TASKS.items()}


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


def merge_spec(base: FinetuneTaskConfig, changes: dict) -> FinetuneTaskConfig:
    """`base` with the given changes: None leaves a field as it is, except dev_file/test_file,
    where null (or "") means the task has no such file and UNSET leaves it."""
    kept = {}
    for key, value in changes.items():
        if key in FILE_FIELDS:
            if value != UNSET:
                kept[key] = value or None
        elif value is not None:
            kept[key] = value
    return dataclasses.replace(base, **kept)


def spec_problems(spec: FinetuneTaskConfig, eval_split: str) -> list[str]:
    where = f"finetune task {spec.name!r}"
    required = _REQUIRED if is_span(spec) else _REQUIRED + _COLUMNS
    problems = [f"{where}: {name} is not set" for name in required if getattr(spec, name) is None]
    if split_file(spec, eval_split) is None:
        problems.append(
            f"{where}: has no {eval_split}_file to evaluate on (eval_split={eval_split!r}, from the task's "
            f"task_specs entry or finetune.eval_split); set {eval_split}_file in finetune.task_specs or "
            "choose the other split"
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
