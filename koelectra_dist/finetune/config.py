"""The finetune stage's config section, and how it resolves to complete task specs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from koelectra_dist.errors import ConfigError, bullets
from koelectra_dist.finetune.task_specs import (
    NEW_TASK_DEFAULTS,
    FinetuneTaskConfig,
    builtin_tasks,
    merge_spec,
    spec_problems,
    split_file,
)


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
    recipe: Literal["auto", "base", "small", "distilkobert"] = "auto"
    """Which of KoELECTRA's fine-tuning recipe families the built-in tasks use: its Small configs
    differ in batch size (KorNLI 128, PAWS 64, KorQuAD 32; Base 64, 32, 8), its DistilKoBERT configs
    too (KorNLI 128, PAWS 32, KorQuAD 32). "auto" picks from the model's config.json: Small for
    hidden_size <= 256; wider, DistilKoBERT's below 12 layers (distilled students), Base from 12."""
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
    """Split every task is scored on unless its task_specs entry says otherwise; a task without a
    file for it is scored on the split it has. "dev": the final model on the dev file; "test": the
    test file, scored once at the end with the epoch that scored best on the dev file when there is
    one, else the final epoch (KoELECTRA scored test, without selection)."""
    allow_same_files: bool = False
    """Let a task train and evaluate on the same file (a warning instead of an error)."""
    gpus_per_task: float = 1.0
    """GPUs reserved by each fine-tuning run (fractions share a GPU) when the cluster has GPUs; on a
    cluster without GPUs runs go to CPUs."""
    cpus_per_task: int = 1
    """CPUs reserved by each fine-tuning run (also its torch thread count on CPU)."""


def _resolve(cfg: FinetuneConfig, size: str = "base") -> tuple[dict[str, FinetuneTaskConfig], list[str]]:
    problems: list[str] = []
    overrides = {
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "max_length": cfg.max_length,
    }
    specs = {name: merge_spec(spec, overrides) for name, spec in builtin_tasks(size).items()}
    for i, entry in enumerate(cfg.task_specs):
        if not entry.name:
            problems.append(f"finetune.task_specs[{i}].name: a task name is required")
            continue
        changes = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
        if entry.name in specs:
            specs[entry.name] = merge_spec(specs[entry.name], changes)
        else:
            specs[entry.name] = merge_spec(merge_spec(NEW_TASK_DEFAULTS, overrides), changes)
    for i, name in enumerate(cfg.tasks):
        if name not in specs:
            problems.append(
                f"finetune.tasks[{i}]: unknown task {name!r}; known: {', '.join(sorted(specs))} "
                "(define a new one in finetune.task_specs)"
            )
    specs = {name: spec if spec.eval_split else _default_split(spec, cfg.eval_split) for name, spec in specs.items()}
    for name in dict.fromkeys(cfg.tasks):
        if name in specs:
            problems += spec_problems(specs[name], specs[name].eval_split)
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


def _default_split(spec: FinetuneTaskConfig, preferred: str) -> FinetuneTaskConfig:
    """finetune.eval_split, or the other split when the task has no file for it (Naver NER and
    Question Pair publish no dev file, Hate Speech and KorQuAD no test file)."""
    other = "test" if preferred == "dev" else "dev"
    if split_file(spec, preferred) is None and split_file(spec, other) is not None:
        return dataclasses.replace(spec, eval_split=other)
    return dataclasses.replace(spec, eval_split=preferred)


def config_problems(cfg: FinetuneConfig) -> list[str]:
    """Every problem with the fine-tuning section (called by config validation)."""
    return _resolve(cfg)[1]


def resolve_tasks(cfg: FinetuneConfig, size: str = "base") -> list[FinetuneTaskConfig]:
    """The complete specs of the configured tasks, in order, built-ins with KoELECTRA's `size`
    recipes; ConfigError listing every problem."""
    specs, problems = _resolve(cfg, size)
    if problems:
        raise ConfigError("invalid fine-tuning configuration:" + bullets(problems))
    return [specs[name] for name in dict.fromkeys(cfg.tasks)]


def problems(cfg: Any) -> list[str]:
    """What is wrong with the finetune section (`cfg` is the root config); checked when run.stages holds finetune."""
    return config_problems(cfg.finetune) if "finetune" in cfg.run.stages else []
