"""research/diagnose_locality.py's initialisation: layer 0 starts out looking at the neighbours."""

from __future__ import annotations

import pytest
import torch
import transformers
from diagnose_locality import local_attention_init


def tiny_masked_lm(heads: int) -> transformers.ElectraForMaskedLM:
    config = transformers.ElectraConfig(
        vocab_size=500,
        embedding_size=64,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=256,
        max_position_embeddings=64,
        attn_implementation="eager",  # returns attention probabilities
    )
    return transformers.ElectraForMaskedLM(config)


def test_local_init_points_layer_zero_heads_at_the_previous_and_next_token():
    torch.manual_seed(0)
    model = tiny_masked_lm(heads=2).eval()
    before = model(input_ids=torch.randint(5, 500, (4, 64)), output_attentions=True).attentions[0]
    local_attention_init(model)
    ids = torch.randint(5, 500, (4, 64))
    with torch.no_grad():
        after = model(input_ids=ids, output_attentions=True).attentions[0]  # [batch, heads, query, key]
    inner = torch.arange(1, 63)
    left, right = after[:, :, inner, inner - 1].mean((0, 2)), after[:, :, inner, inner + 1].mean((0, 2))
    assert left[0] > 0.3 and right[0] < 0.01, (left, right)  # head 0: the previous token
    assert right[1] > 0.3 and left[1] < 0.01, (left, right)  # head 1: the next token
    uniform = before[:, :, inner, inner - 1].mean()
    assert uniform < 0.05  # the standard initialisation spreads attention over all 64 positions
    position_std = model.electra.embeddings.position_embeddings.weight.std().item()
    assert position_std == pytest.approx(0.02, rel=1e-3)  # the usual scale next to word embeddings


def test_local_init_needs_two_heads():
    with pytest.raises(ValueError, match="at least 2 heads"):
        local_attention_init(tiny_masked_lm(heads=1))
