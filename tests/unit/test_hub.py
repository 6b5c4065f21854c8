"""Hub publishing, offline: the plan, the commit operations and the model card for a real export
folder, through the one network seam; the token never shows; errors come before any upload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
from helpers import ROOT, tiny_config, write_vocab
from huggingface_hub import CommitOperationAdd, ModelCard

from koelectra_dist import storage
from koelectra_dist.corpus.shards import ShardFile, ShardManifest, write_manifest
from koelectra_dist.errors import DataError
from koelectra_dist.export import hub
from koelectra_dist.export.hf_layout import EXPORT_INFO, MODEL_FILES, TOKENIZER_FILES
from koelectra_dist.export.model_card import validate_card
from koelectra_dist.export.stage import export_info, pair_parameters, write_folders
from koelectra_dist.finetune.report import markdown, summarize
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.model import ElectraPretrainer

SECRET = "hf_TestTokenThatMustNeverAppear0123456789"
PREFIX = "koelectra-org/ko-tiny"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """An export folder written by the export stage's writers from a real (tiny) ElectraPretrainer,
    the corpus stage's vocabulary and a shard manifest, plus the finetune stage's results.md beside it."""
    run_dir = tmp_path_factory.mktemp("hub") / "run"
    cfg = tiny_config(str(run_dir), "distributed.zero_stage=2", 'run.stages=["export"]')
    corpus = cfg.paths.corpus
    vocab_sha = write_vocab(Path(corpus) / "vocab", cfg)
    manifest = ShardManifest(
        vocab_sha256=vocab_sha,
        vocab_size=1000,
        max_length=64,
        id_dtype="uint16",
        shards=[ShardFile(path="part-00000.parquet", rows=321, tokens=17_654, bytes=40_000)],
        total_rows=321,
        total_tokens=17_654,
        cleaning={"lines_in": 400, "lines_out": 356},
        config={},
    )
    write_manifest(storage.join(corpus, "shards"), manifest)
    meta = CheckpointMeta(
        step=8,
        consumed_samples=64,
        world_size=2,
        zero_stage=2,
        precision="fp32",
        vocab_sha256=vocab_sha,
        metrics={"tokens_per_s": 4321.5, "step_time_s": 0.25},
        config=cfg.to_dict(),
    )
    hf = run_dir / "hf"
    model = ElectraPretrainer(cfg.model).eval()
    provenance = {"checkpoint": "s3://bucket/ckpt/step-00000008", "step": 8, "vocab_sha256": vocab_sha}
    write_folders(model, cfg, str(Path(corpus) / "vocab"), str(hf), provenance)
    storage.write_json(
        str(hf / EXPORT_INFO), export_info(pair_parameters(model), cfg, meta, provenance["checkpoint"]).to_json()
    )
    run = {"task": "nsmc", "metric": "accuracy", "score": 81.25, "seed": 42, "train_examples": 1000}
    run |= {"eval_examples": 200, "epochs": 1, "batch_size": 32, "learning_rate": 5e-5}
    run |= {"eval_split": "test", "eval_file": "/data/nsmc/ratings_test.txt", "selection": {"on": "/d/ratings_dev.txt"}}
    tasks = summarize([run])
    results = markdown(tasks, str(hf / "discriminator"))
    storage.write_bytes(str(run_dir / "finetune" / "results.md"), results.encode("utf-8"))
    storage.write_json(str(run_dir / "finetune" / "results.json"), {"model": str(hf / "discriminator"), "tasks": tasks})
    return hf


class RecordingClient:
    """Stands in for `hub.HubClient` (the seam): records every call instead of sending it."""

    instances: list[RecordingClient] = []

    def __init__(self, token: str):
        self.token = token
        self.calls: list[tuple] = []
        RecordingClient.instances.append(self)

    def create_repo(self, repo_id: str, private: bool) -> None:
        self.calls.append(("create_repo", repo_id, private))

    def create_branch(self, repo_id: str, branch: str) -> None:
        self.calls.append(("create_branch", repo_id, branch))

    def commit(self, repo_id: str, operations: list[CommitOperationAdd], message: str, revision: str | None) -> str:
        self.calls.append(("commit", repo_id, operations, message, revision))
        return f"https://huggingface.co/{repo_id}/commit/0"


def op_bytes(op: CommitOperationAdd) -> bytes:
    src = op.path_or_fileobj
    return Path(src).read_bytes() if isinstance(src, str | Path) else bytes(src)


def test_plan_files_and_cards(export_dir):
    plans = hub.plan(
        str(export_dir), PREFIX, private=True, revision="v1", results_dir=str(export_dir.parent / "finetune")
    )
    assert [p.repo_id for p in plans] == [f"{PREFIX}-discriminator", f"{PREFIX}-generator"]
    for p in plans:
        on_disk = sorted(f.name for f in (export_dir / p.tower).iterdir())
        assert [dst for dst, _ in p.files] == on_disk
        assert set(MODEL_FILES + TOKENIZER_FILES) <= set(on_disk)
        paths = [op.path_in_repo for op in p.operations()]
        assert paths == on_disk + ["README.md"]
        card = ModelCard(op_bytes(p.operations()[-1]).decode("utf-8"))
        data = card.data
        assert (data.language, data.license, data.library_name) == ("ko", "apache-2.0", "transformers")
        assert data.pipeline_tag == {"discriminator": "feature-extraction", "generator": "fill-mask"}[p.tower]
        assert {"electra", "korean", p.tower} <= set(data.tags)
        text = card.text
        assert "| hidden size | 64 | 32 |" in text and "| layers | 2 | 2 |" in text  # tiny: 64, generator 0.5
        assert "| size | 1,000 |" in text and "| tokens | 17,654 |" in text and "| examples | 321 |" in text
        assert (
            "| steps | 8 |" in text and "| global batch size | 8 |" in text and "| peak learning rate | 0.001 |" in text
        )
        assert "| tokens / s (non-padding) | 4,322 |" in text and "| sequences / s | 32.0 |" in text
        assert "| nsmc | accuracy | 81.25 | test (`ratings_test.txt`), epoch chosen on `ratings_dev.txt` |" in text
        assert f"Fine-tuned from `{PREFIX}-discriminator`" in text and str(export_dir) not in text
        assert data.widget[0]["text"] in ("한국어 ELECTRA를 공유합니다.", "대한민국의 수도는 [MASK]이다.")
        assert "## Final pre-training metrics" in text and "## Limitations" in text
        if p.tower == "discriminator":  # the scores go to model-index, on the split they were measured on
            (result,) = data.eval_results
            assert (result.dataset_type, result.dataset_split, result.metric_value) == ("e9t/nsmc", "test", 81.25)
            assert data.datasets == ["e9t/nsmc"]
        assert f'"{p.repo_id}"' in text  # the usage snippet names the repo
    with_pt = hub.plan(str(export_dir), PREFIX, with_pretraining=True)
    assert "pretraining/model.safetensors" in [dst for dst, _ in with_pt[0].files]
    assert not any(dst.startswith("pretraining/") for dst, _ in with_pt[1].files)


def test_card_without_finetune_results_or_manifest(export_dir, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(export_dir, copy)
    info = json.loads((copy / EXPORT_INFO).read_text())
    info["corpus"] = None
    info["meta"]["metrics"] = {}  # a checkpoint saved before the first logged step
    (copy / EXPORT_INFO).write_text(json.dumps(info))
    (plan,) = [p for p in hub.plan(str(copy), PREFIX, license="mit") if p.tower == "generator"]
    assert "Not evaluated yet" in plan.card and "were not recorded" in plan.card
    assert ModelCard(plan.card).data.license == "mit"
    # the offline metadata check is the one that would catch a broken card
    with pytest.raises(DataError, match="language: 'en'"):
        validate_card(plan.card.replace("language: ko", "language: en"), "generator")
    with pytest.raises(DataError, match="pipeline_tag"):
        validate_card(plan.card, "discriminator")


def test_card_states_the_checkpoint_chosen_by_probes_and_the_curve(export_dir, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(export_dir, copy)
    info = json.loads((copy / EXPORT_INFO).read_text())
    info["selection"] = {
        "task": "nsmc",
        "metric": "accuracy",
        "step": 4,
        "score": 71.5,
        "why": "the highest mean dev accuracy of task nsmc over the 2 probed checkpoints",
        "curve": [{"step": 4, "mean": 71.5, "std": 0.25}, {"step": 8, "mean": 70.0, "std": 1.0}],
    }
    (copy / EXPORT_INFO).write_text(json.dumps(info))
    (plan,) = [p for p in hub.plan(str(copy), PREFIX) if p.tower == "discriminator"]
    assert "## Checkpoint selection" in plan.card and "Step 4 was chosen: the highest mean dev accuracy" in plan.card
    assert "| 4 (chosen) | 71.50 | 0.25 |" in plan.card and "| 8 | 70.00 | 1.00 |" in plan.card
    assert "## Checkpoint selection" not in hub.plan(str(export_dir), PREFIX)[0].card  # chosen otherwise: no section


def test_publish_goes_through_the_seam_with_the_token_hidden(export_dir, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    RecordingClient.instances.clear()
    argv = [str(export_dir), "--repo-prefix", PREFIX, "--private", "--revision", "v1"]
    assert hub.main(argv, client_factory=RecordingClient) == 0
    (client,) = RecordingClient.instances
    assert client.token == SECRET
    names = [c[:2] for c in client.calls]
    disc, gen = f"{PREFIX}-discriminator", f"{PREFIX}-generator"
    assert names == [("create_repo", disc), ("create_branch", disc), ("commit", disc)] + [
        ("create_repo", gen),
        ("create_branch", gen),
        ("commit", gen),
    ]
    assert client.calls[0] == ("create_repo", disc, True) and client.calls[1] == ("create_branch", disc, "v1")
    commits = [c for c in client.calls if c[0] == "commit"]
    for _, _, ops, message, revision in commits:
        assert revision == "v1" and "koelectra_dist" in message
        assert [op.path_in_repo for op in ops][-1] == "README.md"
        assert "| nsmc | accuracy | 81.25 |" in op_bytes(ops[-1]).decode("utf-8")  # default ../finetune
        assert all(SECRET.encode() not in op_bytes(op) for op in ops)
    out = capsys.readouterr()
    assert "published: https://huggingface.co/" in out.out
    assert SECRET not in out.out + out.err + caplog.text
    assert not any(SECRET.encode() in p.read_bytes() for p in export_dir.rglob("*") if p.is_file())

    # main is the default branch: no branch to create
    RecordingClient.instances.clear()
    assert hub.main([str(export_dir), "--repo-prefix", PREFIX], client_factory=RecordingClient) == 0
    assert [c[0] for c in RecordingClient.instances[0].calls] == ["create_repo", "commit"] * 2
    assert RecordingClient.instances[0].calls[0] == ("create_repo", f"{PREFIX}-discriminator", False)


def test_errors_before_any_upload(export_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    RecordingClient.instances.clear()
    assert hub.main([str(tmp_path / "missing"), "--repo-prefix", PREFIX], client_factory=RecordingClient) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    os.remove(broken / "generator" / "tokenizer.json")
    assert hub.main([str(broken), "--repo-prefix", PREFIX], client_factory=RecordingClient) == 2
    assert "missing generator/tokenizer.json" in capsys.readouterr().err
    assert hub.main([str(export_dir), "--repo-prefix", "no-org"], client_factory=RecordingClient) == 2
    assert "ORG/NAME" in capsys.readouterr().err
    # no HF_TOKEN and no saved login: a clear error, and no client was ever made
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    assert hub.main([str(export_dir), "--repo-prefix", PREFIX], client_factory=RecordingClient) == 2
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert RecordingClient.instances == []


def script(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "publish_to_hub.py"), *args],
        env=clean | {"HF_HUB_OFFLINE": "1"} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_script_dry_run(export_dir):
    dry = script([str(export_dir), "--repo-prefix", PREFIX, "--dry-run"], {"HF_TOKEN": SECRET})
    assert dry.returncode == 0, dry.stderr
    assert f"== {PREFIX}-discriminator: public, one commit" in dry.stdout
    size = (export_dir / "generator" / "model.safetensors").stat().st_size
    assert f"{size:>12,}  model.safetensors" in dry.stdout and "language: ko" in dry.stdout
    assert SECRET not in dry.stdout + dry.stderr


def test_an_unreachable_hub_is_one_line(export_dir, monkeypatch, capsys):
    from huggingface_hub import HfApi

    class Unreachable(hub.HubClient):
        def __init__(self, token: str):
            self._api = HfApi(endpoint="http://127.0.0.1:9", token=token)  # nothing listens on port 9

    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert hub.main([str(export_dir), "--repo-prefix", PREFIX], client_factory=Unreachable) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("publish_to_hub network error: the Hub cannot be reached") and "\n" not in err
    assert SECRET not in err


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """A distilled student's folder as the distill stage writes it: a DistilBERT student, the export
    stage's tokenizer files, export_info.json (kind student) and the finetune stage's results beside it."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    from koelectra_dist.export.hf_layout import ExportInfo
    from koelectra_dist.export.stage import write_tokenizer

    root = tmp_path_factory.mktemp("student")
    cfg = tiny_config(
        str(root / "run"),
        "distill.teacher_uri=hf://org/kobert-lm",
        "distill.layers=[0,4,8]",
        "distill.student=distilbert",
        "distill.masking=distilbert",
        "distill.soft_targets=real",
        "distill.soft_weight=0.33",
        "train.optimizer=adamw",
    )
    vocab_sha = write_vocab(root / "vocab", cfg)
    folder = root / "distill" / "model"
    config = DistilBertConfig(vocab_size=1000, dim=32, n_layers=3, n_heads=2, hidden_dim=64)
    DistilBertForMaskedLM(config).save_pretrained(folder)
    write_tokenizer(str(root / "vocab"), str(folder), 64)
    meta = CheckpointMeta(
        step=30,
        consumed_samples=960,
        world_size=2,
        zero_stage=1,
        precision="fp32",
        vocab_sha256=vocab_sha,
        metrics={},
        config=cfg.to_dict(),
    )
    info = ExportInfo(
        checkpoint="distill/checkpoints/step-00000030",
        step=30,
        vocab_sha256=vocab_sha,
        exported_at="2026-12-07T00:00:00Z",
        parameters={"student": 60_000, "teacher": 92_000_000},
        meta=meta,
        corpus={
            "fingerprint": "c0ffee12",
            "total_rows": 321,
            "total_tokens": 17_654,
            "max_length": 64,
            "tokenizer": {"uri": "hf://org/kobert-lm", "class": "BertTokenizerFast", "special_ids": {"pad": 1}},
        },
        kind="student",
    )
    storage.write_json(str(folder / EXPORT_INFO), info.to_json())
    return folder


def test_a_distilled_student_is_one_repository_with_a_card_naming_its_teacher(student_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    RecordingClient.instances.clear()
    assert hub.main([str(student_dir), "--repo-prefix", PREFIX], client_factory=RecordingClient) == 0
    (client,) = RecordingClient.instances
    assert [c[:2] for c in client.calls] == [("create_repo", PREFIX), ("commit", PREFIX)]
    ops = client.calls[1][2]
    uploaded = [op.path_in_repo for op in ops]
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= set(uploaded)
    assert EXPORT_INFO not in uploaded and uploaded[-1] == "README.md"
    card = op_bytes(ops[-1]).decode("utf-8")
    assert "from the teacher `hf://org/kobert-lm`" in card and "teacher's layers [0, 4, 8]" in card
    assert "base_model: org/kobert-lm" in card  # a Hub teacher is the card's base model
    assert "`c0ffee12`" in card and "weight 0.33, temperature 2.0" in card and "every real (non-pad) token" in card
    assert "count^-0.7, 80% [MASK] / 10% kept / 10% random" in card and "AdamW" in card
    assert "`DistilBertForMaskedLM` (distilbert shape)" in card and "| student layers | 3 |" in card
    assert "| tokenizer | `hf://org/kobert-lm` (BertTokenizerFast" in card
    validate_card(card, "student")


def test_an_incomplete_student_folder_is_refused(student_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(student_dir, broken)
    os.remove(broken / "model.safetensors")
    assert hub.main([str(broken), "--repo-prefix", PREFIX, "--dry-run"]) == 2
    assert "not a complete distilled student (missing model.safetensors)" in capsys.readouterr().err
