"""Shards shaped like a KoELECTRA corpus, without its text: random token ids in sentences of
Korean-news lengths, in blocks of 5,000 lines packed across documents (`corpus.flush_documents=false`,
as Base v3 ships: only a block's end closes an example), by the corpus stage's own `ExampleBuilder` (ELECTRA's packing, with its
intentional short examples: `short_seq_prob` 0.05) and written by its own `write_shard`. So the row
lengths, and with them the share of short rows, are what the corpus stage makes of such a corpus, at any
`max_length` (at 512: 5.3% of rows are short, 5% of them on purpose).

Used by gpu_check's real-stream variant and by bench_masked_batches."""

from __future__ import annotations

import random

import numpy as np

from koelectra_dist.corpus.examples import ExampleBuilder
from koelectra_dist.corpus.shards import id_dtype, write_shard

SENTENCE_TOKENS = (8, 60)  # tokens per sentence, uniform: a Korean news sentence after Mecab + WordPiece
BLOCK_SENTENCES = 5_000  # corpus.lines_per_block


def shaped_rows(rows: int, max_length: int, vocab_size: int, seed: int = 0, short_seq_prob: float = 0.05):
    """At least `rows` rows as the corpus stage packs them: (ids, token types, offsets, None)."""
    rng = np.random.default_rng(seed)
    builder = ExampleBuilder(max_length, random.Random(seed), short_seq_prob=short_seq_prob)
    while builder.out.rows < rows:
        lengths = rng.integers(SENTENCE_TOKENS[0], SENTENCE_TOKENS[1] + 1, BLOCK_SENTENCES)
        tokens = rng.integers(5, vocab_size, int(lengths.sum()))
        for sentence in np.split(tokens, np.cumsum(lengths)[:-1]):
            builder.add_sentence(sentence.tolist())
            if builder.out.rows >= rows:
                break
        builder.end_document()
    ids, types, offsets, _ = builder.out.arrays(id_dtype(vocab_size))
    return ids, types, offsets, None


def write_shaped_shards(uri: str, shards: int, rows_per_shard: int, max_length: int, vocab_size: int, seed: int = 0):
    """Write `shards` shards of `rows_per_shard` rows each under `uri`; return (shard URIs, row counts)."""
    packed = shaped_rows(shards * rows_per_shard, max_length, vocab_size, seed)
    files = [write_shard(uri, i, [(packed, i * rows_per_shard, (i + 1) * rows_per_shard)]) for i in range(shards)]
    return [f"{uri.rstrip('/')}/{f.path}" for f in files], [f.rows for f in files]
