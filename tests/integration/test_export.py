"""Export: real DeepSpeed checkpoints (2 gloo ranks, ZeRO 1/2/3, local and S3) become Hugging Face
folders whose models give the training module's logits, with working tokenizers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, free_port, spawn_ranks, tiny_config, write_vocab

from koelectra_dist import storage
from koelectra_dist.config import Config, ModelConfig, load_config
from koelectra_dist.corpus.shards import vocab_sha256
from koelectra_dist.errors import CheckpointError, ConfigError, DataError
from koelectra_dist.export.hf_layout import EXPORT_INFO, MODEL_FILES, TOKENIZER_FILES, TOWERS
from koelectra_dist.export.stage import run
from koelectra_dist.pretrain.checkpoint import restore, store, upload
from koelectra_dist.pretrain.init_from import load_pretraining
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.tokens import CLS_ID, MASK, SEP_ID

STEPS = 2
SENTENCES = [
    "대한민국은 민주공화국이다.",
    "모든 국민은 법 앞에 평등하다. ELECTRA를 공유합니다!",
    "국회의원은 법률이 정하는 직을 겸할 수 없다.",
]


def export_config(output_uri: str, zero_stage: int, **extra: str) -> Config:
    overrides = [f"distributed.zero_stage={zero_stage}", 'run.stages=["export"]']
    return tiny_config(output_uri, *overrides, *(f"{k}={v}" for k, v in extra.items()))


def probe_batch(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, vocab_size, (3, 12), generator=torch.Generator().manual_seed(7))
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def _train_rank(rank: int, world: int, port: int, runs: list[tuple[Config, dict, str]]) -> None:
    """One DeepSpeed rank of each run in turn (one process start for all ZeRO stages): a few real
    training steps, the real checkpoint save, and the live module's logits and weights (gathered
    under ZeRO-3) as the reference."""
    import deepspeed

    from koelectra_dist.pretrain.engine import build_engine
    from koelectra_dist.pretrain.model import ElectraPretrainer

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world)}
    os.environ.update(env, LOCAL_RANK=str(rank), LOCAL_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    for cfg, meta, ref_path in runs:
        torch.manual_seed(cfg.train.seed)
        t = cfg.train
        engine, _, _ = build_engine(cfg, ElectraPretrainer(cfg.model, t.mask_prob, t.gen_weight, t.disc_weight))
        data = torch.Generator().manual_seed(100 + rank)
        for _ in range(STEPS):
            ids = torch.randint(5, cfg.model.vocab_size, (t.micro_batch_size, 16), generator=data)
            ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
            out = engine(ids, torch.ones_like(ids), torch.zeros_like(ids))
            engine.backward(out.loss)
            engine.step()
        upload.save(engine, cfg.paths.checkpoints, STEPS, meta, keep_last=2)
        module = engine.module.eval()
        gathered = (
            deepspeed.zero.GatheredParameters(list(module.parameters()))
            if cfg.distributed.zero_stage == 3
            else contextlib.nullcontext()
        )
        with gathered, torch.no_grad():
            # parameters, not state_dict(), and before any forward: under ZeRO-3 only gathered
            # parameters hold data, and a forward's hooks release them again
            params = dict(module.named_parameters(remove_duplicate=False))
            state = {k: params.get(k, v).detach().clone() for k, v in module.state_dict().items()}
            ids, mask, types = probe_batch(cfg.model.vocab_size)
            ref = {
                "disc": module.discriminator(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                "gen": module.generator(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                "state": state,
            }
        if rank == 0:
            torch.save(ref, ref_path)
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def checkpoint_meta(cfg: Config, vocab_sha: str) -> CheckpointMeta:
    """What the pre-training stage writes as meta.json."""
    d = cfg.distributed
    return CheckpointMeta(
        step=STEPS,
        consumed_samples=STEPS * cfg.train.global_batch_size,
        world_size=d.num_workers,
        zero_stage=d.zero_stage,
        precision=d.precision,
        vocab_sha256=vocab_sha,
        metrics={},
        config=cfg.to_dict(),
    )


def local_copy(uri: str, tmp: Path) -> Path:
    if storage.is_s3(uri):
        return Path(storage.download_dir(uri, str(tmp / "download")))
    return Path(uri)


def check_export(hf: Path, ref: dict, vocab_dir: Path, model_cfg: ModelConfig) -> None:
    from tokenizers import Tokenizer
    from transformers import (
        AutoModel,
        AutoTokenizer,
        ElectraForMaskedLM,
        ElectraForPreTraining,
        ElectraForSequenceClassification,
        ElectraModel,
        ElectraTokenizer,
        ElectraTokenizerFast,
        pipeline,
    )

    for tower in TOWERS:
        names = {p.name for p in (hf / tower).iterdir()}
        assert set(MODEL_FILES + TOKENIZER_FILES) <= names, f"{tower}: {sorted(names)}"
        config = json.loads((hf / tower / "tokenizer_config.json").read_text())
        assert config["do_lower_case"] is False and config["model_max_length"] == 64
    ids, mask, types = probe_batch(model_cfg.vocab_size)
    disc = ElectraForPreTraining.from_pretrained(hf / "discriminator", local_files_only=True).eval()
    gen = ElectraForMaskedLM.from_pretrained(hf / "generator", local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(disc(ids, mask, types).logits, ref["disc"], atol=1e-5, rtol=0)
        torch.testing.assert_close(gen(ids, mask, types).logits, ref["gen"], atol=1e-5, rtol=0)
    base = ElectraModel.from_pretrained(hf / "discriminator", local_files_only=True)
    assert type(AutoModel.from_pretrained(hf / "discriminator", local_files_only=True)) is ElectraModel
    classifier = ElectraForSequenceClassification.from_pretrained(hf / "discriminator", local_files_only=True)
    torch.testing.assert_close(
        classifier.electra.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight
    )
    # the generator's shared embeddings were copied in: they are the discriminator's
    torch.testing.assert_close(
        gen.electra.embeddings.word_embeddings.weight, disc.electra.embeddings.word_embeddings.weight
    )

    training_tokenizer = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    slow_only = hf.parent / "vocab-txt-only"
    slow_only.mkdir(exist_ok=True)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(hf / "discriminator" / name, slow_only / name)
    for sentence in SENTENCES:
        expected = training_tokenizer.encode(sentence).ids
        assert expected.count(1) < len(expected) // 2, "the test vocabulary should know most of these pieces"
        for folder in (hf / "discriminator", hf / "generator", slow_only):
            for cls in (ElectraTokenizer, ElectraTokenizerFast, AutoTokenizer):
                tokenizer = cls.from_pretrained(folder, local_files_only=True)
                assert tokenizer(sentence)["input_ids"] == expected, (cls.__name__, folder.name, sentence)

    fill = pipeline("fill-mask", model=str(hf / "generator"), device="cpu")
    guesses = fill(f"대한민국은 {MASK}공화국이다.", top_k=3)
    assert len(guesses) == 3 and all(g["token_str"] for g in guesses)

    model = load_pretraining(str(hf / "pretraining"))
    wider = dataclasses.replace(model_cfg, hidden_size=2 * model_cfg.hidden_size)
    with pytest.raises(ConfigError, match="model.hidden_size: 64 in .*, 128 in the config"):
        load_pretraining(str(hf / "pretraining"), expect=wider)
    state = model.state_dict()
    assert state.keys() == ref["state"].keys()
    for key, value in ref["state"].items():
        assert torch.equal(state[key], value), key
    info = json.loads((hf / EXPORT_INFO).read_text())
    assert info["step"] == STEPS and info["meta"]["zero_stage"] == ref["zero_stage"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> tuple[Path, str]:
    vocab_dir = tmp_path_factory.mktemp("corpus") / "vocab"
    return vocab_dir, write_vocab(vocab_dir, export_config("unused", 1))


CASES = {1: "local", 2: "local", 3: "s3"}


@pytest.fixture(scope="module")
def trained(vocab, tmp_path_factory, s3_endpoint) -> dict[int, tuple[Config, Path]]:
    """Checkpoints of the same tiny run under ZeRO 1, 2 (local) and 3 (on the S3 server), 2 ranks."""
    import boto3

    vocab_dir, vocab_sha = vocab
    base = tmp_path_factory.mktemp("trained")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="export-trained")
    runs, out = [], {}
    for stage, where in CASES.items():
        output = f"s3://export-trained/zero{stage}" if where == "s3" else str(base / f"zero{stage}")
        cfg = export_config(output, stage, **{"export.vocab_uri": str(vocab_dir)})
        runs.append((cfg, checkpoint_meta(cfg, vocab_sha), str(base / f"ref{stage}.pt")))
        out[stage] = (cfg, base / f"ref{stage}.pt")
    spawn_ranks(_train_rank, 2, free_port(), runs)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", sorted(CASES), ids=[f"zero{s}-{w}" for s, w in sorted(CASES.items())])
def test_export_matches_training_module(zero_stage, trained, vocab, tmp_path):
    vocab_dir, _ = vocab
    cfg, ref_path = trained[zero_stage]
    root = cfg.paths.checkpoints
    assert store.committed_steps(root) == [STEPS]
    if zero_stage == 2:  # once through the user's command line
        overrides = [f"run.output_uri={cfg.run.output_uri}", "distributed.zero_stage=2"]
        overrides.append(f"export.vocab_uri={cfg.export.vocab_uri}")
        args = [sys.executable, "launch.py", "--config", "configs/tiny.json", "export"]
        done = subprocess.run(
            args + [a for o in overrides for a in ("--set", o)], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "stage export: done" in done.stderr
    else:
        if zero_stage == 1:  # a user's file inside a model folder: refused, then exported beside, never deleted
            users = Path(cfg.paths.export) / "discriminator" / "notes.md"
            users.parent.mkdir(parents=True, exist_ok=True)
            users.write_text("mine")
            with pytest.raises(ConfigError, match="already holds discriminator/notes.md"):
                run(cfg)
            cfg = dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, overwrite=True))
        report = run(cfg)
        assert report["step"] == STEPS and report["checkpoint"] == store.step_uri(root, STEPS)
    ref = torch.load(ref_path, weights_only=False) | {"zero_stage": zero_stage}
    hf = local_copy(cfg.paths.export, tmp_path)
    check_export(hf, ref, vocab_dir, cfg.model)
    if zero_stage == 1:
        assert users.read_text() == "mine"
        users.unlink()  # the module's other tests export this run again and expect no foreign file


@pytest.mark.slow
def test_export_refuses_uncommitted_step_and_other_vocab(trained, tmp_path):
    cfg, _ = trained[1]
    root = cfg.paths.checkpoints
    # a step folder without its commit marker (an upload cut short) is refused by name
    broken = store.step_uri(root, STEPS + 1)
    shutil.copytree(store.step_uri(root, STEPS), broken)
    os.remove(os.path.join(broken, store.COMMITTED))
    with pytest.raises(CheckpointError, match="COMMITTED"):
        run(
            export_config(
                cfg.run.output_uri, 1, **{"export.checkpoint": broken, "export.vocab_uri": cfg.export.vocab_uri}
            )
        )

    # another vocabulary than the one trained with: refused before any consolidation
    other = tmp_path / "other-vocab"
    shutil.copytree(cfg.export.vocab_uri, other)
    lines = (other / "vocab.txt").read_text(encoding="utf-8").splitlines()
    lines[10], lines[11] = lines[11], lines[10]
    (other / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="not the vocabulary the checkpoint was trained with"):
        run(export_config(cfg.run.output_uri, 1, **{"export.vocab_uri": str(other)}))


def test_export_errors_before_any_work(vocab, tmp_path):
    vocab_dir, _ = vocab
    cfg = export_config(str(tmp_path / "run"), 1, **{"export.vocab_uri": str(vocab_dir)})
    with pytest.raises(CheckpointError, match="pretrain stage first"):
        run(cfg)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        run(export_config(str(tmp_path / "run"), 1, **{"export.checkpoint": str(tmp_path / "nope")}))
    with pytest.raises(CheckpointError, match="not an exported pretraining"):
        load_pretraining(str(tmp_path))


@pytest.mark.slow
def test_pretraining_folder_continues_pretraining_exactly(trained, ray_local, tmp_path):
    """`pretrain --set train.init_from=<hf>/pretraining` starts from exactly the exported weights:
    ELECTRA's warm-up gives step 0 a learning rate of 0, so after one step the new run's committed
    checkpoint still holds them bit for bit."""
    from helpers import write_shard_set

    from koelectra_dist.pretrain import stage as train

    cfg, _ = trained[1]
    hf = str(tmp_path / "hf")
    run(load_config(ROOT / "configs" / "tiny.json", [*overrides_of(cfg), f"export.output_uri={hf}"]))
    corpus = tmp_path / "corpus"
    write_shard_set(str(corpus), cfg.model.vocab_size, cfg.model.max_length, [16])
    overrides = [
        f"run.output_uri={tmp_path / 'continued'}",
        f"train.shards_uri={corpus / 'shards'}",
        f"train.init_from={hf}/pretraining",
        "train.steps=1",
        "distributed.zero_stage=1",
    ]
    with pytest.raises(CheckpointError, match="another vocabulary"):  # the shards' vocabulary is not its own
        train.run(load_config(ROOT / "configs" / "tiny.json", overrides))
    # the same shards relabelled with the exported vocabulary
    shutil.copy(Path(cfg.export.vocab_uri) / "vocab.txt", corpus / "vocab" / "vocab.txt")
    manifest = json.loads((corpus / "shards" / "manifest.json").read_text())
    manifest["vocab_sha256"] = vocab_sha256(str(corpus / "vocab"))
    (corpus / "shards" / "manifest.json").write_text(json.dumps(manifest))

    continued = load_config(ROOT / "configs" / "tiny.json", overrides)
    report = train.run(continued)
    weights = restore.consolidated_state_dict(report["checkpoint"])
    exported = restore.consolidated_state_dict(store.step_uri(cfg.paths.checkpoints, STEPS))
    assert weights.keys() == exported.keys()
    for key, value in exported.items():
        assert torch.equal(weights[key], value), key

    # a model shape other than the exported one is refused before any worker starts
    with pytest.raises(ConfigError, match="model.hidden_size"):
        train.run(dataclasses.replace(continued, model=dataclasses.replace(continued.model, hidden_size=128)))


def overrides_of(cfg: Config) -> list[str]:
    return [f"run.output_uri={cfg.run.output_uri}", f"export.vocab_uri={cfg.export.vocab_uri}"]
