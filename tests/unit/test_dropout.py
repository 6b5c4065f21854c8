"""The CPU dropout: the right keep probability, unbiased, seeded, and attention that matches SDPA."""

from __future__ import annotations

import torch
from transformers import ElectraConfig, ElectraForPreTraining
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from koelectra_dist.pretrain.dropout import (
    CpuFastDropout,
    attention,
    fast_dropout,
    keep_mask,
    kept_fraction,
    use_cpu_fast_dropout,
)


def test_keep_mask_keeps_one_minus_p_in_every_lane():
    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.02):
        mask = keep_mask(torch.Size([4_000_001]), p, torch.device("cpu"))  # odd size: a partial last word
        assert mask.shape == (4_000_001,) and mask.dtype == torch.bool
        assert abs(kept_fraction(p) - (1 - p)) < 1 / 65536
        # each of the four 16-bit lanes of a 64-bit draw keeps 1 - p on its own (sd ~ 3e-4)
        lanes = mask[:4_000_000].view(-1, 4).float().mean(0)
        assert torch.allclose(lanes, torch.full((4,), 1 - p), atol=0.002), (p, lanes)


def test_fast_dropout_is_seeded_unbiased_and_its_gradient_is_the_mask():
    x = torch.rand(256, 512, requires_grad=True)
    torch.manual_seed(3)
    y = fast_dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(y, fast_dropout(x, 0.1))
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / kept_fraction(0.1))
    assert abs(y.mean().item() - x.mean().item()) < 0.01
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / kept_fraction(0.1))


def test_dropout_module_is_torch_dropout_off_cpu_training():
    layer = CpuFastDropout(0.1)
    x = torch.randn(64, 64)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(CpuFastDropout(0.0).train()(x), x)
    assert (layer.train()(x) == 0).float().mean().item() > 0.05


def test_attention_equals_sdpa_without_dropout_and_masks_padding_with_it():
    torch.manual_seed(0)
    module = torch.nn.Module()
    module.is_causal = False
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    pad = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    pad[1, ..., 7:] = False  # the second row's last three keys are padding
    ours, _ = attention(module, q, k, v, pad, dropout=0.0, scaling=0.3)
    reference, _ = sdpa_attention_forward(module, q, k, v, pad, dropout=0.0, scaling=0.3)
    assert torch.allclose(ours, reference, atol=1e-6)
    # With dropout: the padded keys' values never reach the output.
    torch.manual_seed(1)
    dropped, _ = attention(module, q, k, v, pad, dropout=0.1, scaling=0.3)
    v2 = v.clone()
    v2[1, :, 7:] = 1e6
    torch.manual_seed(1)
    assert torch.equal(attention(module, q, k, v2, pad, dropout=0.1, scaling=0.3)[0], dropped)


def test_attention_dropout_drops_probabilities_not_outputs():
    module = torch.nn.Module()
    length = 256
    q = k = torch.zeros(4, 2, length, 8)  # uniform attention: every probability is 1 / length
    v = torch.eye(length).expand(4, 2, length, length)  # output[i, j] = dropped probability of key j
    torch.manual_seed(0)
    out, _ = attention(module, q, k, v, None, dropout=0.1)
    assert out.shape == (4, length, 2, length)
    zeros = (out == 0).float().mean().item()
    assert abs(zeros - 0.1) < 0.005
    assert torch.allclose(out[out != 0], torch.tensor(1 / length / kept_fraction(0.1)))


def test_use_cpu_fast_dropout_keeps_weights_outputs_and_saved_config(tmp_path):
    config = ElectraConfig(
        vocab_size=50,
        embedding_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = ElectraForPreTraining(config).eval()
    ids = torch.randint(5, 50, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    before = model(input_ids=ids, attention_mask=mask).logits
    keys = set(model.state_dict())
    use_cpu_fast_dropout(model)
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout]
    assert set(model.state_dict()) == keys
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, before, atol=1e-6)
    model.train()(input_ids=ids, attention_mask=mask).logits.sum().backward()
    model.save_pretrained(tmp_path)
    reloaded = ElectraForPreTraining.from_pretrained(tmp_path).eval()  # a plain load: no custom names saved
    assert torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, before, atol=1e-6)
