"""The fused vocab pass (train.fused_vocab) equals the reference computation in model.py: the same
Gumbel samples for the same seed, cross-entropy and its gradient to 1e-5 in fp32, the same accuracy;
and the whole objective is unchanged by the switch."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from koelectra_dist.config import ModelConfig
from koelectra_dist.pretrain import vocab_pass as vp
from koelectra_dist.pretrain.model import ElectraPretrainer, gumbel_sample


def reference(logits, targets):
    sampled = gumbel_sample(logits.detach())
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return ce, sampled, logits.argmax(-1) == targets


@pytest.mark.parametrize("rows", [7, 33])
def test_fused_equals_reference(rows):
    gen = torch.Generator().manual_seed(rows)
    logits = (torch.randn(rows, 3000, generator=gen) * 3).requires_grad_()
    targets = torch.randint(0, 3000, (rows,), generator=gen)
    targets[:2] = logits.detach()[:2].argmax(-1)  # some correct predictions
    torch.manual_seed(5)
    ce_ref, sampled_ref, correct_ref = reference(logits, targets)
    (grad_ref,) = torch.autograd.grad((ce_ref * torch.arange(rows)).sum(), logits)
    fused = vp.FusedVocabPass()
    torch.manual_seed(5)
    noise = torch.rand(logits.shape)  # what gumbel_sample draws
    ce, sampled, correct = fused(logits, noise, targets)
    (grad,) = torch.autograd.grad((ce * torch.arange(rows)).sum(), logits)
    assert fused._compiled is not None and not fused._eager
    assert torch.equal(sampled, sampled_ref) and torch.equal(correct, correct_ref) and correct.sum() >= 2
    torch.testing.assert_close(ce, ce_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)


def test_objective_is_the_same_with_the_fused_pass():
    cfg = ModelConfig(
        vocab_size=500,
        embedding_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=32,
    )
    ids = torch.randint(5, 500, (3, 32), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1] = 2, 3
    outs = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = ElectraPretrainer(cfg, fused_vocab=fused)
        torch.manual_seed(1)
        outs.append(model(ids, None, torch.zeros_like(ids)))
    ref, got = outs
    assert torch.equal(ref.fake_input_ids, got.fake_input_ids)
    torch.testing.assert_close(got.gen_loss, ref.gen_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-5, atol=1e-5)
    assert got.metrics["gen_acc"] == ref.metrics["gen_acc"]


def test_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(vp.torch, "compile", broken)
    fused = vp.FusedVocabPass()
    logits, targets = torch.randn(4, 50), torch.randint(0, 50, (4,))
    with caplog.at_level(logging.WARNING, logger=vp.__name__):
        for _ in range(3):
            torch.manual_seed(2)
            ce, sampled, _ = fused(logits, torch.rand(logits.shape), targets)
    assert len([r for r in caplog.records if "unavailable" in r.message]) == 1
    torch.manual_seed(2)
    assert torch.equal(sampled, gumbel_sample(logits))
    torch.testing.assert_close(ce, F.cross_entropy(logits, targets, reduction="none"))
