"""The corpus stage's Ray tasks: every byte of the corpus is read, hashed, cleaned, tokenized and
written by these; the driver only plans them and passes object refs between them.

- `survey_chunk`: read a chunk once: hash its lines (split by hash range for deduplication), its
  per-document line counts, its smallest vocabulary-sample keys.
- `find_duplicates`: one hash range from every chunk -> each chunk's later occurrences.
- `chunk_segments`: a chunk's per-document counts of kept lines (what the driver's block scan needs).
- `pack_chunks` / `pretokenize_chunks`: re-read a chunk (and the start of the next ones while its
  last block is open), rebuild its blocks and pack or pre-tokenize them.
- `sample_chunk`: the chunk's lines whose sample key is under the threshold, pre-tokenized.
- `write_shard`: rows of packed output to one Parquet shard, straight to its destination.
- `take_rows`: a job's held-out rows copied out, so that its whole output need not be kept for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from koelectra_dist.corpus import dedup, shards
from koelectra_dist.corpus.blocks import Block, BlockCutter, CutState, PackOptions, pack_block, pretokenize_block
from koelectra_dist.corpus.clean import Cleaner
from koelectra_dist.corpus.config import CleaningConfig
from koelectra_dist.corpus.examples import PackedExamples
from koelectra_dist.corpus.read import Chunk, ReadOptions, iter_chunk_lines
from koelectra_dist.corpus.shards import PackedArrays, ShardFile
from koelectra_dist.corpus.vocab import Pretokenizer


@dataclass(frozen=True)
class Segments:
    """A chunk as runs of non-blank lines: raw and kept lines of each, whether a blank line ends it."""

    raw: np.ndarray
    kept: np.ndarray
    blank: np.ndarray


def _runs(lines: Iterator[bytes], text: list[bytes]) -> tuple[list[int], list[bool]]:
    """Collect the non-blank lines into `text`; return the runs' lengths and blank-line ends."""
    raw: list[int] = []
    blank: list[bool] = []
    run = 0
    for line in lines:
        if line:
            text.append(line)
            run += 1
        else:
            raw.append(run)
            blank.append(True)
            run = 0
    raw.append(run)
    blank.append(False)
    return raw, blank


@ray.remote
def survey_chunk(chunk: Chunk, options: ReadOptions, partitions: int, sample_k: int, seed: int) -> list[Any]:
    """[info, (run lengths, blank ends), part 0, ..., part P-1]: run with num_returns=P+2."""
    counts: Counter[str] = Counter()
    text: list[bytes] = []
    raw, blank = _runs(iter_chunk_lines(chunk, options, counts), text)
    counts["lines_read"] = len(text)
    hashes = dedup.hash_lines(text)
    del text
    keys = dedup.smallest(dedup.sample_keys(hashes, seed), sample_k) if sample_k else None
    skipped = [chunk.uri] if counts.pop("skipped_binary", 0) else []
    info = {"counts": counts, "skipped": skipped, "keys": keys}
    runs = (np.asarray(raw, np.uint32), np.asarray(blank, bool))
    return [info, runs, *dedup.split_parts(hashes, partitions)]


@ray.remote
def find_duplicates(*parts: np.ndarray) -> list[np.ndarray] | np.ndarray:
    """Run with num_returns=len(parts)."""
    found = dedup.later_occurrences(list(parts))
    return found if len(found) > 1 else found[0]


@ray.remote(num_returns=2)
def chunk_segments(runs: tuple[np.ndarray, np.ndarray], *found: np.ndarray) -> tuple[Segments, np.ndarray]:
    """The chunk's Segments and its sorted duplicate line indices."""
    raw, blank = runs
    dups = np.sort(np.concatenate(found)) if found else np.empty(0, np.uint32)
    ends = np.cumsum(raw)
    kept = raw - np.diff(np.searchsorted(dups, ends), prepend=0)
    return Segments(raw, kept.astype(np.uint32), blank), dups


@dataclass(frozen=True)
class BlockJob:
    """What a pack or pre-tokenize task rebuilds: blocks [lo, hi) of those that start in
    chunks[0], read from `start`; the chunks after it hold the rest of block hi-1."""

    start: CutState
    blocks: tuple[int, int]
    chunks: list[Chunk]
    options: ReadOptions
    lines_per_block: int
    limit: int


def _blocks(job: BlockJob, dups: tuple[np.ndarray, ...]) -> Iterator[Block]:
    """The job's blocks; `dups` are its chunks' duplicate line indices."""
    hi = job.blocks[1]
    cutter = BlockCutter(job.start, job.lines_per_block, job.limit, first=job.blocks[0])
    for chunk, dup in zip(job.chunks, dups, strict=True):
        skip = set(dup.tolist())
        index = 0
        for line in iter_chunk_lines(chunk, job.options, Counter()):
            if line:
                index += 1
                block = None if index - 1 in skip else cutter.line(line)
            else:
                block = cutter.blank()
            if block is not None:
                yield block
                if block[0] + 1 >= hi:
                    return
        if chunk.last_of_file:
            cutter.end_document()
    block = cutter.finish()  # the corpus ended with block hi-1 open (the driver passed every chunk)
    if block is not None:
        yield block


@ray.remote(num_returns=2)
def pack_chunks(
    job: BlockJob, opts: PackOptions, id_dtype: str, *dups: np.ndarray
) -> tuple[Counter[str], PackedArrays]:
    counts: Counter[str] = Counter()
    out = PackedExamples()
    for block in _blocks(job, dups):
        pack_block(block, counts, opts, out)
    return counts, out.arrays(id_dtype)


@ray.remote
def pretokenize_chunks(
    job: BlockJob, cleaning: CleaningConfig, pretokenizer: str, *dups: np.ndarray
) -> tuple[Counter[str], list[str]]:
    counts: Counter[str] = Counter()
    lines: list[str] = []
    for _, block in _blocks(job, dups):
        lines += pretokenize_block(block, counts, cleaning, pretokenizer)
    return counts, lines


@ray.remote
def sample_chunk(
    chunk: Chunk,
    options: ReadOptions,
    threshold: int,
    seed: int,
    cleaning: CleaningConfig,
    pretokenizer: str,
    dups: np.ndarray,
) -> list[str]:
    """The chunk's first occurrences of lines whose sample key is at most `threshold`, each cleaned
    on its own and pre-tokenized."""
    text = [line for line in iter_chunk_lines(chunk, options, Counter()) if line]
    keys = dedup.sample_keys(dedup.hash_lines(text), seed)
    chosen = keys <= np.uint64(threshold)
    chosen[dups] = False
    cleaner, split = Cleaner(cleaning), Pretokenizer(pretokenizer)
    out = []
    for i in np.flatnonzero(chosen):
        try:
            cleaned = cleaner.clean(text[i].decode("utf-8"))
        except UnicodeDecodeError:
            continue
        out += [split(line) for line in cleaned]
    return out


@ray.remote
def take_rows(packed: PackedArrays, rows: list[int]) -> PackedArrays:
    return shards.take_rows(packed, rows)


@ray.remote
def write_shard(
    shards_uri: str, index: int, validation: bool, bounds: list[tuple[int, int]], *packed: PackedArrays
) -> ShardFile:
    pieces = [(p, lo, hi) for p, (lo, hi) in zip(packed, bounds, strict=True)]
    return shards.write_shard(shards_uri, index, pieces, validation)
