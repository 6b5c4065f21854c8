"""DistilBERT's recipe in the distill stage, piece by piece and without Ray: soft targets over every
real token or the masked ones, 80/10/10 masking smoothed by token frequency, the DistilBERT-shaped
student copied from the teacher, frozen position embeddings, bias-corrected AdamW, and
configs/distilkobert.json resolving to DistilKoBERT's published settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config, write_shard_set
from transformers import BertConfig, BertForMaskedLM, DistilBertForMaskedLM, ElectraForPreTraining

from koelectra_dist.config import load_config
from koelectra_dist.distill import distilbert, loss
from koelectra_dist.distill.masking import FRACTIONS, mask_tokens_smoothed, masking_weights, write_counts
from koelectra_dist.distill.stage import build_distiller, counts_uri, run_config
from koelectra_dist.errors import ConfigError
from koelectra_dist.pretrain.engine import make_optimizer
from koelectra_dist.tokens import MASK_ID, PAD_ID, SPECIAL_TOKENS

ROOT = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 100
VOCAB = ("\n".join([*SPECIAL_TOKENS, *(f"w{i}" for i in range(VOCAB_SIZE - 5))]) + "\n").encode()


def bert_teacher(folder: Path, layers: int = 3) -> Path:
    """A tiny BertForMaskedLM with non-trivial biases and LayerNorms (a wrong mapping shows)."""
    torch.manual_seed(3)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_bytes(VOCAB)
    return folder


def distiller_for(tmp_path: Path, *overrides: str, counts: np.ndarray | None = None):
    teacher = bert_teacher(tmp_path / "bert")
    cfg = run_config(tiny_config(str(tmp_path / "run"), f"distill.teacher_uri={teacher}", *overrides))
    if cfg.distill.masking == "distilbert":
        write_counts(counts_uri(cfg), np.arange(VOCAB_SIZE) + 1 if counts is None else counts)
    return cfg, build_distiller(cfg)


def padded_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, VOCAB_SIZE, (2, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[0, -1] = 2, 3
    ids[1, 16:] = PAD_ID  # the second row: 16 real tokens, then padding
    ids[1, 15] = 3
    mask = (ids != PAD_ID).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_defaults_follow_distilbert_for_an_mlm_teacher(tmp_path):
    cfg = run_config(tiny_config(str(tmp_path / "run"), f"distill.teacher_uri={bert_teacher(tmp_path / 'bert')}"))
    assert (cfg.distill.masking, cfg.distill.soft_targets, cfg.distill.student) == ("distilbert", "real", "teacher")
    assert cfg.train.heldout_rows == 0  # pre-training's held-out losses do not apply to a distiller


@pytest.mark.parametrize("where", ["real", "masked"])
def test_soft_targets_over_every_real_token_or_the_masked_ones(tmp_path, where):
    cfg, distiller = distiller_for(tmp_path, f"distill.soft_targets={where}")
    distiller.eval()  # no dropout: the recomputation below sees the same logits
    b = padded_batch()
    torch.manual_seed(0)
    out = distiller(**b)
    torch.manual_seed(0)  # the forward's first draws are the masking's
    real = b["attention_mask"].bool()
    masked = mask_tokens_smoothed(b["input_ids"], real, 0.15, distiller.cap, distiller.mask_weights, MASK_ID)
    with torch.no_grad():
        s = distiller.student(input_ids=masked.input_ids, attention_mask=b["attention_mask"]).logits
        t = distiller._frozen[0](input_ids=masked.input_ids, attention_mask=b["attention_mask"]).logits
    index = masked.positions.unsqueeze(-1).expand(-1, -1, VOCAB_SIZE)
    over_real = loss.soft_softmax_loss(s, t, 2.0, real)
    over_masked = loss.soft_softmax_loss(s.gather(1, index), t.gather(1, index), 2.0, masked.valid)
    assert over_real.item() != pytest.approx(over_masked.item(), rel=1e-3)  # the choice matters
    expected = over_real if where == "real" else over_masked
    assert out.metrics["soft_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_masking_is_80_10_10_and_prefers_rare_tokens():
    vocab = 1000
    counts = np.full(vocab, 100)
    counts[10] = 1_000_000  # a very frequent token
    counts[11] = 1  # a rare one
    weights = masking_weights(counts, 0.7, [0, 1, 2, 3, 4])
    assert weights[10] < weights[12] < weights[11] and weights[:5].sum() == 0
    torch.manual_seed(0)
    ids = torch.randint(5, vocab, (400, 128))
    ids[:, :20] = 10  # as many frequent as rare tokens in every row
    ids[:, 20:40] = 11
    ids[:, 0] = 2
    real = torch.ones_like(ids, dtype=torch.bool)
    m = mask_tokens_smoothed(ids, real, 0.15, 20, weights, MASK_ID)
    chosen = m.targets[m.valid]
    assert (chosen == 11).sum() > 10 * (chosen == 10).sum()  # count^-0.7: rare tokens masked far more often
    assert not (chosen == 2).any()  # special tokens never
    assert (m.valid.sum(-1) == round(128 * 0.15)).all()
    now = m.input_ids.gather(1, m.positions)[m.valid]
    became_mask = (now == MASK_ID).float().mean().item()
    kept = (now == chosen).float().mean().item()  # 10% kept plus the random draws that hit the same token
    assert became_mask == pytest.approx(FRACTIONS[0], abs=0.015)
    assert kept == pytest.approx(FRACTIONS[1] + FRACTIONS[2] / vocab, abs=0.01)
    assert 1 - became_mask - kept == pytest.approx(FRACTIONS[2], abs=0.01)
    unchosen = torch.ones_like(ids, dtype=torch.bool).scatter(1, m.positions, ~m.valid)
    assert torch.equal(m.input_ids[unchosen], ids[unchosen])  # nothing else changes


def test_a_distilbert_student_is_the_teachers_layers(tmp_path):
    cfg, distiller = distiller_for(tmp_path, "distill.student=distilbert", "distill.layers=[0,2]")
    student, teacher = distiller.student, distiller._frozen[0]
    assert isinstance(student, DistilBertForMaskedLM) and student.config.n_layers == 2
    assert not any("token_type" in k or "pooler" in k for k in student.state_dict())
    t, s = teacher.bert, student.distilbert
    pairs = [
        (s.transformer.layer[1].attention.q_lin.weight, t.encoder.layer[2].attention.self.query.weight),
        (s.transformer.layer[0].ffn.lin2.bias, t.encoder.layer[0].output.dense.bias),
        (s.transformer.layer[1].output_layer_norm.weight, t.encoder.layer[2].output.LayerNorm.weight),
        (s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight),
        (student.vocab_transform.weight, teacher.cls.predictions.transform.dense.weight),
        (student.vocab_projector.bias, teacher.cls.predictions.bias),
        (
            s.embeddings.position_embeddings.weight,
            t.embeddings.position_embeddings.weight + t.embeddings.token_type_embeddings.weight[0],
        ),
    ]
    for mine, theirs in pairs:
        assert torch.equal(mine, theirs)
    assert student.vocab_projector.weight is s.embeddings.word_embeddings.weight  # tied, as the teacher's


def test_a_distilbert_student_of_every_layer_computes_what_the_teacher_computes(tmp_path):
    """Nothing is lost in the conversion: with all teacher layers, same logits on single-segment input."""
    teacher = BertForMaskedLM.from_pretrained(bert_teacher(tmp_path / "bert")).eval()
    student = distilbert.make_student(teacher, [0, 1, 2]).eval()
    b = padded_batch()
    with torch.no_grad():
        theirs = teacher(**b).logits
        mine = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_a_distilbert_student_needs_an_mlm_teacher_of_equal_widths(tmp_path):
    from helpers import write_electra_pair

    write_electra_pair(tmp_path / "pair", VOCAB)
    with pytest.raises(ConfigError, match="distill.student=distilbert.*masked-LM teacher"):
        run_config(
            tiny_config(
                str(tmp_path / "run"),
                f"distill.teacher_uri={tmp_path}/pair/discriminator",
                "distill.student=distilbert",
            )
        )
    from transformers import ElectraConfig, ElectraForMaskedLM

    config = ElectraConfig(vocab_size=VOCAB_SIZE, embedding_size=16, hidden_size=32, num_attention_heads=2)
    ElectraForMaskedLM(config).save_pretrained(tmp_path / "projected")
    (tmp_path / "projected" / "vocab.txt").write_bytes(VOCAB)
    with pytest.raises(ConfigError, match="embedding_size 16 != hidden_size 32"):
        run_config(
            tiny_config(
                str(tmp_path / "run"), f"distill.teacher_uri={tmp_path}/projected", "distill.student=distilbert"
            )
        )


@pytest.mark.parametrize("student", ["teacher", "distilbert"])
def test_frozen_position_embeddings_stay_after_a_step(tmp_path, student):
    cfg, distiller = distiller_for(
        tmp_path, f"distill.student={student}", "distill.freeze_position_embeddings=true", "train.optimizer=adamw"
    )
    positions = distilbert.position_embeddings(distiller.student)
    before = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    optimizer = make_optimizer(cfg, distiller)
    distiller(**padded_batch()).loss.backward()
    optimizer.step()
    after = distiller.student.state_dict()
    key = next(k for k in after if k.endswith("position_embeddings.weight"))
    assert not positions.requires_grad and torch.equal(after[key], before[key])
    assert not torch.equal(
        after[next(k for k in after if "word_embeddings" in k)], before[key.replace("position", "word")]
    )


def test_adamw_is_bias_corrected_and_electras_adam_is_not(tmp_path):
    """Step 1 with gradient g: AdamW moves lr * g/|g| (bias-corrected m and v), ELECTRA's Adam
    lr * (1-b1) g / (sqrt(1-b2) |g|) = 3.16 lr for betas 0.9/0.999."""
    moved = {}
    for name in ("adamw", "electra_adam"):
        cfg = tiny_config(
            str(tmp_path), f"train.optimizer={name}", "train.learning_rate=0.01", "train.weight_decay=0.0"
        )
        model = torch.nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            model.weight.zero_()
        optimizer = make_optimizer(cfg, model)
        model.weight.grad = torch.full_like(model.weight, 0.5)
        optimizer.step()
        moved[name] = -model.weight[0, 0].item()
    assert moved["adamw"] == pytest.approx(0.01, rel=1e-3)
    assert moved["electra_adam"] == pytest.approx(0.01 * 0.1 / 0.001**0.5, rel=1e-3)


def test_bad_recipe_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="distill.student"):
        tiny_config(str(tmp_path), "distill.student=tiny")
    with pytest.raises(ConfigError, match="distill.smoothing"):
        tiny_config(str(tmp_path), "distill.smoothing=-1")
    with pytest.raises(ConfigError, match="train.optimizer"):
        tiny_config(str(tmp_path), "train.optimizer=sgd")


def test_distilkobert_config_is_distilkoberts_published_settings():
    cfg = load_config(str(ROOT / "configs" / "distilkobert.json"))
    d, t = cfg.distill, cfg.train
    assert d.teacher_uri == "hf://monologg/kobert-lm" and d.student == "distilbert" and d.layers == [0, 4, 8]
    assert (d.soft_weight, d.student_weight, d.cosine_weight, d.temperature) == (0.33, 0.33, 0.33, 2.0)
    assert (d.soft_targets, d.masking, d.smoothing, d.freeze_position_embeddings) == ("real", "distilbert", 0.7, True)
    assert (d.learning_rate, d.warmup_steps / d.steps) == (5e-4, 0.05)
    assert (t.optimizer, t.adam_betas, t.adam_eps, t.weight_decay, t.grad_clip, t.mask_prob) == (
        "adamw",
        [0.9, 0.98],
        1e-6,
        0.0,
        5.0,
        0.15,
    )
    assert "distill" in cfg.run.stages and cfg.corpus.tokenizer_uri == d.teacher_uri  # shards in KoBERT's pieces


def test_the_checkpoint_holds_the_distilbert_student_alone(tmp_path):
    _, distiller = distiller_for(tmp_path, "distill.student=distilbert")
    assert set(distiller.state_dict()) == {f"student.{k}" for k in distiller.student.state_dict()}
    assert not isinstance(distiller._frozen[0], ElectraForPreTraining)


def test_token_counts_are_made_once_per_shard_set(tmp_path, monkeypatch):
    from koelectra_dist.distill import masking
    from koelectra_dist.pretrain.data import open_shards

    cfg = tiny_config(str(tmp_path), f"model.vocab_size={VOCAB_SIZE}", "model.max_length=16")
    write_shard_set(f"{tmp_path}/corpus", VOCAB_SIZE, 16, [7, 5])
    shards = open_shards(cfg)
    uri = str(tmp_path / "counts.npy")
    masking.ensure_counts(uri, shards, VOCAB_SIZE)
    expected = masking.token_counts(shards, VOCAB_SIZE)
    assert (masking.read_counts(uri) == expected).all() and expected.sum() > 0
    passes = []
    monkeypatch.setattr(masking, "token_counts", lambda *a: passes.append(a) or expected)
    masking.ensure_counts(uri, shards, VOCAB_SIZE)  # a restarted driver: no second pass
    assert passes == []
    other = dataclasses.replace(
        shards, manifest=dataclasses.replace(shards.manifest, shards=shards.manifest.shards[:1])
    )
    masking.ensure_counts(uri, other, VOCAB_SIZE)  # another shard set: counted again
    assert len(passes) == 1
