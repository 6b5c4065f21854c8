"""Deduplication by hash range equals one set over the corpus; sample keys are seeded and uniform."""

from __future__ import annotations

import random

import numpy as np
import pytest

from koelectra_dist.corpus import dedup


def one_set(lines: list[bytes]) -> list[int]:
    seen: set[bytes] = set()
    out = []
    for i, line in enumerate(lines):
        if line in seen:
            out.append(i)
        seen.add(line)
    return out


@pytest.mark.parametrize("partitions", [1, 3, 16])
def test_hash_ranges_find_the_later_occurrences_of_one_corpus_wide_set(partitions):
    rng = random.Random(partitions)
    lines = [f"리뷰 {rng.randrange(400)}".encode() for _ in range(3000)]
    cuts = sorted(rng.sample(range(1, 3000), 6))
    chunks = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, 3000], strict=True)]
    parts = [dedup.split_parts(dedup.hash_lines(chunk), partitions) for chunk in chunks]
    assert all(len(p) == partitions for p in parts)
    found = [dedup.later_occurrences([p[r] for p in parts]) for r in range(partitions)]
    per_chunk = [np.sort(np.concatenate([f[c] for f in found])) for c in range(len(chunks))]
    starts = [0, *cuts]
    assert [s + int(i) for s, dups in zip(starts, per_chunk, strict=True) for i in dups] == one_set(lines)


def test_a_duplicate_needs_all_128_bits_equal():
    """Lines whose hashes share one 64-bit half are distinct lines: both halves are compared."""
    hashes = np.zeros(4, dedup.HASH)
    hashes["hi"] = [7, 7, 7, 9]
    hashes["lo"] = [1, 2, 1, 1]  # the third repeats the first; the second and fourth share one half
    (part,) = dedup.split_parts(hashes, 1)
    (later,) = dedup.later_occurrences([part])
    assert later.tolist() == [2]


def test_hashes_are_128_bit_and_distinct():
    hashes = dedup.hash_lines([str(i).encode() for i in range(100_000)])
    assert hashes.dtype.itemsize == 16 and len(np.unique(hashes)) == 100_000


def test_sample_keys_are_seeded_shared_by_copies_and_uniform():
    lines = [str(i).encode() for i in range(20_000)]
    hashes = dedup.hash_lines(lines + lines[:10])
    a, b = dedup.sample_keys(hashes, seed=1), dedup.sample_keys(hashes, seed=2)
    assert (a[20_000:] == a[:10]).all() and not (a == b).all()
    chosen = np.flatnonzero(a[:20_000] <= dedup.smallest(a, 2000)[-1])
    assert len(chosen) == 2000
    assert 0.45 < np.mean(chosen < 10_000) < 0.55  # both halves of the corpus
