"""ELECTRA's example packing (build_pretraining_dataset.py's ExampleBuilder), step for step.

Tokenized lines are appended until the target length is reached; then, with probability
`single_segment_prob` the example is one segment, else segment A takes sentences up to
(target - 3) // 2 tokens (an overflowing sentence still goes to A half the time when B is empty)
and B the rest; A is cut to max_length - 2, B to max_length - len(A) - 3; with probability
`short_seq_prob` the next target is randint(5, max_length). The random draws happen in the same
order as ELECTRA's, from a `random.Random` seeded per block, so output is deterministic.

`pack_rows` then (with `corpus.several_examples_per_row`) puts several finished examples in one
row, each kept whole and apart: the pretrain stage gives each its own position ids and attention.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds


@dataclass
class PackedExamples:
    """Rows as flat arrays: row i is ids[offsets[i]:offsets[i+1]] (same for token types).
    `example_ends` (rows of several examples only): the token offset where each example ends, in
    order; every row end is one of them."""

    ids: list[int] = field(default_factory=list)
    token_types: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    example_ends: list[int] | None = None

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def arrays(self, id_dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        return (
            np.asarray(self.ids, dtype=id_dtype),
            np.asarray(self.token_types, dtype=np.uint8),
            np.asarray(self.offsets, dtype=np.int64),
            None if self.example_ends is None else np.asarray(self.example_ends, dtype=np.int64),
        )


class ExampleBuilder:
    """Packs tokenized sentences into `[CLS] A [SEP] B [SEP]` examples of at most `max_length`."""

    def __init__(
        self,
        max_length: int,
        rng: random.Random,
        single_segment_prob: float = 0.1,
        short_seq_prob: float = 0.05,
        out: PackedExamples | None = None,
        special: SpecialIds = DEFAULT_IDS,
    ):
        self.max_length = max_length
        self.special = special
        self.rng = rng
        self.single_segment_prob = single_segment_prob
        self.short_seq_prob = short_seq_prob
        self.out = out if out is not None else PackedExamples()
        self.single_segment_draws = 0
        self.truncated_tokens = 0
        """Tokens cut off because a segment was longer than an example holds (over-long lines)."""
        self.short_target_draws = 0
        self._sentences: list[list[int]] = []
        self._length = 0
        self._target = max_length

    def add_sentence(self, ids: list[int]) -> None:
        self._sentences.append(ids)
        self._length += len(ids)
        if self._length >= self._target:
            self._create_example()

    def end_document(self) -> None:
        """A document boundary (ELECTRA's blank line) closes the current example, if any."""
        if self._length:
            self._create_example()

    def add_lines(self, lines: list[str], encodings: Iterable[list[int]]) -> None:
        """ELECTRA's text format: `encodings` are the ids of the non-blank `lines`, in order; a blank
        line ends a document, and so does the end of `lines`."""
        ids = iter(encodings)
        for line in lines:
            if line:
                self.add_sentence(next(ids))
            else:
                self.end_document()
        self.end_document()

    def _create_example(self) -> None:
        rng = self.rng
        if rng.random() < self.single_segment_prob:
            first_target = 100_000
            self.single_segment_draws += 1
        else:
            first_target = (self._target - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for sentence in self._sentences:
            # Short-circuit order matters: the coin is drawn only when the first two tests fail.
            if (
                not first
                or len(first) + len(sentence) < first_target
                or (not second and len(first) < first_target and rng.random() < 0.5)
            ):
                first += sentence
            else:
                second += sentence
        kept_first = first[: self.max_length - 2]
        kept_second = second[: max(0, self.max_length - len(kept_first) - 3)]
        self.truncated_tokens += len(first) + len(second) - len(kept_first) - len(kept_second)
        first, second = kept_first, kept_second
        self._sentences = []
        self._length = 0
        if rng.random() < self.short_seq_prob:
            self._target = rng.randint(5, self.max_length)
            self.short_target_draws += 1
        else:
            self._target = self.max_length
        self._emit(first, second)

    def _emit(self, first: list[int], second: list[int]) -> None:
        out = self.out
        out.ids.append(self.special.cls)
        out.ids += first
        out.ids.append(self.special.sep)
        out.token_types += [0] * (len(first) + 2)
        if second:
            out.ids += second
            out.ids.append(self.special.sep)
            out.token_types += [1] * (len(second) + 1)
        out.offsets.append(len(out.ids))


def block_rng(seed: int, block_index: int) -> random.Random:
    """The packing RNG of one block: depends only on the seed and the block's position."""
    return random.Random(f"koelectra-pack-{seed}-{block_index}")


def pack_rows(examples: PackedExamples, max_length: int, out: PackedExamples) -> None:
    """Append `examples` (one per row) to `out` as rows of up to `max_length` tokens holding
    several whole examples each: best-fit decreasing (the longest example first, into the row it
    fills most), deterministic. Rows come in the order they were opened, their examples in the
    order they went in; `out.example_ends` records every example's end."""
    ends = out.example_ends if out.example_ends is not None else []
    out.example_ends = ends
    bounds = examples.offsets
    lengths = [bounds[i + 1] - bounds[i] for i in range(examples.rows)]
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row), sorted: bisect finds the tightest fit
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        at = bisect.bisect_left(room, (lengths[i], -1))
        if at < len(room):
            free, row = room.pop(at)
            rows[row].append(i)
        else:
            free, row = max_length, len(rows)
            rows.append([i])
        if free - lengths[i] > 0:
            bisect.insort(room, (free - lengths[i], row))
    for row in rows:
        for i in row:
            out.ids += examples.ids[bounds[i] : bounds[i + 1]]
            out.token_types += examples.token_types[bounds[i] : bounds[i + 1]]
            ends.append(len(out.ids))
        out.offsets.append(len(out.ids))
