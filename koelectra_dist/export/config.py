"""The export stage's config section."""

from __future__ import annotations

from dataclasses import dataclass

BEST = "best"
"""`export.checkpoint` value naming the checkpoint with the best probe score."""


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str | None = None
    """Checkpoint to export: a step-N URI; "best": the committed step with the best probe score on
    export.best_task (probe.jsonl); None: the latest committed one."""
    best_task: str | None = None
    """The probe task whose score "best" maximises; None: the first of probe.tasks."""
    output_uri: str | None = None
    """Export folder; None: <run.output_uri>/hf."""
    vocab_uri: str | None = None
    """Vocabulary folder shipped with the models (vocab.txt, tokenizer.json, ...); None: the corpus
    stage's vocab/ recorded in the checkpoint's config. Checked against the checkpoint's vocab_sha256."""
    overwrite: bool = False
    """Export into an output folder that holds files no export wrote (at any depth), leaving them in
    place; without it such a folder is refused. An earlier export's files are always replaced, and
    the export never deletes a file it did not write."""
