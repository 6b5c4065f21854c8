"""The shard stream: every example once per epoch, seeded reshuffles, short rows gathered into their
own micro-batches, exact positions, any world size at the same position, background loading, and
refusal of mismatched shards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers import write_shard_set

from koelectra_dist.config import config_from_dict
from koelectra_dist.errors import DataError, user_error_in
from koelectra_dist.pretrain.data import Prefetcher, ShardStream, collate, epoch_order, open_shards, read_shard
from koelectra_dist.tokens import PAD_ID

ROWS = [7, 5, 9]  # 21 examples in shards of different sizes
VOCAB = 300  # first token after [CLS] identifies the example (5 + global row index)


@pytest.fixture
def shard_set(tiny_shards):
    out, manifest = tiny_shards
    assert [s.rows for s in manifest.shards] == ROWS and manifest.vocab_size == VOCAB
    return out, [f"{out}/shards/{s.path}" for s in manifest.shards]


def example_ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return (batch["input_ids"][:, 1] - 5).tolist()


def take(shard_set, n_batches: int, *, rank=0, world=1, micro=3, start=0, seed=1, group=5) -> list[list[int]]:
    """Example ids of `n_batches` micro-batches; windows of `group` rows (5: windows do not divide
    the 21-row epoch nor align with the micro-batches)."""
    _, uris = shard_set
    stream = ShardStream(
        uris, ROWS, seed=seed, rank=rank, world_size=world, micro_batch=micro, start=start, group_rows=group
    )
    return [example_ids(b) for b in itertools.islice(stream.batches(), n_batches)]


def test_each_example_once_per_epoch_and_epochs_reshuffle(shard_set):
    flat = [i for b in take(shard_set, 14, micro=3) for i in b]  # 42 = two epochs of 21
    first, second = flat[:21], flat[21:]
    assert sorted(first) == sorted(second) == list(range(21))
    assert first != second and first != list(range(21))
    assert take(shard_set, 7, seed=2) != take(shard_set, 7, seed=1)


def test_each_epoch_reshuffles_the_shard_order_and_the_rows_in_each_shard():
    """Both levels of the shuffle depend on the epoch (a shard order fixed across epochs would
    show every shard's examples in the same place of each epoch)."""
    rows = [7, 5, 9, 4, 6]
    orders = [epoch_order(rows, 1, e) for e in range(4)]
    assert len({tuple(shards) for shards, _ in orders}) > 1
    assert all(len({tuple(rows_[i]) for _, rows_ in orders}) > 1 for i in range(len(rows)))
    again = epoch_order(rows, 1, 2)
    assert list(again[0]) == list(orders[2][0]) and all(
        list(a) == list(b) for a, b in zip(again[1], orders[2][1], strict=True)
    )


def test_ranks_split_the_stream_by_micro_batch(shard_set):
    single = take(shard_set, 8, micro=2)
    rank0 = take(shard_set, 4, rank=0, world=2, micro=2)
    rank1 = take(shard_set, 4, rank=1, world=2, micro=2)
    assert single[0::2] == rank0 and single[1::2] == rank1


@pytest.mark.parametrize("group", [1, 5, 512])
def test_resuming_at_a_position_continues_exactly(shard_set, group):
    full = take(shard_set, 12, rank=1, world=2, micro=2, group=group)
    for consumed in (4, 8, 24):  # global batches of 2x2; mid-window and mid-epoch positions
        resumed = take(shard_set, 12 - consumed // 4, rank=1, world=2, micro=2, start=consumed, group=group)
        assert resumed == full[consumed // 4 :]


def test_short_rows_gather_at_the_end_of_their_window(shard_set):
    """Each window holds the same examples as without grouping, longest first, equal lengths in stream
    order; windows restart at each epoch's start (the last one shorter)."""
    lengths = dict(enumerate(row_lengths(shard_set)))
    plain = [i for b in take(shard_set, 42, micro=1, group=1) for i in b]
    grouped = [i for b in take(shard_set, 42, micro=1, group=5) for i in b]
    bounds = [(e * 21 + lo, e * 21 + min(lo + 5, 21)) for e in (0, 1) for lo in range(0, 21, 5)]
    for lo, hi in bounds:
        window = grouped[lo:hi]
        assert sorted(window) == sorted(plain[lo:hi])
        expected = sorted(plain[lo:hi], key=lambda i: -lengths[i])  # sorted() is stable
        assert window == expected


def row_lengths(shard_set) -> list[int]:
    """Token count of each example, by id."""
    _, uris = shard_set
    batch = next(ShardStream(uris, ROWS, seed=1, rank=0, world_size=1, micro_batch=21, start=0, group_rows=1).batches())
    found = dict(zip(example_ids(batch), (batch["input_ids"] != PAD_ID).sum(1).tolist(), strict=True))
    return [found[i] for i in range(21)]


def test_grouping_leaves_few_micro_batches_masked(tmp_path):
    """On shards shaped like KoELECTRA's (5% short rows), most micro-batches of 32 carry a mask
    without grouping, few with it."""
    from shaped_shards import write_shaped_shards

    uris, rows = write_shaped_shards(str(tmp_path), 2, 1024, max_length=64, vocab_size=VOCAB)

    def masked_share(group: int) -> float:
        stream = ShardStream(uris, rows, seed=0, rank=0, world_size=1, micro_batch=32, start=0, group_rows=group)
        batches = list(itertools.islice(stream.batches(), 64))
        return sum(b["attention_mask"] is not None for b in batches) / len(batches)

    assert masked_share(1) > 0.6 and masked_share(512) <= 0.15


def test_world_size_change_keeps_the_global_batch(shard_set):
    """Global batch 4 at position 8: one worker with micro 4 or two with micro 2 see the same examples."""
    one = take(shard_set, 2, world=1, micro=4, start=8)
    two = [take(shard_set, 2, rank=r, world=2, micro=2, start=8) for r in range(2)]
    for step in range(2):
        assert sorted(one[step]) == sorted(two[0][step] + two[1][step])


def test_batches_are_padded_with_masks(shard_set):
    _, uris = shard_set
    stream = ShardStream(uris, ROWS, seed=0, rank=0, world_size=1, micro_batch=4, start=0)
    masked = [b for b in itertools.islice(stream.batches(), 5) if b["attention_mask"] is not None]
    assert masked  # the rows are 8-16 tokens long: the shorter ones share micro-batches
    for batch in masked:
        assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape[1] % 8 == 0
        assert torch.equal(batch["attention_mask"].bool(), batch["input_ids"] != PAD_ID)
        assert batch["token_type_ids"].shape == batch["input_ids"].shape


def test_misaligned_start_is_refused(shard_set):
    _, uris = shard_set
    with pytest.raises(DataError, match="multiple"):
        ShardStream(uris, ROWS, seed=0, rank=0, world_size=2, micro_batch=2, start=3)


def test_prefetcher_measures_wait_and_passes_errors():
    def slow():
        yield {"x": torch.zeros(1)}
        raise DataError("broken shard")

    loader = Prefetcher(slow(), depth=2)
    assert torch.equal(loader.next()["x"], torch.zeros(1))
    with pytest.raises(DataError, match="broken shard"):
        loader.next()
    assert loader.wait_seconds >= 0.0
    loader.close()


def test_prefetcher_adds_up_the_time_training_waited():
    """The "data wait" metric: two batches each 0.2 s late add up to at least 0.4 s of waiting."""
    import threading
    import time

    # Each batch is made only once training asks for it, so its 0.2 s are waited for however
    # late the test's thread runs (a loaded machine cannot let the prefetcher get ahead).
    asked = [threading.Event(), threading.Event()]

    def late():
        for event in asked:
            event.wait()
            time.sleep(0.2)
            yield {"x": torch.zeros(1)}

    loader = Prefetcher(late(), depth=4)
    for event in asked:
        event.set()
        loader.next()
    assert 0.35 <= loader.wait_seconds < 30.0
    loader.close()


def run_config(out: str, **model) -> object:
    return config_from_dict(
        {
            "run": {"output_uri": out, "stages": ["pretrain"]},
            "model": {"vocab_size": VOCAB, "max_length": 16, "hidden_size": 32, "num_attention_heads": 2, **model},
            "corpus": {"vocab": {"num_unused": 10}},
        }
    )


@pytest.mark.slow  # a moto S3 server
def test_open_shards_local_and_s3(tmp_path, s3_bucket):
    for out in (str(tmp_path / "run"), f"{s3_bucket}/run"):
        write_shard_set(f"{out}/corpus", VOCAB, 16, ROWS)
        shards = open_shards(run_config(out))
        assert shards.rows == ROWS and len(shards.uris) == 3
    stream = ShardStream(shards.uris, shards.rows, seed=0, rank=0, world_size=1, micro_batch=21, start=0)
    assert sorted(example_ids(next(stream.batches()))) == list(range(21))


def test_open_shards_refuses_mismatches(tmp_path):
    out = str(tmp_path / "run")
    write_shard_set(f"{out}/corpus", VOCAB, 16, ROWS)
    with pytest.raises(DataError, match="model.vocab_size"):
        open_shards(run_config(out, vocab_size=400))
    with pytest.raises(DataError, match="max_length"):
        open_shards(run_config(out, max_length=12))
    (tmp_path / "run" / "corpus" / "vocab" / "vocab.txt").write_text("[PAD]\nother\n")
    with pytest.raises(DataError):
        open_shards(run_config(out))
    with pytest.raises(DataError, match="manifest"):
        open_shards(run_config(str(tmp_path / "nothing")))


def test_a_batch_of_full_rows_has_no_attention_mask():
    full = [(np.arange(5, 21, dtype=np.uint16), np.zeros(16, np.uint8), None) for _ in range(3)]
    batch = collate(full)
    assert batch["attention_mask"] is None and batch["input_ids"].shape == (3, 16)
    batch = collate([*full, (np.arange(5, 12, dtype=np.uint16), np.zeros(7, np.uint8), None)])
    assert batch["attention_mask"] is not None and batch["attention_mask"][3].sum() == 7


def test_a_shard_damaged_inside_its_size_is_refused_before_training_by_default(tmp_path):
    """One flipped byte keeps a shard's size and footer: the default sha256 check refuses it before
    any worker starts. With train.verify_shards "size" the worker's reader refuses it instead, as a
    DataError (a user error, never retried), not an IndexError in the model."""
    out = str(tmp_path / "run")
    write_shard_set(f"{out}/corpus", VOCAB, 16, ROWS)
    part = tmp_path / "run" / "corpus" / "shards" / "part-00001.parquet"
    original = part.read_bytes()
    sweep = {"refused": 0, "decoded": 0}
    damaged = None
    for i in range(4, len(original) - 8, 3):  # every third byte of the shard, one bit flipped at a time
        flipped = bytearray(original)
        flipped[i] ^= 0x10
        part.write_bytes(bytes(flipped))
        try:
            read_shard(str(part), VOCAB)  # decodes, or refuses as a DataError: never anything else
            sweep["decoded"] += 1
        except DataError as e:
            sweep["refused"] += 1
            if damaged is None and "outside the vocabulary" in str(e):
                damaged = bytes(flipped)  # what reached the embedding as an IndexError before
    assert damaged is not None and sweep["refused"] > 0
    part.write_bytes(damaged)
    assert run_config(out).train.verify_shards == "sha256"
    with pytest.raises(DataError, match=r"part-00001.parquet: sha256 differs .*\n.*run the corpus stage again"):
        open_shards(run_config(out))
    shards = open_shards(run_config(out), hashes=False)  # what "size" checks: size, footer, row count
    stream = ShardStream(
        shards.uris, shards.rows, seed=0, rank=0, world_size=1, micro_batch=3, start=0, vocab_size=VOCAB
    )
    loader = Prefetcher(stream.batches())
    with pytest.raises(DataError, match=r"part-00001.parquet: the shard is damaged \(token ids .* outside") as e:
        for _ in range(2 * sum(ROWS)):
            loader.next()
    loader.close()
    failed = RuntimeError("a training worker failed")  # how the driver sees it: a user error, not retried
    failed.__cause__ = e.value
    assert isinstance(user_error_in(failed), DataError)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA; none here")
def test_prefetcher_pins_batches_for_asynchronous_copies():
    loader = Prefetcher(iter([{"x": torch.arange(4), "mask": None}]), pin=True)
    batch = loader.next()
    assert batch["x"].is_pinned() and batch["mask"] is None
    assert torch.equal(batch["x"].to("cuda", non_blocking=True).cpu(), torch.arange(4))
    loader.close()
