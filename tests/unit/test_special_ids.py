"""Special-token ids come from the shards' tokenizer, not from 0-4 (KoBERT: [UNK]=0, [PAD]=1)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import TINY_MODEL

from koelectra_dist.corpus.examples import ExampleBuilder
from koelectra_dist.corpus.shards import ShardManifest
from koelectra_dist.pretrain.data import collate
from koelectra_dist.pretrain.model import ElectraPretrainer, mask_tokens
from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds

KOBERT = SpecialIds(pad=1, unk=0, cls=2, sep=3, mask=4)
SHIFTED = SpecialIds(pad=7, unk=8, cls=9, sep=10, mask=11)  # none of them 0-4


def test_default_ids_are_the_trained_vocabularys():
    assert DEFAULT_IDS.as_tuple() == (0, 1, 2, 3, 4)


def test_from_tokenizer_names_what_is_missing():
    class Tok:
        pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = 1, 0, 2, 3, None

    with pytest.raises(ValueError, match="mask_token"):
        SpecialIds.from_tokenizer(Tok())
    Tok.mask_token_id = 4
    assert SpecialIds.from_tokenizer(Tok()) == KOBERT


def test_packer_frames_examples_with_the_given_ids():
    builder = ExampleBuilder(64, random.Random(0), single_segment_prob=0.0, short_seq_prob=0.0, special=SHIFTED)
    builder.add_lines(["a", "b", ""], [[20, 21], [22]])
    assert builder.out.ids[0] == SHIFTED.cls and builder.out.ids[-1] == SHIFTED.sep
    assert 2 not in builder.out.ids and 3 not in builder.out.ids


def test_masking_skips_and_uses_the_given_ids():
    torch.manual_seed(0)
    ids = torch.randint(12, 100, (16, 40))
    ids[:, 0], ids[:, -1] = SHIFTED.cls, SHIFTED.sep
    ids[:, 20] = SHIFTED.mask
    ids[:, 30:39] = SHIFTED.pad
    ids[:, 5] = 0  # the project's [PAD] id, an ordinary token here: it may be chosen
    real = ids != SHIFTED.pad
    chosen = torch.zeros_like(ids, dtype=torch.bool)
    for _ in range(20):
        masked = mask_tokens(ids, real, 0.3, 40, SHIFTED)
        picked = masked.positions[masked.valid]
        rows = torch.arange(16).unsqueeze(1).expand_as(masked.positions)[masked.valid]
        chosen[rows, picked] = True
        assert set(masked.input_ids[masked.input_ids != ids].tolist()) <= {SHIFTED.mask}
    assert not chosen[:, [0, 20, 39]].any() and not chosen[:, 30:39].any()
    assert chosen[:, 5].any()


def test_collate_pads_with_the_given_id():
    rows = [
        (np.arange(20, 30, dtype=np.uint16), np.zeros(10, np.uint8), None),
        (np.arange(20, 23, dtype=np.uint16), np.zeros(3, np.uint8), None),
    ]
    batch = collate(rows, pad_id=KOBERT.pad)
    assert batch["input_ids"][1, 3:].eq(KOBERT.pad).all()
    assert batch["attention_mask"][1, 3:].eq(0).all()


def test_model_configs_take_the_pad_id():
    model = ElectraPretrainer(TINY_MODEL, special=KOBERT)
    assert model.generator.config.pad_token_id == model.discriminator.config.pad_token_id == KOBERT.pad


def test_manifest_special_ids():
    base = dict(
        vocab_sha256="0" * 64,
        vocab_size=100,
        max_length=64,
        id_dtype="uint16",
        shards=[],
        total_rows=0,
        total_tokens=0,
        cleaning={},
        config={},
    )
    assert ShardManifest(**base).special_ids == DEFAULT_IDS
    recorded = {"uri": "x", "special_ids": {"pad": 1, "unk": 0, "cls": 2, "sep": 3, "mask": 4}}
    manifest = ShardManifest(**base, tokenizer=recorded)
    again = ShardManifest.from_json(manifest.to_json(), "here")
    assert again.special_ids == KOBERT and again.tokenizer == recorded
