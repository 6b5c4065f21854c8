"""The export stage's config section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str | None = None
    """Checkpoint to export: a step-N URI; None: the latest committed one."""
    output_uri: str | None = None
    """Export folder; None: <run.output_uri>/hf."""
    vocab_uri: str | None = None
    """Vocabulary folder shipped with the models (vocab.txt, tokenizer.json, ...); None: the corpus
    stage's vocab/ recorded in the checkpoint's config. Checked against the checkpoint's vocab_sha256."""
    overwrite: bool = False
    """Export into an output folder that holds files no export wrote (at any depth), leaving them in
    place; without it such a folder is refused. An earlier export's files are always replaced, and
    the export never deletes a file it did not write."""
