"""Blocks of whole documents, and the work done on each: cleaning + Mecab pre-tokenization
(vocabulary) or cleaning + tokenization + packing (shards).

A block is about `lines_per_block` kept lines, cut only at a document end (a blank line) once it
has that many, or anywhere at `limit` lines (4x, so one huge document cannot become one huge
block; 1x when documents are packed across). The rule is one sequential scan over the corpus:
`BlockCutter` applies it line by line inside the tasks that build blocks, `advance` applies it to
a chunk's per-document counts on the driver, which learns from it where each chunk's first block
starts and how each block is numbered. A block's packing RNG depends only on its number, so the
output does not depend on how the corpus was cut into chunks or how many workers there are.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from koelectra_dist.corpus.clean import Cleaner
from koelectra_dist.corpus.config import CleaningConfig
from koelectra_dist.corpus.examples import ExampleBuilder, PackedExamples, block_rng, pack_rows
from koelectra_dist.corpus.read import decode_documents
from koelectra_dist.corpus.vocab import Pretokenizer
from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds

# A document longer than this many blocks' worth of lines is cut (an example closes at the cut).
MAX_BLOCK_FACTOR = 4

Block = tuple[int, list[list[bytes]]]
"""A block's number and its documents (each a list of raw lines)."""


def block_limit(lines_per_block: int, split_anywhere: bool) -> int:
    return lines_per_block if split_anywhere else lines_per_block * MAX_BLOCK_FACTOR


@dataclass
class CutState:
    """The scan's state where a chunk starts: kept lines in the open block and its number."""

    lines: int = 0
    index: int = 0


def advance(state: CutState, seg_kept: list[int], seg_blank: list[bool], lines_per_block: int, limit: int) -> bool:
    """Move `state` over a chunk given, for each run of non-blank lines, its kept lines and
    whether a blank line ends it; return whether a block was cut inside the chunk."""
    cut = False
    for kept, blank in zip(seg_kept, seg_blank, strict=True):
        total = state.lines + kept
        cut = cut or total >= limit
        state.index += total // limit
        state.lines = total % limit
        if blank and state.lines >= lines_per_block:
            state.index += 1
            state.lines = 0
            cut = True
    return cut


class BlockCutter:
    """The block rule line by line from a chunk's `start` state. Blocks numbered below `first` are
    counted, not kept (by default the block open at the start: it began in an earlier chunk and is
    that chunk's to build)."""

    def __init__(self, start: CutState, lines_per_block: int, limit: int, first: int | None = None):
        self.state = CutState(start.lines, start.index)
        self.lines_per_block = lines_per_block
        self.limit = limit
        self.first = start.index + (start.lines > 0) if first is None else first
        self.owned = self.state.index >= self.first
        self._docs: list[list[bytes]] = []
        self._doc: list[bytes] = []

    def line(self, text: bytes) -> Block | None:
        """A kept (not duplicate) line; the block it completes, if any."""
        if self.owned:
            self._doc.append(text)
        self.state.lines += 1
        return self._cut() if self.state.lines >= self.limit else None

    def blank(self) -> Block | None:
        self.end_document()
        return self._cut() if self.state.lines >= self.lines_per_block else None

    def end_document(self) -> None:
        if self._doc:
            self._docs.append(self._doc)
            self._doc = []

    def finish(self) -> Block | None:
        """The end of the corpus: the last block, if one is open."""
        return self._cut() if self.state.lines else None

    def _cut(self) -> Block | None:
        self.end_document()
        block = (self.state.index, self._docs) if self.owned else None
        self._docs = []
        self.state.lines = 0
        self.state.index += 1
        self.owned = self.state.index >= self.first
        return block


def pretokenize_block(
    block: list[list[bytes]], counts: Counter[str], cleaning: CleaningConfig, pretokenizer: str
) -> list[str]:
    """Vocabulary pass: the block's cleaned lines, pre-tokenized for WordPiece training."""
    cleaner = Cleaner(cleaning)
    documents = cleaner.clean_documents(decode_documents(block, counts))
    counts.update(cleaner.counts)
    split = Pretokenizer(pretokenizer)
    return [split(line) for doc in documents for line in doc]


@functools.lru_cache(maxsize=2)
def _tokenizer(tokenizer_json: str):  # parsed once per worker process, not once per block
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json)


@dataclass(frozen=True)
class PackOptions:
    cleaning: CleaningConfig
    tokenizer_json: str
    max_length: int
    single_segment_prob: float
    short_seq_prob: float
    flush_documents: bool
    seed: int
    several_examples_per_row: bool = False
    special: SpecialIds = DEFAULT_IDS
    """The tokenizer's [CLS]/[SEP] (framing each example) and [UNK] (counted)."""


def pack_block(block: Block, counts: Counter[str], opts: PackOptions, out: PackedExamples) -> None:
    """Shard pass: clean, tokenize (fast tokenizer, no special tokens) and pack one block into `out`."""
    index, raw = block
    cleaner = Cleaner(opts.cleaning)
    documents = cleaner.clean_documents(decode_documents(raw, counts))
    lines = [line for doc in documents for line in doc]
    # encode_batch_fast: the same ids without character offsets (~20% faster), which packing never reads
    encodings = _tokenizer(opts.tokenizer_json).encode_batch_fast(lines, add_special_tokens=False)
    rng = block_rng(opts.seed, index)
    # several per row: the block's examples are built apart, then packed into rows
    built = PackedExamples() if opts.several_examples_per_row else out
    builder = ExampleBuilder(opts.max_length, rng, opts.single_segment_prob, opts.short_seq_prob, built, opts.special)
    rows, tokens = out.rows, len(out.ids)
    position = 0
    for doc in documents:
        for encoding in encodings[position : position + len(doc)]:
            builder.add_sentence(encoding.ids)
        position += len(doc)
        if opts.flush_documents:
            builder.end_document()
    builder.end_document()  # a block ends with a whole document (or is the corpus' last piece)
    examples = built.rows - (0 if opts.several_examples_per_row else rows)
    if opts.several_examples_per_row:
        pack_rows(built, opts.max_length, out)
    counts.update(cleaner.counts)
    counts.update(
        lines_out=len(lines),
        documents_out=len(documents),
        examples=examples,
        rows=out.rows - rows,
        tokens=len(out.ids) - tokens,
        unk_tokens=out.ids[tokens:].count(opts.special.unk),
        single_segment_draws=builder.single_segment_draws,
        short_target_draws=builder.short_target_draws,
        truncated_tokens=builder.truncated_tokens,
    )
