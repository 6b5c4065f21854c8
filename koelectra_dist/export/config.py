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
    """Replace discriminator/, generator/ and pretraining/ in an output folder that holds other files
    no export wrote; without it such a folder is refused (an earlier export is always replaced)."""
