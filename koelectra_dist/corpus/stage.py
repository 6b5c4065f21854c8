"""The corpus stage: raw text -> vocab/ (WordPiece, or a teacher's tokenizer) and shards/ (packed
Parquet + manifest.json).

The driver plans and tracks Ray tasks (corpus/ray_tasks.py); the tasks read, hash, clean, tokenize,
pack and write. (1) Survey: each chunk of the input is read once, its lines hashed and split by
hash range; one task per range finds the repeated lines (dedup.py). (2) The driver scans the
chunks' per-document counts to number the blocks (blocks.py), and the vocabulary is trained on a
sample drawn by the tasks, or on every block (skipped when corpus.vocab.vocab_uri names one, or
when corpus.tokenizer_uri names a teacher's tokenizer: it is written to vocab/ as it tokenizes).
(3) Pack tasks re-read their chunks and pack their blocks; write tasks turn each
`examples_per_shard` rows into a Parquet shard at its destination. The manifest is written last
and records a fingerprint of the inputs (names, sizes, mtimes/ETags) and of the config, so a
re-run with the same ones returns at once; anything without a manifest is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from koelectra_dist import hf_tokenizer, ray_runtime, storage
from koelectra_dist.config import Config
from koelectra_dist.corpus import dedup, ray_tasks
from koelectra_dist.corpus.blocks import CutState, PackOptions, advance, block_limit
from koelectra_dist.corpus.clean import RULES
from koelectra_dist.corpus.config import PRESETS
from koelectra_dist.corpus.read import Chunk, InputFile, ReadOptions, plan_chunks, resolve_inputs
from koelectra_dist.corpus.shards import (
    SCHEMA_VERSION,
    ShardFile,
    ShardManifest,
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
    merge_vocab,
    train_vocab,
    vocab_text,
    vocab_txt_uri,
    write_vocab_dir,
)
from koelectra_dist.errors import DataError, StorageError, bullets, user_error_in
from koelectra_dist.tokens import DEFAULT_IDS, SpecialIds

log = logging.getLogger(__name__)

# Input bytes per deduplication range when corpus.dedup_partitions is not set: a range's task
# holds ~24 bytes per line of its range (~2-3 lines per 100 bytes of text).
DEDUP_BYTES_PER_PARTITION = 128 << 20
# The output does not depend on how the work is cut, so it is cut for the cluster: about this
# many read and pack tasks per CPU (a small corpus in smaller chunks, a large gzip file's blocks
# over several pack tasks), chunks of at least MIN_CHUNK_BYTES.
TASKS_PER_CPU = 4
MIN_CHUNK_BYTES = 1 << 20


_RULES_BEFORE_PRESETS = {
    "normalize_nfc",
    "remove_control_chars",
    "max_repeats",
    "remove_urls",
    "remove_emails",
    "remove_mentions",
    "remove_hashtags",
    "min_chars",
    "deduplicate",
}
_NO_OP_RULES = dataclasses.asdict(PRESETS["koelectra_v3"])


def fingerprint(cfg: Config, files: list[InputFile], tokenizer_sha256: str | None = None) -> str:
    corpus = dataclasses.asdict(cfg.corpus)
    if corpus["tokenizer_uri"] is None:  # unset: the fingerprints of earlier shard sets hold
        corpus.pop("tokenizer_uri")
    for name in ("output_uri", "chunk_bytes", "dedup_partitions"):  # where and how, not what
        corpus.pop(name)
    for name in ("merge_with", "train_size"):
        if corpus["vocab"][name] is None:
            corpus["vocab"].pop(name)
    if not corpus["several_examples_per_row"]:  # off: the fingerprints of earlier shard sets hold
        corpus.pop("several_examples_per_row")
    # The rules as applied, whatever preset or override gave them; a rule added since earlier shard
    # sets is left out while it does nothing, so their fingerprints hold.
    rules = dataclasses.asdict(cfg.corpus.cleaning.rules())
    corpus["cleaning"] = {"enabled": cfg.corpus.cleaning.enabled} | {
        k: v for k, v in rules.items() if k in _RULES_BEFORE_PRESETS or v != _NO_OP_RULES[k]
    }
    payload = {
        "schema_version": SCHEMA_VERSION,
        "inputs": [dataclasses.asdict(f) for f in files],
        "corpus": corpus,
        "model": {"vocab_size": cfg.model.vocab_size, "max_length": cfg.model.max_length},
        "vocab_source": vocab_sha256(cfg.corpus.vocab.vocab_uri) if cfg.corpus.vocab.vocab_uri else None,
    }
    if tokenizer_sha256:
        payload["tokenizer_source"] = tokenizer_sha256
    if cfg.corpus.vocab.merge_with:  # unset: the fingerprints of earlier shard sets hold
        merged = load_vocab(cfg.corpus.vocab.merge_with, "corpus.vocab.merge_with")
        payload["merge_source"] = hashlib.sha256(vocab_text(merged)).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _previous(shards_uri: str) -> ShardManifest | None:
    """The manifest an earlier run left, if any and readable."""
    try:
        return read_manifest(shards_uri)
    except DataError:
        return None


def _finished(shards_uri: str, vocab_uri: str, fp: str, manifest: ShardManifest | None) -> bool:
    """Whether an earlier complete run with the same fingerprint left its shards intact."""
    if manifest is None or manifest.fingerprint != fp or _vocab_sha(vocab_uri) != manifest.vocab_sha256:
        return False
    problems = shard_problems(shards_uri, manifest, hashes=True)
    if problems:
        log.warning("corpus: %s is damaged, rebuilding it:%s", shards_uri, bullets(problems))
    return not problems


def _vocab_sha(vocab_uri: str) -> str | None:
    return vocab_sha256(vocab_uri) if storage.exists(vocab_txt_uri(vocab_uri)) else None


def _checkpoints_using(cfg: Config, sha: str) -> list[str]:
    """The checkpoint folders (pretrain and distill step-N/) whose meta.json names the vocabulary
    with this sha256: they are useless without it."""
    found = []
    for root in (cfg.paths.checkpoints, cfg.paths.distill_checkpoints):
        for name in storage.list_dirs(root):
            meta = storage.join(root, name, "meta.json")
            if name.startswith("step-") and storage.exists(meta):
                try:
                    if storage.read_json(meta).get("vocab_sha256") == sha:
                        found.append(storage.join(root, name))
                except (StorageError, AttributeError):
                    continue  # a damaged meta.json: that checkpoint is unusable anyway
    return found


def _refuse_replacing(cfg: Config, vocab_uri: str, used_by: list[str]) -> DataError:
    shown = ", ".join(used_by[:3]) + (f" and {len(used_by) - 3} more" if len(used_by) > 3 else "")
    return DataError(
        f"the corpus stage would replace the vocabulary {vocab_txt_uri(vocab_uri)} with a different one, but "
        f"{len(used_by)} checkpoint(s) were trained with it ({shown}) and cannot be used without it. Nothing "
        f"was changed. Keep it with corpus.vocab.vocab_uri={cfg.paths.vocab} (the shards are then rebuilt with "
        "it), or write the new corpus elsewhere (corpus.output_uri)"
    )


def _on_storage(cfg: Config) -> dict[str, Any]:
    """Ray options for the tasks that read or write the corpus: the driver's S3 settings, which a
    Ray started before the config was read does not give its workers."""
    uris = [*cfg.corpus.inputs, cfg.paths.corpus]
    env = storage.worker_env() if any(storage.is_s3(u) for u in uris) else {}
    return {"runtime_env": {"env_vars": env}} if env else {}


def _same_file(a: str, b: str) -> bool:
    return (storage.local_path(a) or a) == (storage.local_path(b) or b)


def _empty_corpus(cfg: Config, survey: Survey) -> DataError:
    skipped = survey.skipped
    also = f"; skipped as binary: {', '.join(skipped)}" if skipped else ""
    return DataError(
        f"the corpus {', '.join(cfg.corpus.inputs)} has no text left after cleaning "
        f"({survey.counts['lines_read']} lines read{also}); check corpus.inputs and corpus.cleaning"
    )


@dataclass
class Survey:
    """What the first read of the corpus left: counts, and per chunk object refs to its Segments
    and its duplicate line indices."""

    chunks: list[Chunk]
    counts: Counter[str]
    skipped: list[str]
    segments: list[Any]
    dups: list[Any]
    sample_keys: np.ndarray | None = None


def survey(cfg: Config, files: list[InputFile], options: ReadOptions, sample_k: int, cpus: int) -> Survey:
    import ray

    c = cfg.corpus
    total = sum(f.size for f in files)
    chunks = plan_chunks(files, min(c.chunk_bytes, max(MIN_CHUNK_BYTES, -(-total // (TASKS_PER_CPU * cpus)))))
    deduplicate = c.cleaning.enabled and c.cleaning.rules().deduplicate  # the preset's unless set
    parts = c.dedup_partitions or max(1, math.ceil(total / DEDUP_BYTES_PER_PARTITION))
    parts = parts if deduplicate else 0
    read = [
        ray_tasks.survey_chunk.options(num_returns=parts + 2, **_on_storage(cfg)).remote(
            chunk, options, parts, sample_k, c.seed
        )
        for chunk in chunks
    ]
    found = []
    for p in range(parts):
        refs = ray_tasks.find_duplicates.options(num_returns=len(chunks)).remote(*[r[2 + p] for r in read])
        found.append(refs if len(chunks) > 1 else [refs])
    out = Survey(chunks, Counter(), [], [], [])
    for n, refs in enumerate(read):
        segments, dups = ray_tasks.chunk_segments.remote(refs[1], *[f[n] for f in found])
        out.segments.append(segments)
        out.dups.append(dups)
        info = ray.get(refs[0])
        out.counts.update(info["counts"])
        out.skipped += info["skipped"]
        if info["keys"] is not None:
            keys = info["keys"] if out.sample_keys is None else np.concatenate([out.sample_keys, info["keys"]])
            out.sample_keys = dedup.smallest(keys, sample_k)
    del read, found  # the hash parts are freed once every chunk's duplicates are known
    return out


@dataclass
class Job:
    """One pack or pre-tokenize task: blocks [lo, hi) of those that start in chunks[0], read from
    `start`; the later chunks hold the rest of block hi-1."""

    chunks: list[int]
    start: CutState
    blocks: tuple[int, int]


def plan_jobs(
    s: Survey, lines_per_block: int, limit: int, blocks_per_job: int, counts: Counter[str] | None = None
) -> Iterator[Job]:
    """The block scan over every chunk in order, yielding each job once its chunks are known (a
    chunk's blocks in jobs of `blocks_per_job`); `counts` gets the input's documents and
    duplicate lines."""
    import ray

    state = CutState()
    waiting: Job | None = None
    open_document = False
    for n, (chunk, ref) in enumerate(zip(s.chunks, s.segments, strict=True)):
        seg = ray.get(ref)
        start = CutState(state.lines, state.index)
        cut = advance(state, seg.kept.tolist(), seg.blank.tolist(), lines_per_block, limit)
        if counts is not None:
            counts["duplicate_lines"] += int(seg.raw.sum()) - int(seg.kept.sum())
            for raw, blank in zip(seg.raw.tolist(), seg.blank.tolist(), strict=True):
                open_document = open_document or raw > 0
                if blank:
                    counts["documents_read"] += open_document
                    open_document = False
            if chunk.last_of_file:
                counts["documents_read"] += open_document
                open_document = False
        if waiting is not None:
            waiting.chunks.append(n)
            if cut:
                yield waiting
                waiting = None
        first, end = start.index + (start.lines > 0), state.index + (state.lines > 0)
        for lo in range(first, end, blocks_per_job):
            job = Job([n], start, (lo, min(lo + blocks_per_job, end)))
            if job.blocks[1] == end and state.lines:
                waiting = job  # its last block is still open
            else:
                yield job
    if waiting is not None:
        yield waiting


def _blocks_per_job(s: Survey, lines_per_block: int, cpus: int) -> int:
    return max(1, math.ceil(s.counts["lines_read"] / lines_per_block / (TASKS_PER_CPU * cpus)))


def _in_order(submit, jobs: Iterator[Job], cpus: int) -> Iterator[Any]:
    """Submit a task per job, at most two per CPU ahead of the one whose result is consumed;
    yield (job, refs) in job order."""
    window = max(4, 2 * cpus)
    running: deque = deque()
    for job in jobs:
        running.append((job, submit(job)))
        if len(running) >= window:
            yield running.popleft()
    yield from running


def _task_args(s: Survey, job: Job, options: ReadOptions, lines_per_block: int, limit: int) -> tuple[Any, list[Any]]:
    """A job as its task sees it, and its chunks' duplicate indices (refs, passed as arguments)."""
    chunks = [s.chunks[n] for n in job.chunks]
    spec = ray_tasks.BlockJob(job.start, job.blocks, chunks, options, lines_per_block, limit)
    return spec, [s.dups[n] for n in job.chunks]


def build_vocab(cfg: Config, s: Survey, options: ReadOptions, cpus: int) -> list[str]:
    """Train the WordPiece vocabulary on the cleaned, pre-tokenized corpus (or a sample of it)."""
    import ray

    c = cfg.corpus
    lines: list[str] = []
    if c.vocab.sample_lines is None:
        limit = block_limit(c.lines_per_block, split_anywhere=False)

        def submit(job: Job):
            spec, dups = _task_args(s, job, options, c.lines_per_block, limit)
            return ray_tasks.pretokenize_chunks.options(**_on_storage(cfg)).remote(
                spec, c.cleaning, c.vocab.pretokenizer, *dups
            )

        jobs = plan_jobs(s, c.lines_per_block, limit, _blocks_per_job(s, c.lines_per_block, cpus))
        for _, ref in _in_order(submit, jobs, cpus):
            lines += ray.get(ref)[1]
    else:
        keys = s.sample_keys
        threshold = int(keys[-1]) if keys is not None and len(keys) >= c.vocab.sample_lines else 2**64 - 1
        refs = [
            ray_tasks.sample_chunk.options(**_on_storage(cfg)).remote(
                chunk, options, threshold, c.seed, c.cleaning, c.vocab.pretokenizer, dups
            )
            for chunk, dups in zip(s.chunks, s.dups, strict=True)
        ]
        for ref in refs:
            lines += ray.get(ref)
    if not lines:
        raise _empty_corpus(cfg, s)
    v = c.vocab
    if v.merge_with is None:
        log.info("corpus vocabulary: training WordPiece (%d tokens) on %d lines", cfg.model.vocab_size, len(lines))
        return train_vocab(lines, v, cfg.model.vocab_size)
    log.info("corpus vocabulary: training WordPiece (%d tokens) on %d lines, then merging", v.train_size, len(lines))
    trained = train_vocab(lines, dataclasses.replace(v, num_unused=0), v.train_size, "corpus.vocab.train_size")
    merged = merge_vocab(
        trained, load_vocab(v.merge_with, "corpus.vocab.merge_with"), cfg.model.vocab_size, v.num_unused, v.merge_with
    )
    log.info(
        "corpus vocabulary: %d trained + %d of %s", v.train_size, cfg.model.vocab_size - v.train_size, v.merge_with
    )
    return merged


@dataclass
class _ShardPlan:
    """Packed pieces waiting to fill a shard: (ref, first row, rows) each. Every `stride`-th row of
    the corpus, counted in its (deterministic) packing order, goes to the held-out set instead
    (corpus.validation_fraction, up to corpus.validation_max_rows), written as validation shards at
    the end: spread over the whole corpus and the same whatever the task count."""

    rows_per_shard: int
    shards_uri: str
    validation_fraction: float = 0.0
    validation_max_rows: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    """Ray options of the write tasks (the storage settings)."""
    pending: list[tuple[Any, int, int]] = field(default_factory=list)
    written: list[Any] = field(default_factory=list)
    held: list[tuple[Any, int, int]] = field(default_factory=list)
    validation: list[Any] = field(default_factory=list)
    seen: int = 0
    held_rows: int = 0

    def _held_in(self, rows: int) -> list[int]:
        """Indices, within the next `rows` rows, of those held out."""
        if self.validation_fraction <= 0:
            return []
        stride = max(2, round(1 / self.validation_fraction))
        first = -(self.seen + 1) % stride  # global index = stride - 1 (mod stride): row 0 is never held
        picked = list(range(first, rows, stride))[: max(0, self.validation_max_rows - self.held_rows)]
        self.held_rows += len(picked)
        return picked

    def add(self, ref: Any, rows: int) -> None:
        held = self._held_in(rows)
        self.seen += rows
        if held:  # a copy of those rows: the job's output is freed once its shards are written
            self.held.append((ray_tasks.take_rows.remote(ref, held), 0, len(held)))
        lo = 0
        for end in [*held, rows]:
            if end > lo:
                self.pending.append((ref, lo, end - lo))
            lo = end + 1
        while sum(n for _, _, n in self.pending) >= self.rows_per_shard:
            self._write(self.pending, self.written, self.rows_per_shard, validation=False)

    def close(self) -> None:
        if rest := sum(n for _, _, n in self.pending):
            self._write(self.pending, self.written, rest, validation=False)
        while rest := sum(n for _, _, n in self.held):
            self._write(self.held, self.validation, min(rest, self.rows_per_shard), validation=True)

    def _write(self, pending: list[tuple[Any, int, int]], written: list[Any], rows: int, validation: bool) -> None:
        refs, bounds = [], []
        while rows:
            ref, lo, n = pending.pop(0)
            take = min(n, rows)
            refs.append(ref)
            bounds.append((lo, lo + take))
            if take < n:
                pending.insert(0, (ref, lo + take, n - take))
            rows -= take
        task = ray_tasks.write_shard.options(**self.task_options)
        written.append(task.remote(self.shards_uri, len(written), validation, bounds, *refs))


def _cleaning_report(s: Survey, counts: Counter[str]) -> dict[str, Any]:
    return {
        "files": s.counts["files"],
        "skipped_binary_files": s.skipped,
        "lines_read": s.counts["lines_read"],
        "documents_read": counts["documents_read"],
        "invalid_utf8_lines": counts["invalid_utf8"],
        "invalid_json_lines": s.counts["invalid_json_lines"],
        "duplicate_lines": counts["duplicate_lines"],
        **{rule: counts[rule] for rule in RULES},
        "lines_kept": counts["lines_out"],
        "documents_kept": counts["documents_out"],
    }


def pack_shards(
    cfg: Config, s: Survey, options: ReadOptions, tokenizer_json: str, cpus: int, special: SpecialIds = DEFAULT_IDS
) -> tuple[list[ShardFile], list[ShardFile], Counter[str]]:
    """Pack every block and write the shards; return them, the held-out shards and the counts."""
    import ray

    c, m = cfg.corpus, cfg.model
    dtype = id_dtype(m.vocab_size)
    limit = block_limit(c.lines_per_block, split_anywhere=not c.flush_documents)
    opts = PackOptions(
        c.cleaning,
        tokenizer_json,
        m.max_length,
        c.single_segment_prob,
        c.short_seq_prob,
        c.flush_documents,
        c.seed,
        c.several_examples_per_row,
        special,
    )

    def submit(job: Job):
        spec, dups = _task_args(s, job, options, c.lines_per_block, limit)
        return ray_tasks.pack_chunks.options(**_on_storage(cfg)).remote(spec, opts, dtype, *dups)

    counts: Counter[str] = Counter()
    plan = _ShardPlan(
        c.examples_per_shard, cfg.paths.corpus_shards, c.validation_fraction, c.validation_max_rows, _on_storage(cfg)
    )
    jobs = plan_jobs(s, c.lines_per_block, limit, _blocks_per_job(s, c.lines_per_block, cpus), counts)
    for _, (counts_ref, packed_ref) in _in_order(submit, jobs, cpus):
        job_counts = ray.get(counts_ref)
        counts.update(job_counts)
        plan.add(packed_ref, job_counts["rows"])
    plan.close()
    return ray.get(plan.written), ray.get(plan.validation), counts


@dataclass
class TeacherTokenizer:
    """corpus.tokenizer_uri, loaded: the fast tokenizer, the sha256 of its files, its vocabulary
    and its special ids."""

    tokenizer: Any
    sha256: str
    vocab: list[str]
    special: SpecialIds


def load_teacher_tokenizer(cfg: Config) -> TeacherTokenizer:
    """The tokenizer corpus.tokenizer_uri names; DataError unless its size is model.vocab_size and
    it has the five special tokens."""
    uri = cfg.corpus.tokenizer_uri
    key = f"corpus.tokenizer_uri={uri}"
    with hf_tokenizer.local_folder(uri) as local:
        tok = hf_tokenizer.load_local(local, key)
        sha = hf_tokenizer.files_sha256(local)
    special = hf_tokenizer.special_ids(tok, key)
    vocab = hf_tokenizer.vocab_list(tok)
    if len(vocab) != cfg.model.vocab_size:
        raise DataError(
            f"{key} has {len(vocab)} tokens but model.vocab_size is {cfg.model.vocab_size}; set model.vocab_size "
            f"to {len(vocab)}"
        )
    return TeacherTokenizer(tok, sha, vocab, special)


def write_teacher_tokenizer(teacher: TeacherTokenizer, uri: str) -> None:
    """The teacher's tokenizer as the corpus's vocab/ folder: a standard fast tokenizer folder with
    vocab.txt in id order (`hf_tokenizer.save`)."""
    with tempfile.TemporaryDirectory(prefix="koelectra-vocab-") as scratch:
        hf_tokenizer.save(teacher.tokenizer, scratch)
        storage.remove(uri)
        storage.upload_dir(scratch, uri)


def run(cfg: Config) -> dict[str, Any]:
    import ray

    ray_runtime.connect(cfg)  # also when Ray runs already: this process's storage settings
    c, m = cfg.corpus, cfg.model
    out, vocab_uri, shards_uri = cfg.paths.corpus, cfg.paths.vocab, cfg.paths.corpus_shards
    files = resolve_inputs(c.inputs)
    teacher = load_teacher_tokenizer(cfg) if c.tokenizer_uri else None
    fp = fingerprint(cfg, files, teacher.sha256 if teacher else None)
    previous = _previous(shards_uri)
    if _finished(shards_uri, vocab_uri, fp, previous):
        log.info("corpus: %s is complete for these inputs and config; skipping", shards_uri)
        return _report(out, previous, skipped=True)
    existing = _vocab_sha(vocab_uri)
    # The vocabulary of a finished run with the same inputs and config is kept as it is (only the
    # shards are rebuilt): checkpoints may have been trained with it.
    keep = not c.vocab.vocab_uri and not teacher and previous is not None and previous.fingerprint == fp
    keep = keep and existing == previous.vocab_sha256
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    options = ReadOptions(c.encoding, c.text_field)
    started = time.time()
    try:
        trains = not (c.vocab.vocab_uri or keep or teacher)
        sample_k = c.vocab.sample_lines if trains and c.vocab.sample_lines else 0
        found = survey(cfg, files, options, sample_k, cpus)
        if teacher:
            vocab = teacher.vocab
        elif c.vocab.vocab_uri or keep:
            source = c.vocab.vocab_uri or vocab_uri
            vocab = load_vocab(source)
            check_vocab_tokens(vocab, m.vocab_size, source)
        else:
            vocab = build_vocab(cfg, found, options, cpus)
        sha = hashlib.sha256(vocab_text(vocab)).hexdigest()
        special = teacher.special if teacher else DEFAULT_IDS
        if teacher:
            if existing not in (None, sha) and (used_by := _checkpoints_using(cfg, existing)):
                raise _refuse_replacing(cfg, vocab_uri, used_by)
            write_teacher_tokenizer(teacher, vocab_uri)
            tokenizer = teacher.tokenizer.backend_tokenizer
        elif existing == sha or (
            c.vocab.vocab_uri and _same_file(vocab_txt_uri(c.vocab.vocab_uri), vocab_txt_uri(vocab_uri))
        ):
            tokenizer = build_tokenizer(vocab)  # this very vocabulary is already in place
        else:
            if existing is not None and (used_by := _checkpoints_using(cfg, existing)):
                raise _refuse_replacing(cfg, vocab_uri, used_by)
            tokenizer = write_vocab_dir(vocab, vocab_uri, m.max_length)
        vocab_seconds = time.time() - started
        storage.remove(shards_uri)  # a partial or damaged earlier output is never reused
        shards, validation, counts = pack_shards(cfg, found, options, tokenizer.to_str(), cpus, special)
    except Exception as e:  # a task's own error reaches the user as it was raised
        user = user_error_in(e)
        if user is None:
            raise
        raise user from None
    if not counts["examples"]:
        raise _empty_corpus(cfg, found)
    manifest = ShardManifest(
        vocab_sha256=vocab_sha256(vocab_uri),
        vocab_size=m.vocab_size,
        max_length=m.max_length,
        id_dtype=id_dtype(m.vocab_size),
        shards=shards,
        total_rows=sum(s.rows for s in shards),
        total_tokens=sum(s.tokens for s in shards),
        cleaning=_cleaning_report(found, counts),
        packing={
            **{
                k: counts[k]
                for k in (
                    "examples",
                    "rows",
                    "tokens",
                    "unk_tokens",
                    "truncated_tokens",
                    "single_segment_draws",
                    "short_target_draws",
                )
            },
            # real tokens per row slot: what of a full-length batch is not padding
            "fill_rate": round(counts["tokens"] / max(1, counts["rows"] * m.max_length), 4),
        },
        config={"corpus": dataclasses.asdict(c), "model": dataclasses.asdict(m)},
        fingerprint=fp,
        validation=validation,
        tokenizer=hf_tokenizer.describe(teacher.tokenizer, c.tokenizer_uri, teacher.sha256) if teacher else None,
    )
    write_manifest(shards_uri, manifest)
    # The timings go to the report only: the manifest is the same bytes run after run.
    seconds = {"vocab": round(vocab_seconds, 1), "total": round(time.time() - started, 1)}
    return _report(out, manifest, skipped=False, seconds=seconds)


def _report(
    out: str, manifest: ShardManifest, skipped: bool, seconds: dict[str, float] | None = None
) -> dict[str, Any]:
    return {
        "output_uri": out,
        "skipped": skipped,
        "shards": len(manifest.shards),
        "total_rows": manifest.total_rows,
        "total_tokens": manifest.total_tokens,
        "validation_rows": sum(v.rows for v in manifest.validation),
        "vocab_size": manifest.vocab_size,
        "cleaning": manifest.cleaning,
        "packing": manifest.packing,
        "seconds": seconds,
    }
