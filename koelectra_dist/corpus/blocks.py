"""Per-block work as Ray Data tasks: cleaning + Mecab pre-tokenization (vocabulary pass) and
cleaning + tokenization + packing (shard pass).

The driver streams blocks of whole documents; a window of blocks at a time (bounded memory) becomes
a Ray Data dataset with one block per task, spread over the cluster's CPUs. A task returns one row
per block (its index, results as compact bytes, and counts), so the driver restores input order
and the output does not depend on scheduling.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from koelectra_dist import errors
from koelectra_dist.corpus.clean import Cleaner
from koelectra_dist.corpus.config import CleaningConfig
from koelectra_dist.corpus.examples import ExampleBuilder, block_rng
from koelectra_dist.corpus.read import decode_documents
from koelectra_dist.corpus.vocab import Pretokenizer
from koelectra_dist.errors import DataError, KoelectraError
from koelectra_dist.tokens import UNK_ID

log = logging.getLogger(__name__)


def _block_input(batch: pa.Table) -> tuple[int, bytes]:
    return batch.column("index")[0].as_py(), batch.column("data")[0].as_py()


def _result(index: int, counts: Counter[str], **columns: bytes) -> pa.Table:
    return pa.table(
        {
            "index": [index],
            "counts": [json.dumps(counts)],
            **{k: pa.array([v], pa.binary()) for k, v in columns.items()},
        }
    )


def reports_errors(fn: Callable[..., pa.Table]) -> Callable[..., pa.Table]:
    """Return a worker's KoelectraError as a result row: Ray Data re-raises a task's exception as a
    UserCodeException that has lost the original, and the user must see our message."""

    @functools.wraps(fn)
    def wrapper(batch: pa.Table, **kwargs: Any) -> pa.Table:
        try:
            return fn(batch, **kwargs)
        except KoelectraError as e:
            return pa.table({"index": [batch.column("index")[0].as_py()], "error": [errors.encode(e)]})

    return wrapper


@reports_errors
def clean_pretokenize_block(batch: pa.Table, cleaning: CleaningConfig, pretokenizer: str) -> pa.Table:
    """Vocabulary pass: the block's cleaned lines, pre-tokenized for WordPiece training, '\\n'-joined."""
    index, data = _block_input(batch)
    counts: Counter[str] = Counter()
    cleaner = Cleaner(cleaning)
    documents = cleaner.clean_documents(decode_documents(data, counts))
    split = Pretokenizer(pretokenizer)
    text = "\n".join(split(line) for doc in documents for line in doc)
    return _result(index, counts + cleaner.counts, text=text.encode("utf-8"))


@functools.lru_cache(maxsize=2)
def _tokenizer(tokenizer_json: str):  # parsed once per worker process, not once per block
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json)


@reports_errors
def pack_block(
    batch: pa.Table,
    cleaning: CleaningConfig,
    tokenizer_json: str,
    id_dtype: str,
    max_length: int,
    single_segment_prob: float,
    short_seq_prob: float,
    flush_documents: bool,
    seed: int,
) -> pa.Table:
    """Shard pass: clean, tokenize (fast tokenizer, no special tokens) and pack one block."""
    index, data = _block_input(batch)
    counts: Counter[str] = Counter()
    cleaner = Cleaner(cleaning)
    documents = cleaner.clean_documents(decode_documents(data, counts))
    lines = [line for doc in documents for line in doc]
    # encode_batch_fast: the same ids without character offsets (~20% faster), which packing never reads
    encodings = _tokenizer(tokenizer_json).encode_batch_fast(lines, add_special_tokens=False)
    builder = ExampleBuilder(max_length, block_rng(seed, index), single_segment_prob, short_seq_prob)
    position = 0
    for doc in documents:
        for encoding in encodings[position : position + len(doc)]:
            builder.add_sentence(encoding.ids)
        position += len(doc)
        if flush_documents:
            builder.end_document()
    builder.end_document()  # a block ends with a whole document (or is the corpus' last piece)
    ids, types, offsets = builder.out.arrays(id_dtype)
    counts.update(cleaner.counts)
    counts.update(
        lines_out=len(lines),
        documents_out=len(documents),
        examples=builder.out.rows,
        tokens=len(ids),
        unk_tokens=int((ids == UNK_ID).sum()),
        single_segment_draws=builder.single_segment_draws,
        short_target_draws=builder.short_target_draws,
    )
    return _result(index, counts, ids=ids.tobytes(), types=types.tobytes(), offsets=offsets.tobytes())


def _windows(blocks: Iterator[bytes], window: int) -> Iterator[list]:
    """Object refs to blocks, `window` at a time; the first window is small so that the cluster
    starts working while the driver reads the next one."""
    import ray

    start, size = 0, max(2, window // 8)
    while chunk := list(itertools.islice(blocks, size)):
        yield [
            ray.put(pa.table({"index": [start + i], "data": pa.array([b], pa.binary())})) for i, b in enumerate(chunk)
        ]
        start, size = start + len(chunk), window


def _run_window(refs: list, fn: Callable[..., pa.Table], fn_kwargs: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """One Ray Data dataset with one task per block; its result rows in block order."""
    import ray

    ds = ray.data.from_arrow_refs(refs).map_batches(
        fn, fn_kwargs=fn_kwargs, batch_size=None, batch_format="pyarrow", zero_copy_batch=True
    )
    # A single operator: reserving part of the CPUs for other operators would idle them.
    ds.context.op_resource_reservation_enabled = False
    try:
        return sorted(ds.iter_rows(), key=lambda row: row["index"])
    except Exception as e:  # a worker failure: surface our own error's message if it was one
        raise _unwrap(e, what) from e


def map_blocks(
    blocks: Iterator[bytes],
    fn: Callable[..., pa.Table],
    fn_kwargs: dict[str, Any],
    window: int,
    what: str,
) -> Iterator[dict[str, Any]]:
    """Run `fn` over `blocks` with Ray Data, `window` blocks at a time; yield result rows (dicts
    with `counts` parsed) in block order. Two windows run at once, so the next window's tasks fill
    the CPUs while the last tasks of the current one finish and while the caller consumes its rows;
    memory stays bounded by two windows of input and one of results."""
    running: deque[Future] = deque()
    first = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"corpus-{what}") as pool:
        try:
            for refs in itertools.chain(_windows(blocks, window), [None]):
                if refs is not None:
                    running.append(pool.submit(_run_window, refs, fn, fn_kwargs, what))
                while running and (refs is None or len(running) == 2):
                    results = running.popleft().result()
                    log.info("corpus %s: blocks %d-%d done", what, first, first + len(results) - 1)
                    first += len(results)
                    for row in results:
                        if row.get("error"):
                            raise errors.decode(row["error"])
                        row["counts"] = json.loads(row["counts"])
                        yield row
        finally:
            for future in running:
                future.cancel()


def _unwrap(exc: Exception, what: str) -> Exception:
    """A worker failure that is not one of our errors (those come back as rows): name the stage."""
    return DataError(f"corpus {what} failed in a Ray worker: {type(exc).__name__}: {str(exc)[:2000]}")
