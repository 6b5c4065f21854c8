"""Starting pre-training from published or exported weights: what `train.init_from` names.

Three forms (`resolve` tells them apart, without loading weights):
- this project's `pretraining/` folder (the export stage writes it): the joint generator+discriminator
  state dict (`model.safetensors`, keys `generator.*` / `discriminator.*`) and a `config.json` with
  the model shape and objective; the run's model config must equal it;
- an ELECTRA pair: a folder holding `discriminator/` and `generator/` transformers folders (KoELECTRA's
  published layout, and our own export root), or `hf://ORG/NAME` meaning the Hub repositories
  `ORG/NAME-discriminator` and `ORG/NAME-generator` when they exist, else the single repository
  `ORG/NAME`; a discriminator alone also counts (the generator then starts fresh). The model config is taken from the pair, and the pair's two copies of
  the embeddings become one (the discriminator's; `pair_state` reports how far the generator's was).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from koelectra_dist import storage
from koelectra_dist.config import ModelConfig
from koelectra_dist.errors import CheckpointError, ConfigError, StorageError, bullets
from koelectra_dist.pretrain.model import ElectraPretrainer

log = logging.getLogger(__name__)

PRETRAINING_FORMAT = "koelectra_dist.pretraining/1"
DISCRIMINATOR, GENERATOR = "discriminator", "generator"
# ElectraConfig fields that our towers fix (model.hf_configs); a pair with other values computes other logits.
FIXED_HF_FIELDS = {"hidden_act": "gelu", "type_vocab_size": 2, "position_embedding_type": "absolute"}


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
        raise ConfigError("the model config differs from the one of train.init_from:" + bullets(differ))
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


# ---------------------------------------------------------------- the forms of train.init_from


@dataclass(frozen=True)
class InitSource:
    """What `train.init_from` names, resolved to folders (URIs; nothing loaded yet)."""

    uri: str
    kind: Literal["pretraining", "pair"]
    discriminator: str | None = None
    """The discriminator's transformers folder (a pair only)."""
    generator: str | None = None
    """The generator's transformers folder; None: a discriminator alone (fresh generator)."""


def hub_source(uri: str) -> InitSource:
    """`hf://ORG/NAME`: the pair `ORG/NAME-discriminator` + `ORG/NAME-generator` (KoELECTRA's
    repository names; `hf://ORG/NAME-discriminator` names the same pair) when it exists, a
    discriminator alone when the generator does not, else the single repository `ORG/NAME`
    (beomi/KcELECTRA-base). Resolved from the local Hugging Face cache or the Hub at run time."""
    _, rest = storage.hf_repo(uri)
    if rest:
        raise ConfigError(f"train.init_from={uri}: name a model as hf://ORG/NAME, without a path inside it")
    try:
        model, generator = storage.hub_model(uri)
    except StorageError as e:
        raise CheckpointError(f"train.init_from={e}") from None
    return InitSource(uri, "pair", model, generator)


def _architectures(uri: str) -> list[str]:
    return list(storage.read_json(storage.join(uri, "config.json")).get("architectures") or [])


def resolve(uri: str) -> InitSource:
    """The form of `train.init_from` (see the module docstring); CheckpointError naming the forms."""
    if uri.startswith("hf://"):
        return hub_source(uri)
    if storage.exists(storage.join(uri, "config.json")):
        if storage.read_json(storage.join(uri, "config.json")).get("format") == PRETRAINING_FORMAT:
            return InitSource(uri, "pretraining")
        if "ElectraForPreTraining" in _architectures(uri):
            return InitSource(uri, "pair", uri, None)
    disc, gen = storage.join(uri, DISCRIMINATOR), storage.join(uri, GENERATOR)
    if storage.exists(storage.join(disc, "config.json")):
        return InitSource(uri, "pair", disc, gen if storage.exists(storage.join(gen, "config.json")) else None)
    raise CheckpointError(
        f"train.init_from={uri}: neither an exported pretraining/ folder, nor a folder holding discriminator/ "
        "(and generator/) transformers folders, nor an ElectraForPreTraining folder; for a Hub pair use "
        "hf://ORG/NAME (a pair ORG/NAME-discriminator + ORG/NAME-generator, or one repository)"
    )


def _hf_config(uri: str) -> dict[str, Any]:
    try:
        return storage.read_json(storage.join(uri, "config.json"))
    except Exception as e:  # noqa: BLE001 - StorageError or a missing file, said with the folder
        raise CheckpointError(f"{uri}: no readable transformers config.json ({e})") from None


def pair_model_config(source: InitSource, configured: ModelConfig) -> ModelConfig:
    """The model config of an ELECTRA pair (sizes, generator shape, vocabulary, max length); dropout
    and, for a discriminator alone, the generator size stay as configured. CheckpointError when the
    pair has a shape our towers cannot hold (the generator's heads/width rules, activation...)."""
    d = _hf_config(source.discriminator)
    hidden = d["hidden_size"]
    g = _hf_config(source.generator) if source.generator else None
    model = dataclasses.replace(
        configured,
        vocab_size=d["vocab_size"],
        embedding_size=d.get("embedding_size", hidden),
        hidden_size=hidden,
        num_hidden_layers=d["num_hidden_layers"],
        num_attention_heads=d["num_attention_heads"],
        intermediate_size=d["intermediate_size"],
        generator_size=g["hidden_size"] / hidden if g else configured.generator_size,
        max_length=d["max_position_embeddings"],
    )
    problems = [
        f"{source.discriminator}: {k}={d.get(k, v)!r}, the towers use {v!r}"
        for k, v in FIXED_HF_FIELDS.items()
        if d.get(k, v) != v
    ]
    if g:
        want = {
            "hidden_size": model.generator_hidden_size(),
            "num_attention_heads": model.generator_num_attention_heads(),
            "intermediate_size": model.generator_intermediate_size(),
            "num_hidden_layers": model.num_hidden_layers,
            "embedding_size": model.embedding_size,
            "vocab_size": model.vocab_size,
            "max_position_embeddings": model.max_length,
            **FIXED_HF_FIELDS,
        }
        problems += [
            f"{source.generator}: {k}={g.get(k)!r}, the generator this project builds has {v!r}"
            for k, v in want.items()
            if g.get(k, FIXED_HF_FIELDS.get(k)) != v
        ]
    if problems:
        raise CheckpointError(
            f"train.init_from={source.uri}: the pair's shape does not fit ELECTRA as built here:" + bullets(problems)
        )
    return model


def load_tower(cls: Any, uri: str) -> Any:
    """`cls.from_pretrained` on a transformers folder (local, s3:// or hf://), refusing one with
    missing or mismatched weights (from_pretrained would fill them in at random)."""
    with tempfile.TemporaryDirectory(prefix="koelectra-tower-") as scratch:
        local = storage.local_path(uri) or storage.download_dir(uri, scratch)
        try:
            tower, info = cls.from_pretrained(local, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{uri}: not loadable as {cls.__name__}: {e}") from None
    # transformers lists a tied output layer as missing in some versions; it is re-tied anyway
    missing = [k for k in info["missing_keys"] if not k.endswith(("generator_lm_head.weight", "decoder.weight"))]
    if missing or info.get("mismatched_keys"):
        raise CheckpointError(
            f"{uri}: not a complete {cls.__name__} (missing {missing[:5]}, mismatched "
            f"{list(info.get('mismatched_keys') or [])[:5]}); name a folder saved from that class"
        )
    return tower


def pair_state(model: ElectraPretrainer, source: InitSource) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A full state dict for `model` from the pair, and a report of the embeddings reconciliation:
    our towers share one embeddings module, the pair stores one per tower; the discriminator's is
    kept and the report says how far the generator's was (0 for pairs trained with shared embeddings)."""
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    disc = load_tower(ElectraForPreTraining, source.discriminator).state_dict()
    gen = load_tower(ElectraForMaskedLM, source.generator).state_dict() if source.generator else None
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # the fresh generator, if needed
    state.update({f"{DISCRIMINATOR}.{k}": v for k, v in disc.items()})
    state.update({f"{GENERATOR}.{k}": v for k, v in (gen or {}).items()})
    embeddings = {k: v for k, v in disc.items() if k.startswith("electra.embeddings.")}
    report: dict[str, Any] = {"generator": "from the pair" if gen else "fresh (a discriminator alone)"}
    if gen:
        diff = {k: (gen[k].float() - v.float()) for k, v in embeddings.items() if k in gen}
        report["embeddings_max_abs_diff"] = max(float(d.abs().max()) for d in diff.values())
        report["embeddings_relative_diff"] = float(
            torch.stack([d.norm() for d in diff.values()]).norm()
            / torch.stack([embeddings[k].float().norm() for k in diff]).norm()
        )
    state.update({f"{GENERATOR}.{k}": v for k, v in embeddings.items()})
    state[f"{GENERATOR}.generator_lm_head.weight"] = embeddings["electra.embeddings.word_embeddings.weight"]
    return state, report


def fresh_generator(discriminator_uri: str, configured: ModelConfig) -> Any:
    """The generator a discriminator alone gets, as `train.init_from` gives it one: an
    ElectraForMaskedLM of `configured.generator_size` (the discriminator's depth), its embeddings
    and tied output layer the discriminator's, the rest freshly initialised from torch's RNG (the
    caller seeds it, so every worker and every resume builds the same one)."""
    source = InitSource(discriminator_uri, "pair", discriminator_uri, None)
    model = ElectraPretrainer(pair_model_config(source, configured))
    state, _ = pair_state(model, source)
    load_weights(model, state, discriminator_uri)
    return model.generator


def init_weights(model: ElectraPretrainer, uri: str) -> dict[str, Any]:
    """Put the weights `train.init_from` names into `model`; return what was reconciled."""
    source = resolve(uri)
    if source.kind == "pretraining":
        load_pretraining_weights(model, uri)
        return {"form": "pretraining"}
    state, report = pair_state(model, source)
    load_weights(model, state, uri)
    return {"form": "pair", **report}


def model_for(cfg: Any) -> ModelConfig:
    """The model config a run with `train.init_from` trains: the pair's for a pair, else the
    configured one (an exported pretraining/ folder must match it; `check` says so)."""
    uri = cfg.train.init_from
    source = resolve(uri) if uri else None
    if source is None or source.kind == "pretraining":
        return cfg.model
    model = pair_model_config(source, cfg.model)
    differ = [f for f in ModelConfig.__dataclass_fields__ if getattr(model, f) != getattr(cfg.model, f)]
    if differ:
        log.info("train.init_from=%s: model.%s taken from the pair", uri, ", model.".join(differ))
    return model


def check_vocabulary(key: str, uri: str, theirs: str | None, shards_sha256: str, vocab_uri: str) -> None:
    """CheckpointError unless weights named by `key`=`uri` were trained with the shards' vocabulary
    (sha256 `theirs`); the fix names the folder to build the shards with (`vocab_uri`)."""
    if theirs != shards_sha256:
        raise CheckpointError(
            f"{key}={uri} was trained with another vocabulary than the shards' (sha256 {str(theirs)[:12]}... vs "
            f"{shards_sha256[:12]}...); build the shards with its vocabulary: --set corpus.vocab.vocab_uri={vocab_uri} "
            "and run the corpus stage again"
        )


def check(cfg: Any, vocab_sha256: str) -> dict[str, Any]:
    """Refuse, before any worker starts, what `train.init_from` names when it does not fit the run
    (`cfg.model` already taken from a pair by `model_for`): another shape or vocabulary than the
    shards', weights that do not load. Returns the embeddings report of a pair."""
    from koelectra_dist.corpus.shards import vocab_sha256 as folder_sha256

    uri = cfg.train.init_from
    source = resolve(uri)
    if source.kind == "pretraining":
        _, saved = pretraining_config(uri, expect=cfg.model)
        check_vocabulary("train.init_from", uri, saved.get("vocab_sha256"), vocab_sha256, uri)
        return {"form": "pretraining"}
    check_vocabulary("train.init_from", uri, folder_sha256(source.discriminator), vocab_sha256, source.discriminator)
    model = ElectraPretrainer(cfg.model)
    report = init_weights(model, uri)
    if report.get("embeddings_max_abs_diff", 0) > 1e-6:
        log.warning(
            "train.init_from=%s: the generator's embeddings differ from the discriminator's (max |diff| %.3g, "
            "relative %.3g); both towers continue from the discriminator's",
            uri,
            report["embeddings_max_abs_diff"],
            report["embeddings_relative_diff"],
        )
    if source.generator is None:
        log.warning("train.init_from=%s: a discriminator alone; the generator starts fresh (model.generator_size)", uri)
    return report
