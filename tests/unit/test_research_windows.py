"""research/windows.py: short windows keep their true positions."""

import pytest
import torch
from windows import short_windows

from koelectra_dist.errors import ConfigError
from koelectra_dist.tokens import PAD_ID


def make_batch(rows: int, seq: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, vocab, (rows, seq), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def test_short_windows_keep_true_positions_and_drop_padding_only_windows():
    ids, attention, token_types = make_batch(3, 40, 97)
    attention[1, 8:] = 0  # row 1: one real window of 8, four of padding
    ids[1, 8:] = PAD_ID
    w_ids, w_attention, w_types, w_positions = short_windows(ids, attention, token_types, 8)
    assert w_ids.shape == w_positions.shape == (len(w_ids), 8)
    kept = [(row, start) for row in range(3) for start in range(0, 40, 8) if attention[row, start : start + 8].any()]
    assert len(w_ids) == len(kept) and (1, 8) not in kept
    for window, (row, start) in enumerate(kept):
        assert torch.equal(w_ids[window], ids[row, start : start + 8])
        assert torch.equal(w_attention[window], attention[row, start : start + 8])
        assert torch.equal(w_types[window], token_types[row, start : start + 8])
        assert torch.equal(w_positions[window], torch.arange(start, start + 8))
    with pytest.raises(ConfigError, match="divide the sequence length 40"):
        short_windows(ids, attention, token_types, 16)
