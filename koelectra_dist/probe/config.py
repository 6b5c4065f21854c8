"""The `probe` config section: which committed checkpoints are fine-tuned while pre-training runs,
on which tasks, with what budget and resources, and what happens when probes pile up."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ProbeConfig:
    tasks: list[str] = field(default_factory=list)
    """Fine-tuning tasks each probe runs (built-in or defined in finetune.task_specs, read from
    finetune.data_dir, scored on their dev file); empty: no probes (the default)."""
    every: int = 1
    """Probe every this-many-th checkpoint interval: the committed steps that are multiples of
    checkpoint.interval_steps x every, and always the final step."""
    max_train_examples: int = 2000
    """Training rows per probe and task (the first N of the training file)."""
    max_eval_examples: int = 1000
    """Dev rows scored per probe and task."""
    epochs: float = 1.0
    """Fine-tuning epochs per probe (replaces the task recipe's)."""
    learning_rate: float | None = None
    """Fine-tuning learning rate; None: finetune.learning_rate, else the task recipe's."""
    seeds: int = 1
    """Fine-tuning runs per task with seeds finetune.seed, +1, ...: the line reports their mean and spread."""
    cpus: int = 1
    """CPUs a probe reserves (its torch threads on CPU). Taken from outside the training workers."""
    gpus: float = 0.0
    """GPUs a probe reserves when the cluster has GPUs (fractions share one)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources a probe asks for, e.g. {"probe_node": 1} for a node type that only the
    autoscaler's probe nodes offer."""
    max_running: int = 1
    """Probes running at once."""
    when_busy: Literal["queue", "skip"] = "queue"
    """A checkpoint due while max_running probes run: "queue" probes it later (its checkpoint is kept
    from keep_last until then), "skip" records it as skipped. The final step is always queued."""
    at_end: Literal["await", "abandon"] = "await"
    """When training ends with probes running or queued: "await" them (the stage returns after), or
    "abandon" them (cancelled, not recorded: the next run of the stage on this checkpoint folder
    probes them)."""

    def enabled(self) -> bool:
        return bool(self.tasks)


def problems(cfg: Any) -> list[str]:
    """What is wrong with the probe section (`cfg` is the root config); checked by every stage."""
    p = cfg.probe
    found: list[str] = []
    for path, value in [
        ("probe.every", p.every),
        ("probe.max_train_examples", p.max_train_examples),
        ("probe.max_eval_examples", p.max_eval_examples),
        ("probe.epochs", p.epochs),
        ("probe.seeds", p.seeds),
        ("probe.cpus", p.cpus),
        ("probe.max_running", p.max_running),
    ]:
        if value <= 0:
            found.append(f"{path}: must be > 0, got {value}")
    if p.gpus < 0:
        found.append(f"probe.gpus: must be >= 0, got {p.gpus}")
    if p.learning_rate is not None and p.learning_rate <= 0:
        found.append(f"probe.learning_rate: must be > 0 (or null for the recipe's), got {p.learning_rate}")
    for name, amount in p.resources.items():
        if not isinstance(amount, (int, float)) or isinstance(amount, bool):
            found.append(f"probe.resources.{name}: expected a number, got {amount!r}")
        elif name in ("CPU", "GPU"):
            found.append(f"probe.resources.{name}: set probe.{name.lower()}s instead")
        elif amount <= 0:
            found.append(f"probe.resources.{name}: must be > 0, got {amount}")
    if p.enabled():
        from koelectra_dist.finetune.config import config_problems, resolve_tasks

        section = finetune_section(cfg.finetune, p)
        problems = [problem.replace("finetune.tasks", "probe.tasks") for problem in config_problems(section)]
        # a task without a dev file would be scored on test (finetune's fallback); probes never are
        problems += [
            f"probe.tasks: {spec.name!r} has no dev file to probe on (probes never score test); set its dev_file "
            "in finetune.task_specs"
            for spec in ([] if problems else resolve_tasks(section))
            if spec.dev_file is None
        ]
        found += problems
    best = cfg.export.best_task
    if cfg.export.checkpoint == "best":
        if not p.enabled():
            found.append(
                'export.checkpoint: "best" picks the checkpoint with the best probe score, but probe.tasks is '
                'empty; name a task in probe.tasks (e.g. ["nsmc"]) or export a step folder'
            )
        elif best is not None and best not in p.tasks:
            found.append(f"export.best_task: {best!r} is not among probe.tasks {p.tasks}")
    return found


def finetune_section(finetune: Any, p: ProbeConfig) -> Any:
    """The finetune section a probe runs with: its tasks, budget and seeds, scored on dev."""
    return dataclasses.replace(
        finetune,
        tasks=list(p.tasks),
        epochs=p.epochs,
        learning_rate=p.learning_rate if p.learning_rate is not None else finetune.learning_rate,
        max_train_examples=p.max_train_examples,
        max_eval_examples=p.max_eval_examples,
        repeats=p.seeds,
        eval_split="dev",
    )
