"""benchmarks/diagnose_features.py's measures: token spread and the frozen linear probe."""

from __future__ import annotations

import torch
from diagnose_features import probe_accuracy, token_spread


def test_token_spread_is_zero_for_one_vector_everywhere_and_near_one_for_random_ones():
    torch.manual_seed(0)
    mask = torch.ones(4, 10)
    mask[:, 7:] = 0  # padding is left out
    collapsed = torch.randn(64).expand(4, 10, 64).clone()
    collapsed[:, 7:] = torch.randn(4, 3, 64)
    assert token_spread(collapsed, mask) < 1e-5
    assert 0.9 < token_spread(torch.randn(4, 10, 64), mask) < 1.1


def test_probe_reads_a_direction_that_carries_the_label_and_not_noise():
    torch.manual_seed(0)
    features, dev = torch.randn(400, 32), torch.randn(200, 32)
    labels, dev_labels = (features[:, 3] > 0).long(), (dev[:, 3] > 0).long()
    assert probe_accuracy(features, labels, dev, dev_labels) > 0.9
    noise, dev_noise = torch.randint(0, 2, (400,)), torch.randint(0, 2, (200,))
    assert 0.35 < probe_accuracy(features, noise, dev, dev_noise) < 0.65
