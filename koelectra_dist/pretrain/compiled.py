"""`train.compile`: each encoder layer of both towers compiled with torch.compile (Inductor).

Per layer, not the whole model: the layers are where the FLOPs are, every layer of a tower has
the same code and shapes (so one compiled graph serves them all), and the masking, sampling and
metrics around them stay eager. The compiled forward is set on each layer instance, so parameter
names, state dicts and checkpoints are the eager model's.

A layer that cannot be compiled (no C++ compiler, an unsupported op) fails at its first forward
with a ConfigError naming the cause and the fix, not a silent fall back to the slower eager step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from koelectra_dist.errors import ConfigError


def compile_layers(model: torch.nn.Module) -> int:
    """Compile every encoder layer of the towers below `model` (the `.electra.encoder.layer` lists
    of ElectraForMaskedLM / ElectraForPreTraining); return how many."""
    layers = [
        layer
        for tower in model.modules()
        if hasattr(tower, "electra") and hasattr(tower.electra, "encoder")
        for layer in tower.electra.encoder.layer
    ]
    for layer in layers:
        layer.forward = _failing_clearly(torch.compile(layer.forward))
    return len(layers)


def _failing_clearly(compiled: Callable[..., Any]) -> Callable[..., Any]:
    from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException
    from torch._inductor.exc import InductorError

    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except (BackendCompilerFailed, InductorError, TorchDynamoException) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(
                f"train.compile: torch.compile could not compile an encoder layer ({type(e).__name__}: {first[:300]}); "
                "Inductor needs a C++ compiler on CPU (gcc) and Triton on GPU. Set train.compile=false to train eager"
            ) from None

    return forward
