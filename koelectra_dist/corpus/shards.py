"""Parquet shards of packed examples and their manifest (written last; readers trust only it).

Columns: `input_ids` list<uint16> (uint32 when the vocabulary has more than 65535 tokens),
unpadded, with [CLS]/[SEP]; `token_type_ids` list<uint8>; with `corpus.several_examples_per_row`
also `example_lengths` list<int32>: the lengths of the row's examples, in order (they sum to the
row's length). A shard without that column holds one example per row.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from koelectra_dist import storage
from koelectra_dist.configbase import contract_fields, contract_json
from koelectra_dist.corpus.vocab import vocab_txt_uri
from koelectra_dist.errors import DataError, KoelectraError
from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds

SCHEMA_VERSION = 1

PackedArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]
"""Packed rows as (ids, token types, offsets, example ends): row i is ids[offsets[i]:offsets[i+1]];
example ends (None: one example per row) are the token offsets where each example ends."""
EXAMPLE_LENGTHS = "example_lengths"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardFile:
    """One Parquet shard as the manifest lists it."""

    path: str
    """File name inside the shard folder."""
    rows: int
    tokens: int
    bytes: int
    sha256: str | None = None
    """sha256 of the file (None in manifests written before shards were hashed)."""


@dataclass(frozen=True, kw_only=True)
class ShardManifest:
    """What the corpus stage hands the pretrain stage: `shards/manifest.json`, written last."""

    vocab_sha256: str
    """sha256 of the vocab.txt the shards were tokenized with."""
    vocab_size: int
    max_length: int
    id_dtype: str
    """Element type of `input_ids`: uint16, or uint32 above 65,535 tokens."""
    shards: list[ShardFile]
    total_rows: int
    total_tokens: int
    cleaning: dict[str, Any]
    """The cleaning report: what every rule changed or dropped."""
    packing: dict[str, float] | None = None
    """Packing counts (examples, tokens, unknown and truncated tokens, random draws) and `fill_rate`
    = real tokens / (rows x max_length)."""
    config: dict[str, Any]
    """The corpus and model sections that built the shards."""
    validation: list[ShardFile] = field(default_factory=list)
    """Held-out rows (corpus.validation_fraction), not in `shards` nor in the totals: never trained on."""
    fingerprint: str | None = None
    """Hash of the inputs (name, size, version of every file) and the config; a rerun with the same
    fingerprint skips."""
    tokenizer: dict[str, Any] | None = None
    """The Hugging Face tokenizer the shards were tokenized with (corpus.tokenizer_uri): `uri`,
    `sha256` (of its files), `class`, `special_ids` ({pad, unk, cls, sep, mask}), `vocab_size`.
    None: the project's own WordPiece vocabulary, special ids 0-4."""
    schema_version: int = SCHEMA_VERSION

    @property
    def special_ids(self) -> SpecialIds:
        """The ids of [PAD] [UNK] [CLS] [SEP] [MASK] in the shards."""
        return DEFAULT_IDS if self.tokenizer is None else SpecialIds.from_json(self.tokenizer["special_ids"])

    def to_json(self) -> dict[str, Any]:
        return contract_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> ShardManifest:
        """The manifest in `data`; DataError naming `where` when it is not a complete one."""
        try:
            fields = contract_fields(cls, data, where, DataError, SCHEMA_VERSION)
            fields["shards"] = [ShardFile(**entry) for entry in data["shards"]]
            fields["validation"] = [ShardFile(**entry) for entry in data.get("validation", [])]
            return cls(**fields)
        except (TypeError, ValueError, DataError) as e:
            raise DataError(f"{e}; delete it and re-run the corpus stage") from None


def id_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65535 else "uint32"


def shard_name(index: int, validation: bool = False) -> str:
    return f"{'validation' if validation else 'part'}-{index:05d}.parquet"


def write_shard(
    shards_uri: str, index: int, pieces: list[tuple[PackedArrays, int, int]], validation: bool = False
) -> ShardFile:
    """Write rows [lo, hi) of each packed piece, in order, as shard number `index` (of the
    held-out set with `validation`)."""
    tables = []
    for (ids, types, offsets, ends), lo, hi in pieces:
        rows = offsets[lo : hi + 1]
        arrow_offsets = pa.array((rows - rows[0]).astype(np.int32))
        span = slice(int(rows[0]), int(rows[-1]))
        columns = {
            "input_ids": pa.ListArray.from_arrays(arrow_offsets, pa.array(ids[span])),
            "token_type_ids": pa.ListArray.from_arrays(arrow_offsets, pa.array(types[span], pa.uint8())),
        }
        if ends is not None:
            mine = ends[(ends > rows[0]) & (ends <= rows[-1])]
            lengths = np.diff(mine, prepend=rows[0]).astype(np.int32)
            per_row = np.searchsorted(mine, rows, side="right").astype(np.int32)
            columns[EXAMPLE_LENGTHS] = pa.ListArray.from_arrays(pa.array(per_row), pa.array(lengths))
        tables.append(pa.table(columns))
    shard = pa.concat_tables(tables).combine_chunks()
    buf = io.BytesIO()
    pq.write_table(shard, buf)
    name = shard_name(index, validation)
    storage.write_bytes(storage.join(shards_uri, name), buf.getvalue())
    tokens = pc.sum(pc.list_value_length(shard.column("input_ids"))).as_py() or 0
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    return ShardFile(path=name, rows=shard.num_rows, tokens=tokens, bytes=len(data), sha256=sha)


def take_rows(packed: PackedArrays, rows: list[int]) -> PackedArrays:
    """The given rows of a packed piece, in order, as a piece of their own (a copy: the rest can be freed)."""
    ids, types, offsets, ends = packed
    spans = [(int(offsets[r]), int(offsets[r + 1])) for r in rows]
    lengths = np.array([hi - lo for lo, hi in spans], dtype=offsets.dtype)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(offsets.dtype)
    mine = None
    if ends is not None:  # example ends inside each row, moved to the row's new start
        mine = np.concatenate(
            [ends[(ends > lo) & (ends <= hi)] - lo + start for (lo, hi), start in zip(spans, new_offsets, strict=False)]
        ).astype(ends.dtype)
    return (
        np.concatenate([ids[lo:hi] for lo, hi in spans]),
        np.concatenate([types[lo:hi] for lo, hi in spans]),
        new_offsets,
        mine,
    )


def write_manifest(shards_uri: str, manifest: ShardManifest) -> None:
    storage.write_json(storage.join(shards_uri, MANIFEST), manifest.to_json())


def read_manifest(shards_uri: str) -> ShardManifest:
    """The manifest of a finished shard set. DataError when it is absent (the corpus stage did not
    finish: its partial output is never used) or incomplete."""
    uri = storage.join(shards_uri, MANIFEST)
    try:
        found = storage.exists(uri)
        data = storage.read_json(uri) if found else None
    except KoelectraError as e:
        raise DataError(f"shard manifest {uri} cannot be read: {e}") from e
    if data is None:
        raise DataError(
            f"no {MANIFEST} in {shards_uri}: the corpus stage has not finished there (a partial output is "
            "never used); run `python launch.py --config CONFIG corpus`, or point train.shards_uri at a "
            "finished shard folder"
        )
    return ShardManifest.from_json(data, uri)


def shard_problems(shards_uri: str, manifest: ShardManifest, hashes: bool = False) -> list[str]:
    """What is wrong with the files of a shard set against its manifest: a shard missing, of
    another size, with another row count in its Parquet footer, or (with `hashes`, which reads
    every file) another sha256; and row totals that do not add up. Empty: intact."""
    problems = []
    if manifest.total_rows != sum(s.rows for s in manifest.shards):
        problems.append(f"total_rows {manifest.total_rows} is not the sum of the shards' rows")
    sizes = storage.file_sizes(shards_uri)
    for shard in [*manifest.shards, *manifest.validation]:
        uri = storage.join(shards_uri, shard.path)
        if shard.path not in sizes:
            problems.append(f"{shard.path}: missing")
        elif sizes[shard.path] != shard.bytes:
            problems.append(f"{shard.path}: {sizes[shard.path]} bytes, the manifest says {shard.bytes}")
        else:
            try:
                with storage.open_uri(uri) as f:
                    rows = pq.ParquetFile(f).metadata.num_rows
            except (OSError, ValueError, KoelectraError) as e:
                problems.append(f"{shard.path}: not a readable Parquet file ({e})")
                continue
            if rows != shard.rows:
                problems.append(f"{shard.path}: {rows} rows, the manifest says {shard.rows}")
            elif hashes and shard.sha256 and hashlib.sha256(storage.read_bytes(uri)).hexdigest() != shard.sha256:
                problems.append(f"{shard.path}: sha256 differs from the manifest's (the file is damaged)")
    return problems


def vocab_sha256(vocab_uri: str) -> str:
    """sha256 hex of vocab.txt (`vocab_uri` is a vocabulary folder or the vocab.txt itself)."""
    txt = vocab_txt_uri(vocab_uri)
    if not storage.exists(txt):
        raise DataError(f"vocabulary {txt} not found")
    return hashlib.sha256(storage.read_bytes(txt)).hexdigest()


def check_vocab(manifest: ShardManifest, vocab_uri: str) -> None:
    """DataError unless the shards were tokenized with the vocabulary at `vocab_uri`."""
    actual = vocab_sha256(vocab_uri)
    if actual != manifest.vocab_sha256:
        raise DataError(
            f"the shards were tokenized with a different vocabulary (manifest vocab_sha256 "
            f"{manifest.vocab_sha256[:12]}..., {vocab_txt_uri(vocab_uri)} has {actual[:12]}...): token ids "
            "would mean different tokens. Use the vocab/ folder written beside those shards, or re-run the "
            "corpus stage with this vocabulary (corpus.vocab.vocab_uri)"
        )
