"""Pre-training batches from the corpus stage's Parquet shards.

The examples form one endless, seeded stream: epoch e is every example once, in an order drawn
from (seed, e) (a shuffled shard order, then a shuffled row order inside each shard); epoch e+1
follows. Within each epoch, windows of `GROUP_ROWS` positions (from the epoch's start; the last
one shorter) are then ordered by row length, longest first, stably: full rows keep their order and
the short rows (ELECTRA's intentional short examples, about 5%) gather at the window's end. So
micro-batches of full rows carry no attention mask and run on the fused attention kernel; without
this, one short row in 32 masked the whole micro-batch (most micro-batches of Base v3). A short row
moves by less than a window, never into another epoch.

Optimizer step s consumes positions [s*G, (s+1)*G) of that stream (G = global batch). Cut into
micro-batches of m rows, micro-batch c belongs to rank c % W. So the position of a run is one
number, the consumed samples, and a run resumed at that position (even with another W, as long
as G is unchanged) sees exactly the examples the uninterrupted run would have seen: the windows
depend on neither W nor m.

Loading runs in background threads (the next shard is read while the current one is batched)
and the loader measures how long the training step waited for a batch; on a GPU it hands over
batches in pinned memory, so their copy to the device does not block the step.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from koelectra_dist import layout, storage
from koelectra_dist.config import Config
from koelectra_dist.corpus.shards import EXAMPLE_LENGTHS, ShardManifest, check_vocab, read_manifest, shard_problems
from koelectra_dist.errors import DataError, bullets
from koelectra_dist.tokens import DEFAULT_IDS, PAD_ID, SpecialIds

Row = tuple[np.ndarray, np.ndarray, np.ndarray | None]
"""One row: token ids, token types, and its examples' lengths (None: the row is one example)."""

GROUP_ROWS = 512
"""Stream positions ordered by row length together: with Base v3's 5% of short rows, about 26 short
rows to a window of 16 micro-batches of 32, so mostly one masked micro-batch in 16."""


@dataclass(frozen=True)
class Shard:
    """One shard's rows: concatenated token values and row offsets (Arrow's list layout); with
    several examples per row, their lengths and per-row offsets into them."""

    ids: np.ndarray
    types: np.ndarray
    offsets: np.ndarray
    example_lengths: np.ndarray | None = None
    example_offsets: np.ndarray | None = None

    def row(self, r: int) -> Row:
        lo, hi = self.offsets[r], self.offsets[r + 1]
        lengths = None
        if self.example_lengths is not None and self.example_offsets is not None:
            lengths = self.example_lengths[self.example_offsets[r] : self.example_offsets[r + 1]]
        return self.ids[lo:hi], self.types[lo:hi], lengths


_REBUILD = "restore the file, or run the corpus stage again (it rebuilds a damaged shard set)"


def read_shard(uri: str, vocab_size: int | None = None) -> Shard:
    """One shard's rows. A shard damaged inside its size (which `train.verify_shards: "size"` lets
    through) is a DataError naming it, never a crash that would be retried as a lost worker:
    whatever the Parquet decoders raise, and rows no corpus stage writes (token ids outside
    [0, vocab_size), types other than 0/1)."""
    data = storage.read_bytes(uri)  # a StorageError (an outage) stays one
    try:
        shard = _decode(data)
        bad = _damage(shard, vocab_size)
    except DataError as e:
        raise DataError(f"{uri}: {e}; " + _REBUILD) from None
    except Exception as e:  # noqa: BLE001 - damaged bytes raise anything from the decoders
        raise DataError(
            f"{uri}: not a readable shard with input_ids/token_type_ids list columns ({type(e).__name__}: {e}); "
            + _REBUILD
        ) from e
    if bad:
        raise DataError(f"{uri}: the shard is damaged ({bad}); " + _REBUILD)
    return shard


def _decode(data: bytes) -> Shard:
    table = pq.read_table(io.BytesIO(data))
    ids = table.column("input_ids").combine_chunks()
    types = table.column("token_type_ids").combine_chunks()
    lengths = None  # shards of one example per row (all written before the column existed) lack it
    if EXAMPLE_LENGTHS in table.column_names:
        lengths = table.column(EXAMPLE_LENGTHS).combine_chunks()
        ends = np.concatenate([[0], np.cumsum(lengths.values.to_numpy(zero_copy_only=False), dtype=np.int64)])
        per_row = np.diff(ends[lengths.offsets.to_numpy(zero_copy_only=False)])
        if len(lengths) != len(ids) or not np.array_equal(per_row, np.diff(ids.offsets.to_numpy(zero_copy_only=False))):
            raise DataError(f"{EXAMPLE_LENGTHS} do not add up to the rows' lengths")
    return Shard(
        ids=ids.values.to_numpy(zero_copy_only=False),
        types=types.values.to_numpy(zero_copy_only=False),
        offsets=ids.offsets.to_numpy(zero_copy_only=False),
        example_lengths=None if lengths is None else lengths.values.to_numpy(zero_copy_only=False),
        example_offsets=None if lengths is None else lengths.offsets.to_numpy(zero_copy_only=False),
    )


def _damage(shard: Shard, vocab_size: int | None) -> str | None:
    """What makes decoded rows impossible, or None (one pass over the values: ~1% of a read)."""
    if shard.ids.dtype.kind not in "iu" or shard.types.dtype.kind not in "iu":
        return f"columns of {shard.ids.dtype}/{shard.types.dtype}, not integers"
    if len(shard.ids) != len(shard.types) or np.any(np.diff(shard.offsets) < 0):
        return "its rows' offsets are inconsistent"
    if len(shard.ids) and (shard.ids.min() < 0 or (vocab_size is not None and shard.ids.max() >= vocab_size)):
        return f"token ids {shard.ids.min()}..{shard.ids.max()} outside the vocabulary's 0..{vocab_size}"
    if len(shard.types) and shard.types.max() > 1:
        return f"token type {shard.types.max()} (only 0 and 1 exist)"
    return None


@dataclass(frozen=True)
class ShardSet:
    """A checked shard folder: its manifest and each shard's URI and row count."""

    uri: str
    manifest: ShardManifest
    uris: list[str]
    rows: list[int]


def open_shards(cfg: Config, hashes: bool | None = None) -> ShardSet:
    """Read and check the manifest of the run's shards: the vocabulary beside them (the corpus
    stage writes OUT/vocab and OUT/shards) must be the one they were tokenized with, and the
    vocabulary size and length must fit the model. `hashes`: whether to check each file's sha256
    (None: as train.verify_shards says; workers pass False, the driver has checked them)."""
    uri = cfg.paths.shards
    manifest = read_manifest(uri)
    check_vocab(manifest, layout.vocab_beside(uri))
    problems = shard_problems(uri, manifest, hashes=cfg.train.verify_shards == "sha256" if hashes is None else hashes)
    if problems:
        raise DataError(
            f"{uri}: the shards do not match their manifest:"
            + bullets(problems)
            + "\nrun the corpus stage again with the same inputs and config (it rebuilds the shards with the "
            "vocabulary already there, so checkpoints stay usable), or restore the files"
        )
    if manifest.vocab_size != cfg.model.vocab_size:
        raise DataError(
            f"{uri}: the shards use a vocabulary of {manifest.vocab_size} tokens but model.vocab_size is "
            f"{cfg.model.vocab_size}; set model.vocab_size to {manifest.vocab_size} or rebuild the shards"
        )
    if manifest.max_length > cfg.model.max_length:
        raise DataError(
            f"{uri}: examples are up to {manifest.max_length} tokens but model.max_length is "
            f"{cfg.model.max_length}; rebuild the shards with the model's max_length"
        )
    return ShardSet(
        uri, manifest, [storage.join(uri, s.path) for s in manifest.shards], [s.rows for s in manifest.shards]
    )


def shard_special_ids(cfg: Config) -> SpecialIds:
    """The special ids of the run's shards (their manifest's tokenizer); the project's own (0-4)
    where no shards are there yet (a model built for a check or a benchmark)."""
    try:
        return read_manifest(cfg.paths.shards).special_ids
    except DataError:
        return DEFAULT_IDS


def epoch_order(rows: list[int], seed: int, epoch: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Shard order and, per shard, its row order for one epoch; a pure function of its inputs."""
    shard_order = np.random.default_rng([seed, epoch]).permutation(len(rows))
    row_orders = [np.random.default_rng([seed, epoch, i]).permutation(n) for i, n in enumerate(rows)]
    return shard_order, row_orders


def collate(rows: list[Row], pad_to_multiple: int = 8, pad_id: int = PAD_ID) -> dict[str, torch.Tensor | None]:
    """Pad a micro-batch to its longest row (rounded up so GPU kernels get aligned shapes).
    A batch of full rows has no padding and gets no attention mask (None): attention then runs
    without one, on the fused kernel. When a row holds several examples, the batch also has
    `position_ids` (from 0 in each example) and `example_ids` (the example's index in its row, -1
    on padding), from which the model keeps attention inside each example. Padding is `pad_id`
    (the shards' tokenizer's [PAD])."""
    longest = max(len(row[0]) for row in rows)
    width = -(-longest // pad_to_multiple) * pad_to_multiple
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    token_types = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    several = any(lengths is not None and len(lengths) > 1 for _, _, lengths in rows)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    examples = np.full((len(rows), width), -1, dtype=np.int64)
    for i, (ids, types, lengths) in enumerate(rows):
        input_ids[i, : len(ids)] = ids
        token_types[i, : len(ids)] = types
        mask[i, : len(ids)] = 1
        if several:
            lengths = np.asarray([len(ids)] if lengths is None else lengths, dtype=np.int64)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            positions[i, : len(ids)] = np.arange(len(ids)) - starts
            examples[i, : len(ids)] = np.repeat(np.arange(len(lengths)), lengths)
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": None if mask.all() else torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(token_types),
    }
    if several:
        batch.update(position_ids=torch.from_numpy(positions), example_ids=torch.from_numpy(examples))
    return batch


class ShardStream:
    """This rank's micro-batches, starting at global stream position `start` (a multiple of
    micro_batch x world_size), in the order described in the module docstring."""

    def __init__(
        self,
        shard_uris: list[str],
        rows: list[int],
        *,
        seed: int,
        rank: int,
        world_size: int,
        micro_batch: int,
        start: int,
        vocab_size: int | None = None,
        group_rows: int = GROUP_ROWS,
        pad_id: int = PAD_ID,
    ):
        if start % (micro_batch * world_size):
            raise DataError(f"stream position {start} is not a multiple of micro batch x workers")
        self.uris, self.rows, self.seed = shard_uris, rows, seed
        self.rank, self.world_size, self.micro_batch, self.start = rank, world_size, micro_batch, start
        self.vocab_size = vocab_size
        self.group_rows = group_rows
        self.pad_id = pad_id
        self.total = sum(rows)
        if self.total == 0:
            raise DataError("the shard set holds no examples; rebuild it with the corpus stage")

    def _mine(self, positions: np.ndarray) -> np.ndarray:
        return (positions // self.micro_batch) % self.world_size == self.rank

    def _windows(self) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
        """(first stream position, its rows as (shard index, row indices) pieces in stream order) of
        each window, from the window holding `start`, forever."""
        epoch, offset = divmod(self.start, self.total)
        offset -= offset % self.group_rows
        while True:
            shard_order, row_orders = epoch_order(self.rows, self.seed, epoch)
            pieces: list[tuple[int, np.ndarray]] = []
            lo, filled = 0, 0  # the window's first position in the epoch, and its rows so far
            for i in shard_order:
                rows, taken = row_orders[i], 0
                while taken < len(rows):
                    n = min(len(rows) - taken, self.group_rows - filled)
                    if lo >= offset:
                        pieces.append((int(i), rows[taken : taken + n]))
                    taken, filled = taken + n, filled + n
                    if filled == self.group_rows:
                        if lo >= offset:
                            yield epoch * self.total + lo, pieces
                        lo, filled, pieces = lo + filled, 0, []
            if pieces:
                yield epoch * self.total + lo, pieces
            epoch, offset = epoch + 1, 0

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-reader")
        loaded: dict[int, Future[Shard]] = {}  # the shards of this window and the next (read ahead)
        try:
            windows = self._windows()
            upcoming = next(windows)
            buffer: list[Row] = []
            while True:
                first, pieces = upcoming
                upcoming = next(windows)
                needed = dict.fromkeys(i for i, _ in pieces + upcoming[1])
                loaded = {i: loaded.get(i) or reader.submit(read_shard, self.uris[i], self.vocab_size) for i in needed}
                rows = [loaded[i].result().row(r) for i, picks in pieces for r in picks]
                order = np.argsort([-len(ids) for ids, _, _ in rows], kind="stable")
                positions = first + np.arange(len(rows))
                for j in np.flatnonzero(self._mine(positions) & (positions >= self.start)):
                    buffer.append(rows[order[j]])
                    if len(buffer) == self.micro_batch:
                        yield collate(buffer, pad_id=self.pad_id)
                        buffer = []
        finally:
            reader.shutdown(wait=False, cancel_futures=True)


class Prefetcher:
    """Runs a batch iterator in a daemon thread, `depth` batches ahead; `wait_seconds` is the total
    time `next()` blocked. `pin`: batches are handed over in page-locked memory (copied there by
    the thread), so that `.to(device, non_blocking=True)` is an asynchronous copy, not a blocking one."""

    _END = object()

    def __init__(self, batches: Iterator[dict[str, torch.Tensor]], depth: int = 8, pin: bool = False):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pin = pin
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._fill, args=(batches,), daemon=True, name="prefetch")
        self._thread.start()

    def _fill(self, batches: Iterator[dict[str, torch.Tensor]]) -> None:
        try:
            for batch in batches:
                if self._pin:
                    batch = {k: v if v is None else v.pin_memory() for k, v in batch.items()}
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put(e)
        self._queue.put(self._END)

    def next(self) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        item = self._queue.get()
        self.wait_seconds += time.perf_counter() - start
        if isinstance(item, BaseException):
            raise item
        if item is self._END:
            raise DataError("the shard stream ended unexpectedly")
        return item

    def close(self) -> None:
        self._stop.set()
