"""The corpus stage's distributed read/deduplicate/pack/write path gives the same shards as the
driver-side implementation it replaced, whatever the chunking and cluster size, and handles bad
input per file (encodings, JSON lines)."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import require_shared_data

from koelectra_dist import storage
from koelectra_dist.config import config_from_dict
from koelectra_dist.corpus import stage
from koelectra_dist.corpus.shards import read_manifest
from koelectra_dist.tokens import SPECIAL_TOKENS

pytestmark = pytest.mark.slow

# sha256 of the shard contents (see `shard_digest`) that the driver-side implementation (one
# Python set for deduplication, blocks cut on the driver, one ShardWriter) produced on the input
# of `nsmc_slice` before the corpus stage was distributed, per corpus.flush_documents.
REFERENCE = {
    True: "84463686c877d6b0e65f2365abe9212176c03a063e0c1820db0aedd561b1b734",
    False: "79584e6acf384b3a8a98ba0cd119a20fde183faaad6ff99e806ffbb2c61508ee",
}


def nsmc_slice(folder: Path) -> list[str]:
    """30,000 NSMC lines (with its blank-line document ends and its duplicates) as three files,
    the middle one gzip: a corpus whose blocks cross file ends."""
    with gzip.open(require_shared_data("nsmc", "corpus.txt.gz"), "rt", encoding="utf-8") as f:
        lines = [line for _, line in zip(range(30_000), f, strict=False)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("".join(lines[:12_000]), encoding="utf-8")
    (folder / "b.txt.gz").write_bytes(gzip.compress("".join(lines[12_000:20_000]).encode()))
    (folder / "c.txt").write_text("".join(lines[20_000:]), encoding="utf-8")
    return lines


def fixed_vocab(lines: list[str], folder: Path) -> int:
    """A vocabulary that does not depend on the WordPiece trainer's tie-breaks: the special
    tokens, every character (and its ## form), the 3,000 most frequent words; returns its size."""
    chars = sorted({c for line in lines for c in line if not c.isspace()})
    words = Counter(w for line in lines for w in line.split())
    top = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:3000]]
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *chars, *("##" + c for c in chars), *top]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return len(vocab)


def shard_digest(shards_uri: str) -> str:
    """sha256 over every shard's name, rows and the ids and token types of every row, in order."""
    digest = hashlib.sha256()
    for shard in read_manifest(shards_uri).shards:
        table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(shards_uri, shard.path))))
        digest.update(f"{shard.path}:{table.num_rows};".encode())
        for column in ("input_ids", "token_type_ids"):
            digest.update(repr(table.column(column).to_pylist()).encode())
    return digest.hexdigest()


def slice_cfg(tmp: Path, out: str, vocab_size: int, flush_documents: bool, **corpus):
    return config_from_dict(
        {
            "run": {"output_uri": out, "stages": ["corpus"]},
            "model": {"vocab_size": vocab_size, "max_length": 128},
            "corpus": {
                "inputs": [str(tmp / "in")],
                "vocab": {"vocab_uri": str(tmp / "vocab")},
                "lines_per_block": 300,
                "examples_per_shard": 700,
                "flush_documents": flush_documents,
                # The pinned shards predate held-out rows: none set aside, the same packing.
                "validation_fraction": 0,
                **corpus,
            },
        }
    )


@pytest.fixture(scope="module")
def nsmc_input(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nsmc_slice")
    lines = nsmc_slice(tmp / "in")
    return tmp, fixed_vocab(lines, tmp / "vocab")


@pytest.mark.parametrize(
    ("flush_documents", "chunking"),
    [
        (True, {}),
        (False, {}),
        # Byte ranges that cut files (and documents, and blocks) anywhere; several hash ranges.
        (True, {"chunk_bytes": 150_000, "dedup_partitions": 3}),
        (False, {"chunk_bytes": 400_000, "dedup_partitions": 5}),
    ],
)
def test_shards_equal_the_driver_side_implementation(ray_local, nsmc_input, flush_documents, chunking):
    tmp, vocab_size = nsmc_input
    out = tmp / f"run-{flush_documents}-{len(chunking)}"
    report = stage.run(slice_cfg(tmp, str(out), vocab_size, flush_documents, **chunking))
    assert shard_digest(str(out / "corpus" / "shards")) == REFERENCE[flush_documents]
    # The counts the driver-side implementation reported for this input (lines equal after cleaning
    # are dropped within a block, so lines_kept depends on the blocks); documents_read now counts
    # a document cut into blocks once (it was 647 without flush_documents).
    cleaning = report["cleaning"]
    kept = 28810 if flush_documents else 28811
    assert (cleaning["lines_read"], cleaning["duplicate_lines"], cleaning["lines_kept"]) == (29451, 614, kept)
    assert cleaning["documents_read"] == 552 and cleaning["files"] == 3
