"""Several examples per row (`corpus.several_examples_per_row`): rows packed from whole examples,
stored with their lengths, batched with per-example position ids, and attention that never crosses
from one example to another in either tower."""

from __future__ import annotations

import io
import itertools
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TINY_MODEL, no_dropout

from koelectra_dist import storage
from koelectra_dist.config import ModelConfig
from koelectra_dist.corpus.examples import ExampleBuilder, PackedExamples, pack_rows
from koelectra_dist.corpus.shards import write_shard
from koelectra_dist.errors import DataError
from koelectra_dist.pretrain.data import collate, read_shard
from koelectra_dist.pretrain.model import ElectraPretrainer, MaskedBatch, example_attention_mask
from koelectra_dist.tokens import CLS_ID, MASK_ID, SEP_ID


def built_examples(max_length: int, seed: int = 0) -> PackedExamples:
    """ELECTRA examples of 40 short documents, each closed at its end (many shorter than a row)."""
    rng = random.Random(seed)
    builder = ExampleBuilder(max_length, random.Random(seed))
    for _ in range(40):
        for _ in range(rng.randint(1, 12)):
            builder.add_sentence([rng.randint(5, 90) for _ in range(rng.randint(1, 9))])
        builder.end_document()
    return builder.out


def examples_of(packed: PackedExamples) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    bounds = packed.offsets if packed.example_ends is None else [0, *packed.example_ends]
    return [(tuple(packed.ids[a:b]), tuple(packed.token_types[a:b])) for a, b in itertools.pairwise(bounds) if a != b]


@pytest.mark.parametrize("max_length", [16, 64])
def test_rows_hold_whole_examples_and_lose_none(max_length):
    examples = built_examples(max_length)
    out = PackedExamples()
    pack_rows(examples, max_length, out)
    assert sorted(examples_of(out)) == sorted(examples_of(examples))
    rows = np.diff(out.offsets)
    assert rows.max() <= max_length and set(out.offsets[1:]) <= set(out.example_ends)
    # best-fit decreasing: fewer rows than one example per row, and all but a few nearly full
    assert out.rows < examples.rows and (rows > max_length * 0.8).mean() > 0.8
    again = PackedExamples()
    pack_rows(built_examples(max_length), max_length, again)
    assert again == out  # deterministic


def test_shard_round_trip_keeps_example_lengths(tmp_path):
    examples = built_examples(32)
    out = PackedExamples()
    pack_rows(examples, 32, out)
    arrays = out.arrays("uint16")
    # two pieces of the same packed output in one shard, the second not starting at row 0
    write_shard(str(tmp_path), 0, [(arrays, 0, 3), (arrays, 3, out.rows)])
    shard = read_shard(str(tmp_path / "part-00000.parquet"))
    ends = [0, *out.example_ends]
    for r in range(out.rows):
        ids, types, lengths = shard.row(r)
        assert ids.tolist() == out.ids[out.offsets[r] : out.offsets[r + 1]]
        inside = [e for e in ends if out.offsets[r] <= e <= out.offsets[r + 1]]
        assert lengths.tolist() == np.diff(inside).tolist()
        assert all(ids[start] == CLS_ID for start in np.cumsum(lengths) - lengths)


def test_shards_of_one_example_per_row_read_as_before(tmp_path):
    examples = built_examples(32)
    write_shard(str(tmp_path), 0, [(examples.arrays("uint16"), 0, examples.rows)])
    shard = read_shard(str(tmp_path / "part-00000.parquet"))
    assert shard.example_lengths is None and shard.row(0)[2] is None
    batch = collate([shard.row(r) for r in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}


def test_example_lengths_that_do_not_add_up_are_refused(tmp_path):
    table = pa.table(
        {
            "input_ids": pa.array([[CLS_ID, 7, SEP_ID, CLS_ID, SEP_ID]], pa.list_(pa.uint16())),
            "token_type_ids": pa.array([[0] * 5], pa.list_(pa.uint8())),
            "example_lengths": pa.array([[3, 3]], pa.list_(pa.int32())),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(str(tmp_path / "bad.parquet"), buf.getvalue())
    with pytest.raises(DataError, match="example_lengths do not add up"):
        read_shard(str(tmp_path / "bad.parquet"))


def test_collate_gives_each_example_its_positions_and_index():
    row = (np.arange(5, 15, dtype=np.uint16), np.array([0, 0, 1, 1, 0, 0, 0, 1, 1, 1], np.uint8), np.array([4, 6]))
    single = (np.arange(5, 10, dtype=np.uint16), np.zeros(5, np.uint8), None)
    batch = collate([row, single])
    assert batch["position_ids"][0, :10].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
    assert batch["example_ids"][0].tolist() == [0] * 4 + [1] * 6 + [-1] * 6
    assert batch["position_ids"][1, :5].tolist() == [0, 1, 2, 3, 4]
    assert batch["example_ids"][1].tolist() == [0] * 5 + [-1] * 11
    assert batch["attention_mask"][1].sum() == 5
    mask = example_attention_mask(batch["example_ids"])
    assert mask.shape == (2, 1, 16, 16) and mask.any(-1).all()  # no empty attention row
    assert not mask[0, 0, :4, 4:].any() and mask[0, 0, 4:10, 4:10].all() and not mask[0, 0, 4:10, 10:].any()


TINY = no_dropout(TINY_MODEL)


def example(length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`[CLS] A [SEP] B [SEP]` of `length` tokens, with its token types."""
    ids = torch.randint(5, 97, (length,), generator=gen)
    middle = length // 2
    ids[0], ids[middle], ids[-1] = CLS_ID, SEP_ID, SEP_ID
    return ids, (torch.arange(length) > middle).long()


def row_batch(parts: list[tuple[torch.Tensor, torch.Tensor]], width: int) -> dict[str, torch.Tensor]:
    rows = [
        (
            torch.cat([p[0] for p in parts]).numpy(),
            torch.cat([p[1] for p in parts]).numpy(),
            np.array([len(p[0]) for p in parts]),
        )
    ]
    return collate(rows, pad_to_multiple=width)


@pytest.mark.parametrize("train", [False, True])
def test_attention_never_crosses_examples(train):
    """Example A's outputs in both towers are the same next to B as next to other examples, and
    the same as A alone in its own row (positions from 0 in each example). `train`: CPU training
    with dropout, whose attention is `dropout.attention` (the RNG is reseeded before each pass and
    the shapes are the same, so the dropout draws are too)."""
    dropout = {"hidden_dropout": 0.1, "attention_dropout": 0.1} if train else {}
    torch.manual_seed(0)
    model = ElectraPretrainer(ModelConfig(**{**TINY.__dict__, **dropout})).train(train)
    gen = torch.Generator().manual_seed(1)
    a, b, b2 = example(11, gen), example(17, gen), example(9, gen)
    width = 40
    slots = torch.tensor([[2, 5, 7]])  # masked positions inside A, the row's first example

    def outputs(parts):
        batch = row_batch(parts, width)
        towers_mask = (
            example_attention_mask(batch["example_ids"]) if "example_ids" in batch else batch["attention_mask"]
        )
        ids = batch["input_ids"].clone()
        masked = MaskedBatch(
            input_ids=ids.scatter(1, slots, MASK_ID),
            positions=slots,
            valid=torch.ones_like(slots, dtype=torch.bool),
            targets=ids.gather(1, slots),
        )
        position_ids = batch.get("position_ids")
        outs = []
        for run in (
            lambda: model.generator_logits(masked, towers_mask, batch["token_type_ids"], position_ids),
            lambda: model.discriminator_logits(batch["input_ids"], towers_mask, batch["token_type_ids"], position_ids),
            lambda: model.generator.electra(
                masked.input_ids, towers_mask, batch["token_type_ids"], position_ids
            ).last_hidden_state[:, :11],
            lambda: model.discriminator.electra(
                batch["input_ids"], towers_mask, batch["token_type_ids"], position_ids
            ).last_hidden_state[:, :11],
        ):
            torch.manual_seed(3)
            with torch.no_grad():
                outs.append(run())
        outs[1] = outs[1][:, :11]
        return outs

    with_b, with_b2, alone = outputs([a, b]), outputs([a, b2, b]), outputs([a])
    # generator logits at A's masked slots, discriminator logits of A's tokens, both towers' hidden states
    for got in (with_b2, alone):
        for mine, reference in zip(got, with_b, strict=True):
            torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
    # and the mask matters: without it, B changes A's hidden states
    batch = row_batch([a, b], width)
    torch.manual_seed(3)
    with torch.no_grad():
        leaky = model.discriminator.electra(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert not torch.allclose(leaky.last_hidden_state[:, :11], with_b[3], atol=1e-3)


def test_forward_with_several_examples_masks_only_real_tokens():
    torch.manual_seed(0)
    model = ElectraPretrainer(TINY)
    gen = torch.Generator().manual_seed(2)
    batch = collate(
        [
            (torch.cat([example(12, gen)[0], example(20, gen)[0]]).numpy(), np.zeros(32, np.uint8), np.array([12, 20])),
            (example(9, gen)[0].numpy(), np.zeros(9, np.uint8), None),
        ]
    )
    out = model(**batch)
    real = batch["attention_mask"].bool()
    chosen = torch.zeros_like(real).scatter(1, out.masked.positions, out.masked.valid)
    assert not (chosen & ~real).any() and not (out.replaced & ~real).any()
    assert not torch.isin(batch["input_ids"][chosen], torch.tensor([CLS_ID, SEP_ID])).any()
    assert torch.isfinite(out.loss) and out.masked.valid.sum() == round(0.15 * 32) + round(0.15 * 9)
    out.loss.backward()
