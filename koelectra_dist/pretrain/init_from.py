"""Starting pre-training from exported weights: the `pretraining/` folder the export stage writes.

That folder holds the joint generator+discriminator state dict (`model.safetensors`, keys
`generator.*` / `discriminator.*`) and a `config.json` with the model shape and objective; it is
what `train.init_from` names to continue pre-training from an earlier run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import torch
from safetensors.torch import load_file

from koelectra_dist import storage
from koelectra_dist.config import ModelConfig
from koelectra_dist.errors import CheckpointError, ConfigError
from koelectra_dist.pretrain.model import ElectraPretrainer

PRETRAINING_FORMAT = "koelectra_dist.pretraining/1"


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a full state dict, strictly: a missing or unexpected key means another model shape."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise CheckpointError(f"{source}: the weights do not fit the model.* config: {e}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: the weights do not fit the model.* config (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}); use the model config they were trained with"
        )


def pretraining_config(uri: str, expect: ModelConfig | None = None) -> tuple[ModelConfig, dict[str, Any]]:
    """The model shape and the whole config.json of an exported `pretraining/` folder (local or
    s3://). With `expect`, a different model shape is a ConfigError naming the fields."""
    config_uri = storage.join(uri, "config.json")
    if not storage.exists(config_uri):
        raise CheckpointError(
            f"{uri}: not an exported pretraining/ folder (no config.json); run `launch.py --config C export` "
            "and use <export output>/pretraining"
        )
    saved = storage.read_json(config_uri)
    if saved.get("format") != PRETRAINING_FORMAT:
        raise CheckpointError(
            f"{uri}: config.json is not a {PRETRAINING_FORMAT} config (format {saved.get('format')!r})"
        )
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(saved["model"]) - fields)
    if unknown:
        raise CheckpointError(f"{uri}: config.json has unknown model fields {unknown}; a newer koelectra_dist wrote it")
    model_cfg = ModelConfig(**saved["model"])
    # dropout may change when pre-training continues; the shapes may not
    differ = [
        f"model.{f}: {getattr(model_cfg, f)!r} in {uri}, {getattr(expect, f)!r} in the config"
        for f in sorted(fields - {"hidden_dropout", "attention_dropout"})
        if expect is not None and getattr(model_cfg, f) != getattr(expect, f)
    ]
    if differ:
        raise ConfigError("the model config differs from the one of train.init_from:\n  - " + "\n  - ".join(differ))
    return model_cfg, saved


def load_pretraining(uri: str, expect: ModelConfig | None = None) -> ElectraPretrainer:
    """The `ElectraPretrainer` saved in an exported `pretraining/` folder (local or s3://), with its
    exact weights (see `pretraining_config` for `expect`)."""
    model_cfg, saved = pretraining_config(uri, expect)
    model = ElectraPretrainer(expect or model_cfg, **saved["objective"])
    load_pretraining_weights(model, uri)
    return model


def load_pretraining_weights(model: ElectraPretrainer, uri: str) -> None:
    """Put the exact weights of an exported `pretraining/` folder (local or s3://) into `model`,
    which must have the same shape (CheckpointError naming the keys otherwise)."""
    weights_uri = storage.join(uri, "model.safetensors")
    with tempfile.TemporaryDirectory(prefix="koelectra-init-") as scratch:
        path = storage.local_path(weights_uri)
        if path is None:
            path = os.path.join(scratch, "model.safetensors")
            storage.write_bytes(path, storage.read_bytes(weights_uri))
        if not os.path.exists(path):
            raise CheckpointError(f"{weights_uri}: not found; export the checkpoint again")
        state = load_file(path)
    load_weights(model, state, weights_uri)
