"""Where each stage reads and writes: the defaults below `run.output_uri`, resolved in one place.

    <run.output_uri>/corpus/vocab/       the vocabulary (corpus stage)
    <run.output_uri>/corpus/shards/      Parquet shards + manifest.json (corpus stage)
    <run.output_uri>/checkpoints/        step-N/ folders (pretrain stage)
    <run.output_uri>/hf/                 discriminator/, generator/, pretraining/ (export stage)
    <run.output_uri>/distill/            checkpoints/, model/ (distill stage)
    <run.output_uri>/finetune/           results (finetune stage)

Every field of the config that names one of these overrides its default here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VOCAB_DIR = "vocab"
SHARDS_DIR = "shards"


def _below(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def vocab_beside(shards_uri: str) -> str:
    """The vocab/ folder the corpus stage writes beside a shards/ folder."""
    return _below(shards_uri.rstrip("/").rsplit("/", 1)[0], VOCAB_DIR)


@dataclass(frozen=True)
class Layout:
    corpus: str
    """The corpus stage's output root (vocab/ and shards/)."""
    vocab: str
    """The vocabulary folder the corpus stage writes."""
    corpus_shards: str
    """The shard folder the corpus stage writes."""
    shards: str
    """The shard folder pre-training reads (the corpus stage's unless train.shards_uri names another)."""
    checkpoints: str
    """The checkpoint root."""
    export: str
    """The export folder."""
    distill: str
    """The distill stage's output root."""
    distill_checkpoints: str
    """The distill stage's checkpoint root."""
    distill_model: str
    """The distilled student (a transformers folder)."""
    finetune_model: str
    """The model folder fine-tuning starts from."""
    finetune: str
    """The fine-tuning results folder."""

    @classmethod
    def of(cls, cfg: Any) -> Layout:
        """The layout of the root config `cfg`."""
        root = cfg.run.output_uri
        corpus = cfg.corpus.output_uri or _below(root, "corpus")
        export = cfg.export.output_uri or _below(root, "hf")
        distill = cfg.distill.output_uri or _below(root, "distill")
        return cls(
            corpus=corpus,
            vocab=_below(corpus, VOCAB_DIR),
            corpus_shards=_below(corpus, SHARDS_DIR),
            shards=cfg.train.shards_uri or _below(corpus, SHARDS_DIR),
            checkpoints=cfg.checkpoint.storage_uri or _below(root, "checkpoints"),
            export=export,
            distill=distill,
            distill_checkpoints=_below(distill, "checkpoints"),
            distill_model=_below(distill, "model"),
            finetune_model=cfg.finetune.model_uri or _below(export, "discriminator"),
            finetune=cfg.finetune.output_uri or _below(root, "finetune"),
        )
