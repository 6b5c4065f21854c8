"""Export stage: a committed pre-training checkpoint becomes Hugging Face model folders.

Under HF = `cfg.paths.export` (local or s3://):
- `discriminator/`: `ElectraForPreTraining`; `ElectraModel`, `AutoModel` and
  `ElectraForSequenceClassification` load it (the fine-tuning entry);
- `generator/`: `ElectraForMaskedLM`, the shared embeddings copied in; `pipeline("fill-mask")` works;
- both with config.json, model.safetensors and the tokenizer files (TOKENIZER_FILES);
- `pretraining/`: the joint generator+discriminator weights (`model.safetensors`, keys `generator.*`
  / `discriminator.*`) and `config.json` (model shape, objective, provenance), read back by
  `load_pretraining` to continue pre-training;
- `export_info.json`, written LAST: the checkpoint's meta.json and the corpus manifest's statistics,
  so that the Hub model card can be built from the export folder alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from safetensors.torch import save_file
from transformers import ElectraTokenizerFast

from koelectra_dist import storage
from koelectra_dist.config import Config, config_from_dict, portable, portable_config
from koelectra_dist.corpus.shards import read_manifest, vocab_sha256
from koelectra_dist.corpus.vocab import check_vocab_tokens, load_vocab, vocab_txt_uri
from koelectra_dist.errors import CheckpointError, ConfigError, DataError, bullets
from koelectra_dist.export.config import BEST
from koelectra_dist.export.hf_layout import (
    EXPORT_FILES,
    EXPORT_INFO,
    PRETRAINING,
    TOKENIZER_FILES,
    TOWERS,
    ExportInfo,
)
from koelectra_dist.pretrain.checkpoint import restore, store
from koelectra_dist.pretrain.data import shard_special_ids
from koelectra_dist.pretrain.init_from import PRETRAINING_FORMAT, load_weights
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.model import ElectraPretrainer
from koelectra_dist.probe import records
from koelectra_dist.probe.schedule import DONE, best
from koelectra_dist.tokens import CLS, MASK, PAD, SEP, UNK

log = logging.getLogger(__name__)

SPECIAL_TOKENS_MAP = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
# Keys transformers writes into tokenizer_config.json about how it was loaded, not about the tokenizer.
_LOAD_TIME_KEYS = ("is_local", "local_files_only")


# ---------------------------------------------------------------- reading the checkpoint


def best_probed(cfg: Config) -> dict[str, Any]:
    """`export.checkpoint: best`: the step with the best finished probe on the task
    (`records.best_task`), with the whole curve and why, for the model card."""
    task = records.best_task(cfg)
    folder = records.probe_dir(cfg.paths.checkpoints)
    recs = records.read(folder)
    top = best(recs, task)
    if top is None:
        raise CheckpointError(
            f"export.checkpoint=best: no finished probe of task {task!r} in {storage.join(folder, records.RECORDS)}; "
            "run the pretrain stage with probe.tasks set (it probes committed checkpoints), or name a step folder"
        )
    points = [
        {"step": r["step"], "mean": r["tasks"][task]["mean"], "std": r["tasks"][task]["std"]}
        for r in recs
        if r.get("status") == DONE and task in r.get("tasks", {})
    ]
    metric = top["tasks"][task]["metric"]
    score = top["tasks"][task]["mean"]
    return {
        "task": task,
        "metric": metric,
        "step": top["step"],
        "score": score,
        "why": f"the highest mean dev {metric} of task {task} over the {len(points)} probed checkpoints "
        f"({score:.2f} at step {top['step']}; the later step on a tie)",
        "curve": sorted(points, key=lambda p: p["step"]),
    }


def resolve_checkpoint(cfg: Config) -> str:
    """The step folder to export: `export.checkpoint` (a step folder, or "best": the best probed
    one), or the latest committed step that verifies."""
    if cfg.export.checkpoint:
        named = cfg.export.checkpoint
        if named == BEST:
            named = store.step_uri(cfg.paths.checkpoints, best_probed(cfg)["step"])
        if not storage.exists(named):
            raise CheckpointError(f"export.checkpoint {named}: no such checkpoint folder (pruned, or never written)")
        store.read_meta(named)  # refuses a step that is not committed
        problems = store.verify(named)
        if problems:
            raise CheckpointError(
                f"export.checkpoint {named} is damaged:" + bullets(problems) + "\nexport another step"
            )
        return named
    root = cfg.paths.checkpoints
    latest = store.latest_verified(root)
    if latest is None:
        raise CheckpointError(
            f"no committed checkpoint under {root}; run the pretrain stage first, or name one with "
            "--set export.checkpoint=URI_OF_A_step-N_FOLDER"
        )
    return latest


def training_config(meta: CheckpointMeta, uri: str) -> Config:
    """The resolved config the checkpoint was trained with (saved in its meta.json)."""
    data = {k: v for k, v in meta.config.items() if k != "derived"}
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{uri}: the config saved in meta.json is not valid here: {e}") from None


# ---------------------------------------------------------------- writing the folders


def write_tokenizer(vocab_dir: str, out_dir: str, max_length: int) -> None:
    """The tokenizer files a KoELECTRA user expects: vocab.txt (the slow path, old transformers),
    tokenizer.json (fast), tokenizer_config.json (cased: do_lower_case false) and
    special_tokens_map.json. transformers 5 writes neither vocab.txt nor the special tokens map.
    A teacher's tokenizer (corpus.tokenizer_uri: vocab/ names another class) is copied as it is."""
    config_file = os.path.join(vocab_dir, "tokenizer_config.json")
    named = "ElectraTokenizer"  # a bare vocab.txt is ours
    if os.path.exists(config_file):
        with open(config_file, encoding="utf-8") as f:
            named = json.load(f).get("tokenizer_class", named)
    if named != "ElectraTokenizer":
        for name in TOKENIZER_FILES:
            if os.path.exists(os.path.join(vocab_dir, name)):
                shutil.copyfile(os.path.join(vocab_dir, name), os.path.join(out_dir, name))
        return
    tokenizer = ElectraTokenizerFast.from_pretrained(
        vocab_dir, do_lower_case=False, strip_accents=False, model_max_length=max_length, local_files_only=True
    )
    tokenizer.save_pretrained(out_dir)
    shutil.copyfile(os.path.join(vocab_dir, "vocab.txt"), os.path.join(out_dir, "vocab.txt"))
    config_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    for key in _LOAD_TIME_KEYS:
        config.pop(key, None)
    config.update(
        tokenizer_class="ElectraTokenizer", do_lower_case=False, strip_accents=False, model_max_length=max_length
    )
    for name, obj in [("tokenizer_config.json", config), ("special_tokens_map.json", SPECIAL_TOKENS_MAP)]:
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)


def write_folders(model: ElectraPretrainer, train_cfg: Config, vocab_dir: str, out_dir: str, provenance: dict) -> None:
    """discriminator/, generator/ and pretraining/ under the local folder `out_dir`."""
    max_length = train_cfg.model.max_length
    for tower in TOWERS:
        path = os.path.join(out_dir, tower)
        getattr(model, tower).save_pretrained(path)
        write_tokenizer(vocab_dir, path, max_length)
    path = os.path.join(out_dir, PRETRAINING)
    os.makedirs(path)
    # Every state-dict key, shared embeddings under both names (safetensors refuses aliases, hence the
    # clones): a plain `load_state_dict(load_file(...), strict=True)` restores the model exactly.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    t = train_cfg.train
    pretraining_config = {
        "format": PRETRAINING_FORMAT,
        "model": dataclasses.asdict(train_cfg.model),
        "objective": {"mask_prob": t.mask_prob, "gen_weight": t.gen_weight, "disc_weight": t.disc_weight},
        **provenance,
    }
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(pretraining_config, f, indent=2, ensure_ascii=False)
    write_tokenizer(vocab_dir, path, max_length)


def corpus_statistics(train_cfg: Config) -> dict[str, Any] | None:
    """The shard manifest without its per-shard list (kept small for the model card), or None."""
    try:
        manifest = read_manifest(train_cfg.paths.shards)
    except DataError as e:
        log.warning("export: the model card will not state corpus statistics: %s", e)
        return None
    return {**{k: v for k, v in manifest.to_json().items() if k != "shards"}, "num_shards": len(manifest.shards)}


def fetch_vocab(vocab_uri: str, local_dir: str, expected_sha256: str | None, vocab_size: int) -> str:
    """A local copy of the vocabulary folder, checked against the checkpoint and the model."""
    if not storage.exists(vocab_txt_uri(vocab_uri)):
        raise DataError(
            f"{vocab_uri}: no vocab.txt; the export ships the vocabulary the model was trained with "
            "(the corpus stage's vocab/ folder); set export.vocab_uri to where it is"
        )
    if expected_sha256 and vocab_sha256(vocab_uri) != expected_sha256:
        raise DataError(
            f"{vocab_txt_uri(vocab_uri)} is not the vocabulary the checkpoint was trained with (sha256 differs "
            "from meta.json's vocab_sha256); point export.vocab_uri at the right vocab/ folder"
        )
    config = storage.join(vocab_uri, "tokenizer_config.json")
    named = storage.read_json(config).get("tokenizer_class") if storage.exists(config) else None
    ours = named in (None, "ElectraTokenizer")  # else a teacher's tokenizer (corpus.tokenizer_uri)
    check_vocab_tokens(load_vocab(vocab_uri), vocab_size, vocab_txt_uri(vocab_uri), ours)
    for f in storage.list_files(vocab_uri):
        if os.path.basename(f) in TOKENIZER_FILES:
            storage.write_bytes(os.path.join(local_dir, os.path.basename(f)), storage.read_bytes(f))
    return local_dir


def pair_parameters(model: ElectraPretrainer) -> dict[str, int]:
    return {
        "discriminator": model.discriminator.num_parameters(),
        "generator": model.generator.num_parameters(),
        "pretraining": sum(p.numel() for p in model.parameters()),
    }


def export_info(
    parameters: dict[str, int],
    train_cfg: Config,
    meta: CheckpointMeta,
    checkpoint_uri: str,
    selection: dict[str, Any] | None = None,
    kind: str = "pair",
) -> ExportInfo:
    """export_info.json: everything the model card states, so that it needs the export folder only
    (a pair's, or with kind "student" a distilled student's). Nothing exported names this machine's
    folders: the checkpoint and the config's locations are made relative to the run's output root."""
    return ExportInfo(
        selection=selection,
        checkpoint=portable(checkpoint_uri, train_cfg.run.output_uri),
        step=meta.step,
        vocab_sha256=meta.vocab_sha256,
        exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        parameters=parameters,
        meta=dataclasses.replace(meta, config=portable_config(meta.config)),
        corpus=corpus_statistics(train_cfg),
        kind=kind,
    )


def consolidate(
    ckpt: str, meta: CheckpointMeta, train_cfg: Config, vocab_uri: str, scratch: str
) -> tuple[ElectraPretrainer, str]:
    """The committed checkpoint `ckpt` as one full-precision model in eval mode, and a checked local
    copy of its vocabulary under `scratch` (also used by the probes)."""
    # the vocabulary first: a wrong one fails before the (long) consolidation
    vocab_dir = fetch_vocab(vocab_uri, os.path.join(scratch, "vocab"), meta.vocab_sha256, train_cfg.model.vocab_size)
    t = train_cfg.train
    special = shard_special_ids(train_cfg)
    model = ElectraPretrainer(train_cfg.model, t.mask_prob, t.gen_weight, t.disc_weight, special=special)
    load_weights(model, restore.consolidated_state_dict(ckpt), ckpt)
    model.eval()
    return model, vocab_dir


# ---------------------------------------------------------------- the stage


def relative_files(folder: str) -> list[str]:
    """The files at any depth below `folder`, as '/'-separated paths relative to it."""
    _, base = storage.filesystem(folder)
    base = base.rstrip("/") + "/"
    found = [f[len("s3://") :] if storage.is_s3(f) else f for f in storage.list_files(folder, recursive=True)]
    return sorted(f[len(base) :].replace(os.sep, "/") for f in found if f.startswith(base))


def remove_file(uri: str) -> None:
    """Delete `uri` if it is a file; a folder of that name (the user's) is left alone."""
    fs, path = storage.filesystem(uri)
    if fs.isfile(path):
        storage.remove(uri)


def check_target(out: str, overwrite: bool) -> list[str]:
    """The files below `out`, at any depth, that no export writes (EXPORT_FILES). They are never
    deleted; a folder holding any is refused unless export.overwrite says to export beside them."""
    if not storage.exists(out):
        return []
    foreign = [f for f in relative_files(out) if f not in EXPORT_FILES]
    if foreign and not overwrite:
        raise ConfigError(
            f"export.output_uri {out} already holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            "which no export wrote; point export.output_uri at another folder, move those files away, or set "
            "export.overwrite=true to export beside them (the export never deletes a file it did not write)"
        )
    return foreign


def run(cfg: Config) -> dict[str, Any]:
    start = time.time()
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    out = cfg.paths.export
    foreign = check_target(out, cfg.export.overwrite)
    if foreign:
        log.warning("export: %s holds %d files no export wrote; left in place: %s", out, len(foreign), foreign[:5])
    ckpt = resolve_checkpoint(cfg)
    meta = store.read_meta(ckpt)
    train_cfg = training_config(meta, ckpt)
    vocab_uri = cfg.export.vocab_uri or train_cfg.paths.vocab
    # nothing exported names this machine's folders: locations relative to the run's output root
    ckpt_name = portable(ckpt, train_cfg.run.output_uri)
    provenance = {"checkpoint": ckpt_name, "step": meta.step, "vocab_sha256": meta.vocab_sha256}
    with tempfile.TemporaryDirectory(prefix="koelectra-export-") as scratch:
        model, vocab_dir = consolidate(ckpt, meta, train_cfg, vocab_uri, scratch)
        staged = os.path.join(scratch, "hf")
        write_folders(model, train_cfg, vocab_dir, staged, provenance)
        written = set(relative_files(staged))
        if not written <= EXPORT_FILES:  # the layout is what deletion trusts: keep it exact
            raise RuntimeError(f"export wrote files outside EXPORT_FILES: {sorted(written - EXPORT_FILES)}")
        # An old export_info.json would vouch for a half-replaced folder: remove it first, write it last.
        # Only the files an export writes are removed, one by one, never a folder.
        for name in [EXPORT_INFO, *sorted(EXPORT_FILES - {EXPORT_INFO})]:
            remove_file(storage.join(out, *name.split("/")))
        storage.upload_dir(staged, out)
    selection = best_probed(cfg) if cfg.export.checkpoint == BEST else None
    info = export_info(pair_parameters(model), train_cfg, meta, ckpt, selection)
    storage.write_json(storage.join(out, EXPORT_INFO), info.to_json())
    return {
        "checkpoint": ckpt,
        "step": meta.step,
        "zero_stage": meta.zero_stage,
        "output_uri": out,
        "folders": [*TOWERS, PRETRAINING],
        "parameters": info.parameters,
        "seconds": round(time.time() - start, 1),
    }
