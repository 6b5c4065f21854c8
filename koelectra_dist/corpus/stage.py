"""The corpus stage: raw text -> vocab/ (WordPiece) and shards/ (packed Parquet + manifest.json).

Two streaming passes over the input, each a sequence of Ray Data tasks over blocks of whole
documents: (1) clean + pre-tokenize for vocabulary training (skipped when corpus.vocab.vocab_uri
names a vocabulary), (2) clean + tokenize + pack into shards. The manifest is written last and
records a fingerprint of the inputs (names, sizes, mtimes/ETags) and of the config, so a re-run
with the same ones returns at once; anything without a manifest is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import Any

from koelectra_dist import ray_runtime, storage
from koelectra_dist.config import Config
from koelectra_dist.corpus.blocks import clean_pretokenize_block, map_blocks, pack_block
from koelectra_dist.corpus.clean import RULES, Deduplicator
from koelectra_dist.corpus.read import InputFile, ReadStats, iter_blocks, iter_lines, resolve_inputs
from koelectra_dist.corpus.shards import (
    SCHEMA_VERSION,
    ShardManifest,
    ShardWriter,
    id_dtype,
    read_manifest,
    shard_problems,
    vocab_sha256,
    write_manifest,
)
from koelectra_dist.corpus.vocab import (
    build_tokenizer,
    check_vocab_tokens,
    load_vocab,
    train_vocab,
    vocab_txt_uri,
    write_vocab_dir,
)
from koelectra_dist.errors import DataError

log = logging.getLogger(__name__)


def _window(cluster_cpus: float) -> int:
    """Blocks per Ray Data dataset: enough to keep every CPU busy, few enough to bound memory."""
    return max(32, 8 * int(cluster_cpus))


def fingerprint(cfg: Config, files: list[InputFile]) -> str:
    corpus = dataclasses.asdict(cfg.corpus)
    corpus.pop("output_uri")
    payload = {
        "schema_version": SCHEMA_VERSION,
        "inputs": [dataclasses.asdict(f) for f in files],
        "corpus": corpus,
        "model": {"vocab_size": cfg.model.vocab_size, "max_length": cfg.model.max_length},
        "vocab_source": vocab_sha256(cfg.corpus.vocab.vocab_uri) if cfg.corpus.vocab.vocab_uri else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _finished(shards_uri: str, vocab_uri: str, fp: str) -> ShardManifest | None:
    """The manifest of a complete earlier run with the same fingerprint, else None."""
    try:
        manifest = read_manifest(shards_uri)
        if manifest.fingerprint == fp and vocab_sha256(vocab_uri) == manifest.vocab_sha256:
            problems = shard_problems(shards_uri, manifest, hashes=True)
            if not problems:
                return manifest
            log.warning("corpus: %s is damaged, rebuilding it:\n  - %s", shards_uri, "\n  - ".join(problems))
    except DataError:
        pass
    return None


def _same_file(a: str, b: str) -> bool:
    return (storage.local_path(a) or a) == (storage.local_path(b) or b)


def _empty_corpus(cfg: Config, stats: ReadStats) -> DataError:
    skipped = f"; skipped as binary: {', '.join(stats.skipped_files)}" if stats.skipped_files else ""
    return DataError(
        f"the corpus {', '.join(cfg.corpus.inputs)} has no text left after cleaning ({stats.lines_read} lines "
        f"read{skipped}); check corpus.inputs and corpus.cleaning"
    )


def _sampled_blocks(lines: list[bytes], lines_per_block: int) -> Iterator[bytes]:
    it = iter(lines)
    while chunk := list(islice(it, lines_per_block)):
        yield b"\n".join(chunk)


def _reservoir(lines: Iterator[bytes], size: int, seed: int) -> list[bytes]:
    """A uniform sample of `size` lines (Algorithm R), in corpus order, seeded."""
    rng = random.Random(seed)
    sample: list[tuple[int, bytes]] = []
    for i, line in enumerate(lines):
        if i < size:
            sample.append((i, line))
        else:
            j = rng.randrange(i + 1)
            if j < size:
                sample[j] = (i, line)
    return [line for _, line in sorted(sample)]


def build_vocab(cfg: Config, files: list[InputFile], window: int) -> list[str]:
    """Train the WordPiece vocabulary on the cleaned, pre-tokenized corpus (or a sample of it)."""
    c = cfg.corpus
    stats = ReadStats()
    dedup = Deduplicator() if c.cleaning.enabled and c.cleaning.deduplicate else None
    if c.vocab.sample_lines is None:
        blocks = iter_blocks(files, c.lines_per_block, dedup, stats)
    else:
        sample = _reservoir(iter_lines(files, dedup, stats), c.vocab.sample_lines, c.seed)
        blocks = _sampled_blocks(sample, c.lines_per_block)
    lines: list[str] = []
    kwargs = {"cleaning": c.cleaning, "pretokenizer": c.vocab.pretokenizer}
    for row in map_blocks(blocks, clean_pretokenize_block, kwargs, window, "vocabulary"):
        text = row["text"].decode("utf-8")
        if text:
            lines.extend(text.split("\n"))
    if not lines:
        raise _empty_corpus(cfg, stats)
    log.info("corpus vocabulary: training WordPiece (%d tokens) on %d lines", cfg.model.vocab_size, len(lines))
    return train_vocab(lines, c.vocab, cfg.model.vocab_size, length=len(lines))


def _cleaning_report(stats: ReadStats, counts: Counter[str]) -> dict[str, Any]:
    return {
        "files": stats.files,
        "skipped_binary_files": stats.skipped_files,
        "lines_read": stats.lines_read,
        "documents_read": stats.documents,
        "invalid_utf8_lines": counts["invalid_utf8"],
        "duplicate_lines": stats.duplicate_lines,
        **{rule: counts[rule] for rule in RULES},
        "lines_kept": counts["lines_out"],
        "documents_kept": counts["documents_out"],
    }


def run(cfg: Config) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        ray_runtime.connect(cfg)
    c, m = cfg.corpus, cfg.model
    out, vocab_uri, shards_uri = cfg.paths.corpus, cfg.paths.vocab, cfg.paths.corpus_shards
    files = resolve_inputs(c.inputs)
    fp = fingerprint(cfg, files)
    previous = _finished(shards_uri, vocab_uri, fp)
    if previous is not None:
        log.info("corpus: %s is complete for these inputs and config; skipping", shards_uri)
        return _report(out, previous, skipped=True)
    storage.remove(shards_uri)  # a partial earlier output is never reused
    window = _window(ray.cluster_resources().get("CPU", 1))
    started = time.time()
    if c.vocab.vocab_uri:
        vocab = load_vocab(c.vocab.vocab_uri)
        check_vocab_tokens(vocab, m.vocab_size, c.vocab.vocab_uri)
    else:
        vocab = build_vocab(cfg, files, window)
    if c.vocab.vocab_uri and _same_file(vocab_txt_uri(c.vocab.vocab_uri), vocab_txt_uri(vocab_uri)):
        tokenizer = build_tokenizer(vocab)  # the configured vocabulary is already in place
    else:
        tokenizer = write_vocab_dir(vocab, vocab_uri, m.max_length)
    vocab_seconds = time.time() - started

    dtype = id_dtype(m.vocab_size)
    stats = ReadStats()
    dedup = Deduplicator() if c.cleaning.enabled and c.cleaning.deduplicate else None
    blocks = iter_blocks(files, c.lines_per_block, dedup, stats, split_anywhere=not c.flush_documents)
    kwargs = {
        "cleaning": c.cleaning,
        "tokenizer_json": tokenizer.to_str(),
        "id_dtype": dtype,
        "max_length": m.max_length,
        "single_segment_prob": c.single_segment_prob,
        "short_seq_prob": c.short_seq_prob,
        "flush_documents": c.flush_documents,
        "seed": c.seed,
    }
    writer = ShardWriter(shards_uri, c.examples_per_shard, dtype)
    counts: Counter[str] = Counter()
    for row in map_blocks(blocks, pack_block, kwargs, window, "shards"):
        counts.update(row["counts"])
        writer.add_bytes(row["ids"], row["types"], row["offsets"])
    shards = writer.close()
    if not counts["examples"]:
        raise _empty_corpus(cfg, stats)
    manifest = ShardManifest(
        vocab_sha256=vocab_sha256(vocab_uri),
        vocab_size=m.vocab_size,
        max_length=m.max_length,
        id_dtype=dtype,
        shards=shards,
        total_rows=sum(s.rows for s in shards),
        total_tokens=sum(s.tokens for s in shards),
        cleaning=_cleaning_report(stats, counts),
        packing={
            k: counts[k] for k in ("examples", "tokens", "unk_tokens", "single_segment_draws", "short_target_draws")
        },
        config={"corpus": dataclasses.asdict(c), "model": dataclasses.asdict(m)},
        fingerprint=fp,
        seconds={"vocab": round(vocab_seconds, 1), "total": round(time.time() - started, 1)},
    )
    write_manifest(shards_uri, manifest)
    return _report(out, manifest, skipped=False)


def _report(out: str, manifest: ShardManifest, skipped: bool) -> dict[str, Any]:
    return {
        "output_uri": out,
        "skipped": skipped,
        "shards": len(manifest.shards),
        "total_rows": manifest.total_rows,
        "total_tokens": manifest.total_tokens,
        "vocab_size": manifest.vocab_size,
        "cleaning": manifest.cleaning,
        "packing": manifest.packing,
        "seconds": manifest.seconds,
    }
