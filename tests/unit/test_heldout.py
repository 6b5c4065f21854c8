"""Held-out losses: the same figure whatever the worker count, no dropout, the training RNG
untouched, and read from the corpus stage's validation shards."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config, write_shard_set

from koelectra_dist.pretrain.data import open_shards
from koelectra_dist.pretrain.heldout import heldout_losses, heldout_sums, load_heldout
from koelectra_dist.pretrain.model import ElectraPretrainer


@pytest.fixture
def heldout_setup(tmp_path):
    cfg = tiny_config(str(tmp_path), "train.micro_batch_size=4", "train.heldout_rows=10", "model.vocab_size=300",
                      "model.max_length=16")  # fmt: skip
    write_shard_set(f"{tmp_path}/corpus", 300, 16, [7, 5], validation=12)
    torch.manual_seed(0)
    model = ElectraPretrainer(cfg.model, cfg.train.mask_prob)
    return cfg, model, load_heldout(cfg, open_shards(cfg))


def test_heldout_reads_the_first_rows_of_the_validation_shards(heldout_setup):
    cfg, _, heldout = heldout_setup
    assert [b["input_ids"].shape[0] for b in heldout.batches] == [4, 4, 2]  # 10 of the 12 held-out rows
    assert heldout.seed != cfg.train.seed


def test_heldout_losses_do_not_depend_on_the_worker_count(heldout_setup):
    _, model, heldout = heldout_setup
    cpu = torch.device("cpu")
    one = heldout_losses(heldout_sums(model, heldout, cpu, 0, 1))
    for world in (2, 3, 4):
        sums = sum(heldout_sums(model, heldout, cpu, rank, world) for rank in range(world))
        assert heldout_losses(sums) == pytest.approx(one, rel=1e-9)
    assert one["heldout_gen_loss"] == pytest.approx(torch.log(torch.tensor(300.0)).item(), rel=0.1)  # untrained
    assert 0 < one["heldout_disc_loss"] < 2


def test_heldout_is_deterministic_without_dropout_and_leaves_the_training_rng_alone(heldout_setup):
    _, model, heldout = heldout_setup
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = heldout_losses(heldout_sums(model, heldout, torch.device("cpu"), 0, 1))
    assert torch.equal(torch.rand(3), expected_next)  # the training stream goes on as if nothing ran
    assert model.training
    assert heldout_losses(heldout_sums(model, heldout, torch.device("cpu"), 0, 1)) == first


def test_no_validation_shards_or_rows_means_no_heldout(tmp_path):
    cfg = tiny_config(str(tmp_path), "model.vocab_size=300", "model.max_length=16")
    write_shard_set(f"{tmp_path}/corpus", 300, 16, [7])
    assert load_heldout(cfg, open_shards(cfg)) is None
    write_shard_set(f"{tmp_path}/corpus", 300, 16, [7], validation=3)
    assert load_heldout(tiny_config(str(tmp_path), "model.vocab_size=300", "model.max_length=16",
                                    "train.heldout_rows=0"), open_shards(cfg)) is None  # fmt: skip
