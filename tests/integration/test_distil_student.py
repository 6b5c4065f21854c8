"""DistilBERT's recipe end to end on the local Ray instance (real DeepSpeed engines on gloo): a tiny
BERT masked-LM teacher distils into a DistilBERT-shaped student (smoothed 80/10/10 masking, soft
targets over every real token, AdamW, frozen position embeddings); the student's folder loads with
AutoModel / DistilBertModel and AutoTokenizer, fine-tunes with the finetune stage, and
scripts/publish_to_hub.py --dry-run prints a card naming the teacher, its layers and the losses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config, toy_finetune_config, write_shard_set
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM, DistilBertModel

from koelectra_dist import storage
from koelectra_dist.distill import stage as distill
from koelectra_dist.finetune import stage as finetune
from koelectra_dist.pretrain.checkpoint import restore

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_bert_teacher_distils_into_a_distilbert_student_that_loads_fine_tunes_and_publishes(ray_local, tmp_path):
    write_shard_set(str(tmp_path / "corpus"), 100, 64, [24, 20], seed=5, validation=8)  # held-out rows: unused here
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64
    )
    BertForMaskedLM(config).save_pretrained(tmp_path / "teacher")
    (tmp_path / "teacher" / "vocab.txt").write_bytes((tmp_path / "corpus" / "vocab" / "vocab.txt").read_bytes())
    cfg = tiny_config(
        str(tmp_path / "run"),
        f"train.shards_uri={tmp_path}/corpus/shards",
        f"distill.teacher_uri={tmp_path}/teacher",
        "distill.student=distilbert",
        "distill.layers=[0,2]",
        "distill.freeze_position_embeddings=true",
        "distill.steps=3",
        "distill.warmup_steps=1",
        "distill.learning_rate=0.003",
        "train.optimizer=adamw",
        "train.adam_betas=[0.9,0.98]",
        "train.grad_clip=5.0",
        "checkpoint.interval_steps=3",
    )
    report = distill.run(cfg)
    assert report["steps"] == 3 and report["layers"] == [0, 2]
    resolved = distill.run_config(cfg).distill
    assert (resolved.masking, resolved.soft_targets) == ("distilbert", "real")  # DistilBERT's, by default
    assert storage.exists(distill.counts_uri(cfg))

    # trained (the word embeddings moved), the position embeddings frozen at the teacher's
    final = restore.consolidated_state_dict(report["checkpoint"])
    start = distill.build_distiller(distill.run_config(cfg)).state_dict()
    positions = "student.distilbert.embeddings.position_embeddings.weight"
    assert torch.equal(final[positions], start[positions])
    words = "student.distilbert.embeddings.word_embeddings.weight"
    assert not torch.equal(final[words], start[words])

    model_dir = report["model"]
    model = AutoModel.from_pretrained(model_dir)
    assert isinstance(model, DistilBertModel) and model.config.n_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.convert_tokens_to_ids("w1") == 6
    with torch.no_grad():
        hidden = model(**tokenizer(["w1 w2 w3"], return_tensors="pt", return_token_type_ids=False)).last_hidden_state
    assert hidden.shape == (1, 5, 32)

    # the finetune stage fine-tunes it (a toy task: a few steps)
    ft = toy_finetune_config(tmp_path, model_dir)
    scores = finetune.run(ft)["scores"]["toy"]
    assert 0 <= scores["mean"] <= 100

    # publishing: one repository, a card naming the teacher, its layers, the corpus and the losses
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "publish_to_hub.py"), model_dir, "--repo-prefix", "me/distil-tiny"]
        + ["--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "== me/distil-tiny: public, one commit" in out and "-discriminator" not in out
    assert "model.safetensors" in out and "export_info.json" not in out.split("(model card, below)")[0]
    assert "from the teacher `teacher`" in out and "[0, 2]" in out
    assert "weight 0.33" not in out and "temperature 2.0" in out and "count^-0.7" in out
    assert "vocab.txt sha256" in out and "AdamW" in out
