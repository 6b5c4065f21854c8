"""ELECTRA packing: equal to a literal transcription of ELECTRA's ExampleBuilder, invariants, rates."""

from __future__ import annotations

import gzip
import itertools
import random

import numpy as np
import pytest
from helpers import require_shared_data

from koelectra_dist.corpus.config import VocabConfig
from koelectra_dist.corpus.examples import ExampleBuilder, block_rng
from koelectra_dist.corpus.vocab import build_tokenizer, train_vocab
from koelectra_dist.tokens import CLS_ID, SEP_ID


class ElectraReference:
    """google-research/electra build_pretraining_dataset.ExampleBuilder, on token id lists, with
    the module-level `random` replaced by an explicit generator."""

    def __init__(self, max_length, rng):
        self._current_sentences, self._current_length = [], 0
        self._max_length = self._target_length = max_length
        self.rng = rng

    def add_line(self, ids):
        if not ids and self._current_length != 0:  # empty lines separate docs
            return self._create_example()
        self._current_sentences.append(ids)
        self._current_length += len(ids)
        if self._current_length >= self._target_length:
            return self._create_example()
        return None

    def _create_example(self):
        if self.rng.random() < 0.1:
            first_segment_target_length = 100000
        else:
            first_segment_target_length = (self._target_length - 3) // 2
        first_segment, second_segment = [], []
        for sentence in self._current_sentences:
            if (
                len(first_segment) == 0
                or len(first_segment) + len(sentence) < first_segment_target_length
                or (
                    len(second_segment) == 0
                    and len(first_segment) < first_segment_target_length
                    and self.rng.random() < 0.5
                )
            ):
                first_segment += sentence
            else:
                second_segment += sentence
        first_segment = first_segment[: self._max_length - 2]
        second_segment = second_segment[: max(0, self._max_length - len(first_segment) - 3)]
        self._current_sentences, self._current_length = [], 0
        if self.rng.random() < 0.05:
            self._target_length = self.rng.randint(5, self._max_length)
        else:
            self._target_length = self._max_length
        input_ids = [CLS_ID] + first_segment + [SEP_ID]
        segment_ids = [0] * len(input_ids)
        if second_segment:
            input_ids += second_segment + [SEP_ID]
            segment_ids += [1] * (len(second_segment) + 1)
        return input_ids, segment_ids


def synthetic_documents(seed: int, n_docs: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    return [
        [
            [rng.randrange(5, 1000) for _ in range(rng.choice([0, 1, 3, 8, 20, 40, 90, 300]) + 1)]
            for _ in range(rng.randrange(1, 30))
        ]
        for _ in range(n_docs)
    ]


def build(documents, max_length, seed):
    builder = ExampleBuilder(max_length, random.Random(seed))
    for doc in documents:
        for ids in doc:
            builder.add_sentence(ids)
        builder.end_document()
    ids, types, offsets, _ = builder.out.arrays("uint16")
    return [(ids[a:b].tolist(), types[a:b].tolist()) for a, b in itertools.pairwise(offsets)], builder


@pytest.mark.parametrize("max_length", [16, 64, 128])
def test_identical_to_electra_reference(max_length):
    documents = synthetic_documents(7, 200)
    ours, _ = build(documents, max_length, seed=3)
    reference = ElectraReference(max_length, random.Random(3))
    expected = []
    for doc in documents:
        for ids in doc + [[]]:  # ELECTRA's blank line after each document
            example = reference.add_line(ids)
            if example:
                expected.append(example)
    assert len(ours) == len(expected) > 50
    assert ours == expected


def test_layout_lengths_and_token_types():
    examples, _ = build(synthetic_documents(11, 300), 64, seed=5)
    for ids, types in examples:
        assert len(ids) <= 64 and len(ids) == len(types)
        assert ids[0] == CLS_ID and ids[-1] == SEP_ID
        seps = [i for i, t in enumerate(ids) if t == SEP_ID]
        assert len(seps) in (1, 2)
        first_sep = seps[0]
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert CLS_ID not in ids[1:]


def test_deterministic_per_seed_and_block():
    docs = synthetic_documents(1, 50)
    assert build(docs, 128, 9)[0] == build(docs, 128, 9)[0]
    assert build(docs, 128, 9)[0] != build(docs, 128, 10)[0]
    assert block_rng(1, 2).random() == block_rng(1, 2).random() != block_rng(1, 3).random()


def test_document_end_flushes_example():
    builder = ExampleBuilder(64, random.Random(0))
    builder.add_sentence([10, 11])
    builder.end_document()
    builder.add_sentence([12])
    builder.end_document()
    builder.end_document()  # nothing pending: no empty example
    assert builder.out.rows == 2
    assert builder.out.ids == [CLS_ID, 10, 11, SEP_ID, CLS_ID, 12, SEP_ID]


def test_tokens_an_example_cannot_hold_are_counted():
    builder = ExampleBuilder(64, random.Random(0), single_segment_prob=0.0, short_seq_prob=0.0)
    builder.add_sentence(list(range(10, 110)))  # one line of 100 tokens: an example of its own
    builder.add_sentence(list(range(10, 30)))
    builder.end_document()
    assert builder.out.rows == 2 and len(builder.out.ids) == 64 + 22
    assert builder.truncated_tokens == 100 - (64 - 2)


def test_add_lines_reads_blank_lines_as_document_ends():
    builder = ExampleBuilder(64, random.Random(0))
    builder.add_lines(["a b", "c", "", "", "d"], [[10, 11], [12], [13]])
    assert builder.out.ids == [CLS_ID, 10, 11, 12, SEP_ID, CLS_ID, 13, SEP_ID]


def test_rates_on_real_korean_reviews():
    path = require_shared_data("nsmc", "corpus.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for _, line in zip(range(60_000), f, strict=False)]
    vocab = train_vocab(
        (line for line in lines[:20_000] if line), VocabConfig(pretokenizer="whitespace", num_unused=0), 4000
    )
    tokenizer = build_tokenizer(vocab)
    encodings = tokenizer.encode_batch([line for line in lines if line], add_special_tokens=False)
    builder = ExampleBuilder(128, random.Random(42))
    builder.add_lines(lines, (encoding.ids for encoding in encodings))
    rows = builder.out.rows
    assert rows > 4000
    assert builder.single_segment_draws / rows == pytest.approx(0.10, abs=0.015)
    assert builder.short_target_draws / rows == pytest.approx(0.05, abs=0.01)
    lengths = np.diff(builder.out.offsets)
    assert lengths.max() <= 128
    # Most examples reach the target: long reviews fill 128 tokens, documents end the rest.
    assert (lengths >= 100).mean() > 0.5
