"""The pipeline's stages, in order, and where each one's entry point lives.

Each entry point is `run(cfg: Config) -> dict` (a JSON-able report of what the stage did). Modules
are imported only when their stage runs, so `--check` and unrelated stages stay light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from koelectra_dist.config import STAGES, Config

ENTRY_POINTS = {
    "corpus": "koelectra_dist.corpus.stage:run",
    "pretrain": "koelectra_dist.train:run",
    "export": "koelectra_dist.export:run",
    "finetune": "koelectra_dist.finetune.stage:run",
}
NEEDS_RAY = {"corpus", "pretrain", "finetune"}
assert tuple(ENTRY_POINTS) == STAGES


def entry_point(stage: str) -> Callable[[Config], dict[str, Any]]:
    module, _, func = ENTRY_POINTS[stage].partition(":")
    return getattr(importlib.import_module(module), func)
