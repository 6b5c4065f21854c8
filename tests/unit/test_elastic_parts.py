"""World-size-free randomness and batch-keeping worker counts (pure functions of pretrain/)."""

from __future__ import annotations

import torch

from koelectra_dist.pretrain.elastic import usable
from koelectra_dist.pretrain.loop import micro_batch_seed
from koelectra_dist.pretrain.position import micro_batch_indices


def test_every_worker_count_trains_each_micro_batch_of_a_step_once():
    # global batch 256 in micro-batches of 32: 8 micro-batches per step, whatever the worker count
    for step in (0, 1, 1000):
        want = list(range(step * 8, (step + 1) * 8))
        for world in (1, 2, 4, 8):
            got = sorted(c for rank in range(world) for c in micro_batch_indices(step, 8 // world, rank, world))
            assert got == want, (step, world)


def test_a_micro_batch_draws_the_same_numbers_on_any_rank_of_any_worker_count():
    def draws(index: int) -> torch.Tensor:
        torch.manual_seed(micro_batch_seed(42, index))
        return torch.rand(5)

    # micro-batch 5 is rank 1's 3rd on 2 workers and rank 1's 2nd on 4 workers: same draws
    assert micro_batch_indices(0, 4, 1, 2)[2] == 5 and micro_batch_indices(0, 2, 1, 4)[1] == 5
    assert torch.equal(draws(5), draws(5))
    assert not torch.equal(draws(5), draws(6))
    assert micro_batch_seed(42, 5) != micro_batch_seed(43, 5)


def test_a_worker_count_the_cluster_offers_is_rounded_down_to_one_that_keeps_the_batch():
    allowed = [2, 4, 8]
    assert [usable(n, allowed) for n in range(10)] == [0, 0, 2, 2, 4, 4, 4, 4, 8, 8]
