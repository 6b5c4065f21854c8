"""The held-out rows the corpus stage sets aside: which rows (the same whatever the task count),
copied out of a packed piece intact, written as validation shards beside the training ones."""

from __future__ import annotations

import numpy as np
import pytest

from koelectra_dist.corpus.shards import ShardManifest, read_manifest, take_rows, write_manifest, write_shard
from koelectra_dist.corpus.stage import _ShardPlan


def piece(lengths: list[int], several: bool = False):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.arange(offsets[-1], dtype=np.uint16)
    types = (ids % 2).astype(np.uint8)
    ends = None
    if several:  # two examples per row: one ending mid-row, one at its end
        ends = np.sort(np.concatenate([offsets[1:], offsets[:-1] + 1])).astype(np.int64)
    return ids, types, offsets, ends


@pytest.mark.parametrize("several", [False, True])
def test_take_rows_copies_those_rows_with_their_examples(several):
    ids, types, offsets, ends = piece([3, 5, 2, 4], several)
    got_ids, got_types, got_offsets, got_ends = take_rows((ids, types, offsets, ends), [1, 3])
    assert got_ids.tolist() == list(range(3, 8)) + list(range(10, 14))
    assert got_types.tolist() == [i % 2 for i in got_ids.tolist()]
    assert got_offsets.tolist() == [0, 5, 9]
    assert (got_ends is None) == (not several)
    if several:
        assert got_ends.tolist() == [1, 5, 6, 9]


def held_global_rows(job_rows: list[int], fraction: float, cap: int) -> list[int]:
    plan = _ShardPlan(100, "unused", fraction, cap)
    found = []
    for rows in job_rows:
        found += [plan.seen + i for i in plan._held_in(rows)]
        plan.seen += rows
    return found


def test_held_out_rows_do_not_depend_on_how_rows_split_into_jobs():
    one_job = held_global_rows([1000], 0.01, 1000)
    assert one_job == list(range(99, 1000, 100))  # every 100th row, never the first
    assert held_global_rows([7, 300, 1, 92, 600], 0.01, 1000) == one_job
    assert held_global_rows([250] * 4, 0.01, 4) == one_job[:4]  # at most validation_max_rows
    assert held_global_rows([1], 0.5, 10) == [] and held_global_rows([500], 0.0, 10) == []


def test_validation_shards_are_listed_apart_and_checked(tmp_path):
    from koelectra_dist.corpus.shards import shard_problems

    arrays = piece([4, 4, 4])
    train = write_shard(str(tmp_path), 0, [(arrays, 0, 2)])
    held = write_shard(str(tmp_path), 0, [(arrays, 2, 3)], validation=True)
    assert (train.path, held.path) == ("part-00000.parquet", "validation-00000.parquet")
    manifest = ShardManifest(
        vocab_sha256="x", vocab_size=100, max_length=8, id_dtype="uint16", shards=[train], total_rows=2,
        total_tokens=8, cleaning={}, config={}, validation=[held],
    )  # fmt: skip
    write_manifest(str(tmp_path), manifest)
    assert read_manifest(str(tmp_path)).validation == [held]
    assert shard_problems(str(tmp_path), manifest) == []
    (tmp_path / held.path).unlink()
    assert shard_problems(str(tmp_path), manifest) == ["validation-00000.parquet: missing"]
