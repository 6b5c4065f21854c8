"""Exact deduplication of raw lines across the cluster, and the vocabulary sample's keys.

Each line is hashed to 128 bits (blake2b). Two distinct lines share a hash with probability
2^-128, so among n distinct lines a false duplicate happens with probability about n^2 / 2^129:
1e-20 for 3 billion lines. The read task of each chunk splits its hashes by hash range into
`partitions` parts; one task per part gathers that part from every chunk, in corpus order, and
marks every occurrence of a hash but the first. The result equals one set over the whole corpus
in corpus order, and a process holds only its part: about 24 bytes (hash + position) per line of
its range, plus the sort's index.
"""

from __future__ import annotations

import hashlib

import numpy as np

HASH = np.dtype([("hi", "<u8"), ("lo", "<u8")])
# A part of one chunk: the hashes in one range and the chunk-local line index of each.
PART = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("line", "<u4")])
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def hash_lines(lines: list[bytes]) -> np.ndarray:
    """128-bit hashes of `lines` (a HASH array)."""
    digests = b"".join(hashlib.blake2b(line, digest_size=16).digest() for line in lines)
    return np.frombuffer(digests, HASH).copy()


def split_parts(hashes: np.ndarray, partitions: int) -> list[np.ndarray]:
    """`hashes` (in line order) as `partitions` PART arrays by hash range, each in line order."""
    parts = np.empty(len(hashes), PART)
    parts["hi"], parts["lo"], parts["line"] = hashes["hi"], hashes["lo"], np.arange(len(hashes))
    owner = ((hashes["hi"] >> np.uint64(32)) * np.uint64(partitions)) >> np.uint64(32)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(partitions + 1))
    return [parts[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def later_occurrences(parts: list[np.ndarray]) -> list[np.ndarray]:
    """One hash range's parts from every chunk, in corpus order -> per chunk, the sorted local
    indices of its lines whose hash occurred earlier in the corpus."""
    sizes = [len(p) for p in parts]
    every = np.concatenate(parts) if parts else np.empty(0, PART)
    chunk = np.repeat(np.arange(len(parts)), sizes)
    order = np.lexsort((every["lo"], every["hi"]))  # stable: corpus order within equal hashes
    ranked = every[order]
    repeat = np.zeros(len(every), bool)
    repeat[1:] = (ranked["hi"][1:] == ranked["hi"][:-1]) & (ranked["lo"][1:] == ranked["lo"][:-1])
    dup = order[repeat]
    dup_chunk, dup_line = chunk[dup], every["line"][dup]
    return [np.sort(dup_line[dup_chunk == c]) for c in range(len(parts))]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (x ^ (x >> np.uint64(31))) & _MASK64


def sample_keys(hashes: np.ndarray, seed: int) -> np.ndarray:
    """Each line's sampling key: a seeded function of its content, so all copies of a line share
    it and the lines of smallest keys are a uniform sample of the distinct lines."""
    salt = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    return _mix(hashes["lo"] ^ salt)


def smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """The `k` smallest distinct keys, sorted."""
    return np.unique(keys)[:k]
