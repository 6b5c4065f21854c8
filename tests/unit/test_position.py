"""The training loop's position in the example stream, without an engine or Ray: the loop's own
bookkeeping (`position.start_position`, `Position.after_step`, `micro_batch_indices`) driven over
the real shard stream, so that a run resumed from any checkpoint, on any worker count, trains
exactly the examples (under exactly the seeds) that the uninterrupted run trained."""

from __future__ import annotations

import itertools

import pytest
import torch

from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.data import ShardStream
from koelectra_dist.pretrain.meta import CheckpointMeta
from koelectra_dist.pretrain.position import Position, micro_batch_indices, start_position

ROWS = [7, 5, 9]  # tests/conftest.py's tiny_shards: 21 examples; example i starts with token 5 + i
GLOBAL, MICRO, STEPS = 8, 2, 10  # 80 examples: almost four epochs


@pytest.fixture
def uris(tiny_shards):
    out, manifest = tiny_shards
    return [f"{out}/shards/{s.path}" for s in manifest.shards]


def ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return (batch["input_ids"][:, 1] - 5).tolist()


def stream(uris, rank: int, world: int, micro: int, start: int):
    # windows of 5 rows divide neither the epoch nor the global batch: resumes fall mid-window
    return ShardStream(
        uris, ROWS, seed=1, rank=rank, world_size=world, micro_batch=micro, start=start, group_rows=5
    ).batches()


def meta(position: Position) -> CheckpointMeta:
    """What the checkpointer records at `position` (checkpoint.checkpointer.Checkpointer.meta)."""
    return CheckpointMeta(position.step, position.consumed, 1, 1, "fp32", "0" * 64, {}, {})


def train(
    uris, checkpoint: CheckpointMeta | None, world: int
) -> tuple[dict[int, list[int]], dict[int, CheckpointMeta]]:
    """Run the loop's bookkeeping to step STEPS on `world` workers from `checkpoint`: the examples
    each micro-batch index (its seed, loop.micro_batch_seed) was trained on, and the checkpoint
    meta after each step."""
    position = start_position(checkpoint, GLOBAL)
    accumulation = GLOBAL // (MICRO * world)
    ranks = [stream(uris, r, world, MICRO, position.consumed) for r in range(world)]
    trained, metas = {}, {}
    while position.step < STEPS:
        for rank in range(world):
            for c in micro_batch_indices(position.step, accumulation, rank, world):
                trained[c] = ids(next(ranks[rank]))
        position = position.after_step()
        metas[position.step] = meta(position)
    return trained, metas


def test_a_step_trains_the_next_global_batch_of_the_stream(uris):
    """Step s trains stream positions [s*G, (s+1)*G), micro-batch c positions [c*m, (c+1)*m)."""
    positions = [i for b in itertools.islice(stream(uris, 0, 1, 1, 0), STEPS * GLOBAL) for i in ids(b)]
    for world in (1, 2, 4):
        trained, metas = train(uris, None, world)
        assert trained == {c: positions[c * MICRO : (c + 1) * MICRO] for c in range(STEPS * GLOBAL // MICRO)}
        assert [(m.step, m.consumed_samples) for m in metas.values()] == [(s, s * GLOBAL) for s in range(1, 11)]


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("at", [1, 3, 6])
def test_a_resumed_run_trains_what_the_uninterrupted_run_trained(uris, world, at):
    """From the checkpoint of step `at` of a run on 2 workers, on 1, 2 or 4 workers."""
    full, metas = train(uris, None, 2)
    resumed, _ = train(uris, metas[at], world)
    assert resumed == {c: full[c] for c in range(at * GLOBAL // MICRO, STEPS * GLOBAL // MICRO)}


def test_a_checkpoint_whose_position_is_not_its_steps_is_refused():
    assert start_position(None, GLOBAL) == Position(0, 0, GLOBAL)
    assert start_position(meta(Position(3, 24, GLOBAL)), GLOBAL).after_step() == Position(4, 32, GLOBAL)
    with pytest.raises(CheckpointError, match=r"step-3: .*step 3 with 12 examples consumed.*train.global_batch_size"):
        start_position(meta(Position(3, 12, 4)), GLOBAL, "step-3:")
