"""The block rule: whole documents, a huge document cut at 4 blocks, and the driver's per-document
scan agreeing with the tasks' line-by-line cutter wherever a chunk starts."""

from __future__ import annotations

import random

import pytest

from koelectra_dist.corpus.blocks import BlockCutter, CutState, advance, block_limit


def cut(lines: list[bytes | None], lines_per_block: int, limit: int, start: CutState | None = None):
    """Run the cutter over `lines` (None: a duplicate, b'': a blank line); blocks and end state."""
    cutter = BlockCutter(start or CutState(), lines_per_block, limit)
    blocks = []
    for line in lines:
        if line is None:
            continue
        block = cutter.blank() if line == b"" else cutter.line(line)
        if block is not None:
            blocks.append(block)
    return blocks, cutter


def runs(lines: list[bytes | None]) -> tuple[list[int], list[bool]]:
    kept, blank, run = [], [], 0
    for line in lines:
        if line == b"":
            kept.append(run)
            blank.append(True)
            run = 0
        elif line is not None:
            run += 1
    return [*kept, run], [*blank, False]


def test_blocks_hold_whole_documents():
    docs = [[f"문서{d} {i}".encode() for i in range(3)] for d in range(10)]
    lines = [line for doc in docs for line in [*doc, b""]]
    blocks, cutter = cut(lines, 4, block_limit(4, False))
    assert [len(docs) for _, docs in blocks] == [2] * 5  # 6 lines >= 4: cut after the second document
    assert [doc for _, block in blocks for doc in block] == docs
    assert [i for i, _ in blocks] == list(range(5)) and cutter.finish() is None


def test_a_huge_document_is_cut_every_four_blocks_unless_cut_anywhere():
    lines = [f"줄 {i}".encode() for i in range(50)] + [b"", b"end"]
    blocks, cutter = cut(lines, 5, block_limit(5, False))
    sizes = [sum(map(len, docs)) for _, docs in blocks] + [sum(map(len, cutter.finish()[1]))]
    assert sizes == [20, 20, 10, 1]
    blocks, cutter = cut(lines, 5, block_limit(5, True))
    assert len(blocks) + (cutter.finish() is not None) == 11


@pytest.mark.parametrize("seed", range(5))
def test_driver_scan_agrees_with_the_line_cutter_from_any_chunk_start(seed):
    rng = random.Random(seed)
    lines: list[bytes | None] = []
    for _ in range(400):
        lines += [b""] * rng.choice([1, 1, 2]) if rng.random() < 0.2 else [None if rng.random() < 0.1 else b"x"]
    lines_per_block = rng.choice([1, 3, 7])
    limit = block_limit(lines_per_block, rng.random() < 0.5)
    whole, cutter = cut(lines, lines_per_block, limit)
    for split in sorted(rng.sample(range(len(lines)), 5)):
        state = CutState()
        advance(state, *runs(lines[:split]), lines_per_block, limit)
        head, head_cutter = cut(lines[:split], lines_per_block, limit)
        assert (state.lines, state.index) == (head_cutter.state.lines, head_cutter.state.index)
        tail, tail_cutter = cut(lines[split:], lines_per_block, limit, start=state)
        # From the scan's state the rest is cut exactly as in one pass; the open block is not its own.
        assert [i for i, _ in tail] == [i for i, _ in whole if i >= state.index + (state.lines > 0)]
        assert tail == [b for b in whole if b[0] >= state.index + (state.lines > 0)]
        assert (tail_cutter.state.lines, tail_cutter.state.index) == (cutter.state.lines, cutter.state.index)
