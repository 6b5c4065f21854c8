"""The distill stage's parts without Ray: the student starts from the chosen teacher layers, the
losses are DistilBERT's, bad teachers and layer choices are refused with the key named."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config, write_electra_pair
from transformers import BertConfig, BertForMaskedLM, BertModel

from koelectra_dist.corpus.shards import vocab_sha256
from koelectra_dist.distill import loss
from koelectra_dist.distill.config import default_layers
from koelectra_dist.distill.model import forward_flops_per_token
from koelectra_dist.distill.stage import build_distiller, check_teacher, run_config
from koelectra_dist.distill.teacher import resolve_teacher
from koelectra_dist.errors import ConfigError
from koelectra_dist.tokens import SPECIAL_TOKENS

VOCAB = ("\n".join([*SPECIAL_TOKENS, *(f"w{i}" for i in range(95))]) + "\n").encode()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 100, (2, 20), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def test_default_layers_are_distilkoberts():
    assert default_layers(12) == [0, 4, 8]
    assert default_layers(4) == [0]


def test_the_student_starts_from_the_chosen_teacher_layers(tmp_path):
    write_electra_pair(tmp_path, VOCAB, layers=4)
    cfg = run_config(
        tiny_config(str(tmp_path / "run"), f"distill.teacher_uri={tmp_path}/discriminator", "distill.layers=[1,3]")
    )
    assert (cfg.model.num_hidden_layers, cfg.model.hidden_size, cfg.distill.generator_uri) == (
        2,
        32,
        f"{tmp_path}/generator",
    )
    distiller = build_distiller(cfg)
    teacher, student = distiller._frozen[0], distiller.student
    assert set(distiller.state_dict()) == {f"student.{k}" for k in student.state_dict()}  # checkpoints: student only
    pairs = [
        (student.electra.embeddings, teacher.electra.embeddings),
        (student.electra.embeddings_project, teacher.electra.embeddings_project),
        (student.electra.encoder.layer[0], teacher.electra.encoder.layer[1]),
        (student.electra.encoder.layer[1], teacher.electra.encoder.layer[3]),
        (student.discriminator_predictions, teacher.discriminator_predictions),
    ]
    for mine, theirs in pairs:
        for (name, value), (_, source) in zip(mine.state_dict().items(), theirs.state_dict().items(), strict=True):
            assert torch.equal(value, source), name
    out = distiller(**batch())
    assert out.loss.requires_grad and set(out.metrics) >= {"soft_loss", "cos_loss", "student_loss", "real_tokens"}
    d, m = cfg.distill, out.metrics  # each term times its own weight (defaults 5, 1, 2: a swap shows)
    assert (d.soft_weight, d.cosine_weight, d.student_weight) == (5.0, 1.0, 2.0)
    expected = d.soft_weight * m["soft_loss"] + d.cosine_weight * m["cos_loss"] + d.student_weight * m["student_loss"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len({round(m[k].item(), 6) for k in ("soft_loss", "cos_loss", "student_loss")}) == 3
    # MFU counts the student's forward and backward and the frozen teacher's and generator's forward
    student, teacher_fwd, generator_fwd = (forward_flops_per_token(m, 20, 0.15) for m in (student, *distiller._frozen))
    assert teacher_fwd > student  # 4 layers against 2
    assert distiller.flops_per_token(20) == pytest.approx(3 * student + teacher_fwd + generator_fwd)


def test_a_local_discriminator_without_generator_beside_it_gets_a_fresh_one(tmp_path):
    write_electra_pair(tmp_path, VOCAB)
    shutil.rmtree(tmp_path / "generator")
    cfg = run_config(tiny_config(str(tmp_path / "run"), f"distill.teacher_uri={tmp_path}/discriminator"))
    assert cfg.distill.generator_uri is None
    generator = build_distiller(cfg)._frozen[1]
    assert generator.config.hidden_size == round(32 * cfg.model.generator_size)
    # a generator named but absent is still refused
    named = run_config(
        tiny_config(
            str(tmp_path / "run"),
            f"distill.teacher_uri={tmp_path}/discriminator",
            f"distill.generator_uri={tmp_path}/generator",
        )
    )
    with pytest.raises(ConfigError, match="distill.generator_uri=.*no generator there"):
        check_teacher(named, vocab_sha256(f"{tmp_path}/discriminator"))


def test_an_mlm_teacher_is_distilled_at_masked_positions(tmp_path):
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64
    )
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_bytes(VOCAB)
    cfg = run_config(
        tiny_config(
            str(tmp_path / "run"),
            f"distill.teacher_uri={tmp_path}/bert",
            "distill.layers=[2]",
            "distill.masking=electra",
            "distill.soft_targets=masked",
        )
    )
    assert resolve_teacher(cfg).objective == "mlm"
    distiller = build_distiller(cfg)
    assert torch.equal(
        distiller.student.bert.encoder.layer[0].output.dense.weight,
        distiller._frozen[0].bert.encoder.layer[2].output.dense.weight,
    )
    torch.manual_seed(0)
    out = distiller(**batch())
    assert out.metrics["masked_tokens"] > 0 and torch.isfinite(out.loss)


def test_teachers_without_a_head_and_layers_beyond_the_teacher_are_refused(tmp_path):
    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)).save_pretrained(
        tmp_path / "encoder"
    )
    (tmp_path / "encoder" / "vocab.txt").write_bytes(VOCAB)
    with pytest.raises(ConfigError, match="no head to distil"):
        run_config(tiny_config(str(tmp_path / "run"), f"distill.teacher_uri={tmp_path}/encoder"))
    write_electra_pair(tmp_path / "pair", VOCAB)
    with pytest.raises(ConfigError, match=r"distill.layers=\[0, 5\]"):
        run_config(
            tiny_config(
                str(tmp_path / "run"), f"distill.teacher_uri={tmp_path}/pair/discriminator", "distill.layers=[0,5]"
            )
        )
    with pytest.raises(ConfigError, match="no config.json"):
        run_config(tiny_config(str(tmp_path / "run")))  # no export yet: the default teacher is absent


@pytest.mark.parametrize(
    "override, message",
    [
        ("distill.layers=[1,1]", "distinct"),
        ("distill.temperature=0", "distill.temperature"),
        ("distill.soft_weight=-1", "soft_weight"),
    ],
)
def test_bad_distill_settings_are_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(str(tmp_path), override)


def test_losses_are_distilberts():
    torch.manual_seed(0)
    weights = torch.ones(2, 5, dtype=torch.bool)
    teacher = torch.randn(2, 5)
    student = teacher.clone().requires_grad_(True)
    # soft targets: the minimum is the student equal to the teacher (zero gradient there)
    loss.soft_binary_loss(student, teacher, 2.0, weights).backward()
    assert student.grad.abs().max() < 1e-6
    logits = torch.randn(2, 5, 11)
    assert loss.soft_softmax_loss(logits, logits, 3.0, weights) == pytest.approx(0.0, abs=1e-6)
    assert loss.soft_softmax_loss(torch.zeros(2, 5, 11), logits, 3.0, weights) > 0
    hidden = torch.randn(2, 5, 8)
    assert loss.cosine_loss(hidden, 2 * hidden, weights) == pytest.approx(0.0, abs=1e-6)
    assert loss.cosine_loss(hidden, -hidden, weights) == pytest.approx(2.0, abs=1e-6)
    # positions outside `weights` do not count
    masked = weights.clone()
    masked[:, 0] = False
    other = hidden.clone()
    other[:, 0] = -hidden[:, 0]
    assert loss.cosine_loss(hidden, other, masked) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.0])
def test_soft_losses_are_scaled_by_the_square_of_the_temperature(temperature):
    """Hinton's T^2 against a reference written from the definitions (torch's kl_div and plain
    sigmoid cross-entropy): a loss scaled by T, or by nothing, is off by a factor T here."""
    torch.manual_seed(1)
    weights = torch.tensor([[True, True, False], [True, False, True]])
    student, teacher = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    kl = F.kl_div(
        F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1), log_target=True,
        reduction="none",
    ).sum(-1)  # fmt: skip
    expected = temperature**2 * kl[weights].mean()
    assert loss.soft_softmax_loss(student, teacher, temperature, weights).item() == pytest.approx(expected.item())
    s, t = student[..., 0], teacher[..., 0]
    p = torch.sigmoid(t / temperature)
    bce = -(p * F.logsigmoid(s / temperature) + (1 - p) * F.logsigmoid(-s / temperature))
    expected = temperature**2 * bce[weights].mean()
    assert loss.soft_binary_loss(s, t, temperature, weights).item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_teacher_config_json_is_required(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    (tmp_path / "t" / "vocab.txt").write_bytes(VOCAB)
    with pytest.raises(ConfigError, match="ELECTRA or BERT only"):
        run_config(tiny_config(str(tmp_path / "run"), f"distill.teacher_uri={tmp_path}/t"))
