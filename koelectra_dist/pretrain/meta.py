"""`CheckpointMeta`: what a committed checkpoint says about itself (`step-N/meta.json`).

Kept free of torch so that the Hub publisher, which reads it back from `export_info.json`, needs
neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koelectra_dist.configbase import contract_fields, contract_json
from koelectra_dist.errors import CheckpointError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CheckpointMeta:
    step: int
    """Optimizer steps done."""
    consumed_samples: int
    """Position in the example stream (it does not depend on the worker count)."""
    world_size: int
    """Workers that wrote the engine state."""
    zero_stage: int
    precision: str
    vocab_sha256: str
    """sha256 of the vocab.txt the shards were tokenized with."""
    metrics: dict[str, Any]
    """The last logged metrics (losses, health metrics, throughput)."""
    config: dict[str, Any]
    """The whole resolved run config."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return contract_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> CheckpointMeta:
        """The meta in `data`; CheckpointError naming `where` when it is not a complete one."""
        fields = contract_fields(cls, data, f"{where}: meta.json", CheckpointError, SCHEMA_VERSION)
        if not isinstance(fields["config"], dict):
            raise CheckpointError(f"{where}: meta.json has no 'config' object; the checkpoint is damaged")
        return cls(**fields)
