"""The export folder's layout and `ExportInfo`: what the export stage writes and the Hub publisher
reads. Kept apart from the stage so that publishing needs neither torch nor transformers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koelectra_dist.configbase import contract_fields, contract_json
from koelectra_dist.errors import DataError
from koelectra_dist.pretrain.meta import CheckpointMeta

SCHEMA_VERSION = 1

TOWERS = ("discriminator", "generator")
"""Sub-folders holding a transformers model each (`<name>-discriminator`/`-generator` on the Hub)."""
PRETRAINING = "pretraining"
"""Sub-folder with the joint generator+discriminator weights for continued pre-training."""
EXPORT_INFO = "export_info.json"
"""Written last: checkpoint meta.json and corpus statistics; its presence marks a complete export."""
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
EXPORT_FILES = frozenset(
    [EXPORT_INFO]
    + [f"{folder}/{name}" for folder in (*TOWERS, PRETRAINING) for name in (*MODEL_FILES, *TOKENIZER_FILES)]
)
"""Every file an export writes, relative to the export folder: the only files it ever replaces or deletes."""


@dataclass(frozen=True)
class ExportInfo:
    """`export_info.json`, written last: everything the model card states, so that publishing
    needs the export folder only."""

    checkpoint: str
    """The step-N folder exported."""
    step: int
    vocab_sha256: str
    exported_at: str
    """UTC time of the export, ISO 8601."""
    parameters: dict[str, int]
    """Parameter counts of the discriminator, the generator and the joint model (a student: of the
    student and its teacher)."""
    meta: CheckpointMeta
    """The checkpoint's meta.json."""
    corpus: dict[str, Any] | None
    """The shard manifest without its per-shard list, or None when the shards were not reachable."""
    kind: str = "pair"
    """"pair": the export stage's discriminator/ and generator/ (parameters of both and the joint
    model); "student": the distill stage's student folder, this file inside it (parameters of the
    student and the teacher; the distillation settings are in meta.config's distill section)."""
    selection: dict[str, Any] | None = None
    """How the checkpoint was chosen when `export.checkpoint` was "best": the probe task, metric,
    chosen step and score, why, and the probe curve ({step, mean, std} per probed checkpoint)."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return contract_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> ExportInfo:
        """The export info in `data`; DataError naming `where` when it is not a complete one."""
        try:
            fields = contract_fields(cls, data, where, DataError, SCHEMA_VERSION)
        except DataError as e:
            raise DataError(f"{e}; run the export stage again") from None
        return cls(**{**fields, "meta": CheckpointMeta.from_json(data["meta"], where)})
