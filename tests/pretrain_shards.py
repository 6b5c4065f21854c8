"""Shard sets in the corpus stage's format (contracts.md), written directly for pre-training tests:
a vocab/ folder and shards/ with Parquet files and manifest.json, local or s3://."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from koelectra_dist import storage
from koelectra_dist.tokens import CLS_ID, SEP_ID, SPECIAL_TOKENS


def write_shard_set(out: str, vocab_size: int, max_length: int, rows: list[int], seed: int = 0) -> dict:
    """Write OUT/vocab/vocab.txt and OUT/shards (one Parquet file per entry of `rows`); return the
    manifest. Example i of shard k starts with token id 5 + (global row index mod (vocab_size - 5))
    so tests can tell examples apart."""
    vocab = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]
    vocab_bytes = ("\n".join(vocab) + "\n").encode()
    storage.write_bytes(storage.join(out, "vocab", "vocab.txt"), vocab_bytes)
    rng = np.random.default_rng(seed)
    shards, row = [], 0
    for k, n in enumerate(rows):
        ids, types = [], []
        for _ in range(n):
            length = int(rng.integers(6, max_length - 1))
            body = rng.integers(5, vocab_size, size=length).astype(np.uint16)
            body[0] = 5 + row % (vocab_size - 5)
            ids.append(np.concatenate([[CLS_ID], body, [SEP_ID]]).astype(np.uint16))
            types.append(np.zeros(length + 2, np.uint8))
            row += 1
        table = pa.table(
            {
                "input_ids": pa.array(ids, pa.list_(pa.uint16())),
                "token_type_ids": pa.array(types, pa.list_(pa.uint8())),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        name = f"part-{k:05d}.parquet"
        storage.write_bytes(storage.join(out, "shards", name), buf.getvalue())
        shards.append({"path": name, "rows": n, "tokens": int(sum(len(x) for x in ids)), "bytes": buf.tell()})
    manifest = {
        "schema_version": 1,
        "vocab_sha256": hashlib.sha256(vocab_bytes).hexdigest(),
        "vocab_size": vocab_size,
        "max_length": max_length,
        "id_dtype": "uint16",
        "shards": shards,
        "total_rows": sum(rows),
        "total_tokens": sum(s["tokens"] for s in shards),
        "cleaning": {},
        "config": {},
    }
    storage.write_json(storage.join(out, "shards", "manifest.json"), manifest)
    return manifest
