"""Pre-training checkpoints: `step-{N:08d}/` folders under a root (local path or s3://).

Layout of one step folder:
- `deepspeed/`: what `engine.save_checkpoint(local_dir, tag="state")` writes on every rank
  (each rank writes its own files into a local temp folder, then uploads them here);
- `meta.json`: a `CheckpointMeta` (step, data position, world size, ZeRO stage, precision, vocabulary
  hash, last metrics, the run config);
- `uploaded/rank-{R:05d}.json`: written by each rank once its files are uploaded, listing them with
  their sizes and sha256 (`uploaded/rank-{R:05d}.failed` when its upload failed);
- `COMMITTED`: written by rank 0 LAST, once every rank's `uploaded/` marker is there; it seals the
  step's file list, each file's size and sha256 (`files`).

Training goes on while the files upload (`Checkpointer`): only writing the engine state to a local
folder blocks the step.

Only committed steps exist for readers: a step folder without COMMITTED (an upload cut short by
a crash) is never resumed from and is removed by the next save's retention pass. A committed step
is used only after its files match what COMMITTED sealed (`verify`); one that does not (a flipped
bit, a truncated or missing file) is rejected loudly, its COMMITTED replaced by `REJECTED` (the
files stay for inspection), and the newest earlier step that verifies is used instead.

Any number of workers can resume a step: the same number loads DeepSpeed's own per-rank files
(bit-exact); another number first converts them to DeepSpeed's universal checkpoint (full fp32
weights and Adam moments per parameter, `deepspeed.checkpoint.ds_to_universal`) in a local scratch
folder and loads that, each rank taking its own ZeRO partition. No RNG state is saved: every
random draw of a micro-batch comes from a seed derived from its stream position (loop.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError, KoelectraError, StorageUnavailable
from koelectra_dist.pretrain.meta import CheckpointMeta

log = logging.getLogger(__name__)

COMMITTED = "COMMITTED"
REJECTED = "REJECTED"
META = "meta.json"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
UPLOADED_DIR = "uploaded"
_STEP_RE = re.compile(r"^step-(\d{8,})$")


def step_uri(root: str, step: int) -> str:
    return storage.join(root, f"step-{step:08d}")


def _all_steps(root: str) -> list[int]:
    return sorted(int(m.group(1)) for name in storage.list_dirs(root) if (m := _STEP_RE.match(name)))


def is_committed(uri: str) -> bool:
    return storage.exists(storage.join(uri, COMMITTED))


def committed_steps(root: str) -> list[int]:
    """Steps whose COMMITTED marker exists, ascending."""
    return [s for s in _all_steps(root) if is_committed(step_uri(root, s))]


def latest_committed(root: str) -> str | None:
    steps = committed_steps(root)
    return step_uri(root, steps[-1]) if steps else None


def _require_committed(uri: str) -> None:
    if not is_committed(uri):
        raise CheckpointError(
            f"{uri}: no {COMMITTED} marker, so this checkpoint is incomplete (its upload was cut "
            "short) and cannot be used; use an earlier step (the latest committed one is chosen "
            "automatically when no step is named)"
        )


def read_meta(uri: str) -> CheckpointMeta:
    _require_committed(uri)
    return CheckpointMeta.from_json(storage.read_json(storage.join(uri, META)), uri)


def _sealed_files(uri: str) -> dict[str, dict[str, Any]] | None:
    """The file list COMMITTED sealed; None for a checkpoint written before files were sealed."""
    marker = storage.read_json(storage.join(uri, COMMITTED))
    return marker.get("files") if isinstance(marker, dict) else None


def verify(uri: str, local_dir: str | None = None) -> list[str]:
    """What is wrong with the committed step `uri`: each sealed file that is missing, of another
    size, or of another sha256 (read from `local_dir`, a local copy, when given). Empty: intact."""
    sealed = _sealed_files(uri)
    if sealed is None:
        log.warning("%s: written before checkpoints sealed their files; it cannot be verified", uri)
        return []
    base = local_dir or uri
    problems = []
    for name, want in sorted(sealed.items()):
        where = storage.join(base, *name.split("/"))
        try:
            if storage.local_path(where) is not None:
                path = storage.local_path(where)
                have = file_digest(path) if os.path.exists(path) else None
            else:
                have = _remote_digest(where) if storage.exists(where) else None
        except StorageUnavailable:
            raise  # the store is down, the file may be fine: never rejected for that
        except KoelectraError as e:
            problems.append(f"{name}: cannot be read ({e})")
            continue
        if have is None:
            problems.append(f"{name}: missing")
        elif have["bytes"] != want["bytes"]:
            problems.append(f"{name}: {have['bytes']} bytes, {want['bytes']} when saved (truncated or replaced)")
        elif have["sha256"] != want["sha256"]:
            problems.append(f"{name}: sha256 differs from the one saved (the file is damaged)")
    return problems


def _remote_digest(uri: str) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    with storage.open_uri(uri) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def reject(uri: str, problems: list[str]) -> None:
    """Take a damaged step out of use: COMMITTED gives way to REJECTED, which says why."""
    storage.write_json(storage.join(uri, REJECTED), {"time": time.time(), "problems": problems})
    storage.remove(storage.join(uri, COMMITTED))


def latest_verified(root: str) -> str | None:
    """The newest committed step whose files match their seal and whose meta.json reads; each
    damaged newer step is reported (file and reason) and rejected. None when nothing was committed;
    CheckpointError when every committed step is damaged."""
    steps = committed_steps(root)
    for step in reversed(steps):
        uri = step_uri(root, step)
        problems = verify(uri)
        if not problems:
            try:
                read_meta(uri)
                return uri
            except CheckpointError as e:
                problems = [str(e)]
        log.warning(
            "checkpoint %s is damaged and will not be used:\n  - %s\nfalling back to the previous committed step",
            uri,
            "\n  - ".join(problems),
        )
        reject(uri, problems)
    if steps:
        raise CheckpointError(
            f"every committed checkpoint under {root} is damaged (steps {', '.join(map(str, steps))}; each "
            f"holds a {REJECTED} file saying why); point checkpoint.storage_uri at a new folder to start afresh"
        )
    return None


def materialize(uri: str, local_dir: str) -> str:
    """A local folder holding the committed checkpoint `uri`: the folder itself when local, else
    a download into `local_dir`."""
    _require_committed(uri)
    local = storage.local_path(uri)
    if local is not None:
        return local
    return storage.download_dir(uri, local_dir)


# ---------------------------------------------------------------- saving (called on every rank)


def file_digest(path: str) -> dict[str, Any]:
    """Size and sha256 of a local file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _local_state(engine: Any, step: int, rank: int) -> str:
    """Write this rank's engine state to a new local temporary folder; return it."""
    local = tempfile.mkdtemp(prefix=f"koelectra-ckpt-{step}-r{rank}-")
    try:
        engine.save_checkpoint(os.path.join(local, DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    return local


def _marker(uri: str, rank: int, suffix: str) -> str:
    return storage.join(uri, UPLOADED_DIR, f"rank-{rank:05d}.{suffix}")


class Checkpointer:
    """One rank's checkpoint writer. `save` blocks only while the engine state is written to a local
    folder; a background thread then hashes and uploads the files (several at a time) and writes
    this rank's marker `uploaded/rank-R.json` listing them. Rank 0's thread then waits for every
    rank's marker, writes meta.json and COMMITTED (sealing every listed file) and prunes. So no
    collective waits for an upload; a crash mid-upload leaves no COMMITTED.

    At most one save is in flight: the next `save` and `wait` (at the end of the run) wait for it.
    Its failure is raised by the next `poll` (each step boundary), `save` or `wait`."""

    def __init__(
        self,
        root: str,
        keep_last: int,
        resumed_step: int,
        upload_threads: int = 8,
        held: Callable[[list[int]], set[int]] | None = None,
    ):
        """Collective-free; rank 0 deletes what an earlier attempt left after `resumed_step` (uploads
        cut short, rejected steps) now, so that `save` makes no storage call before its barrier.
        `held(committed steps)`: the steps retention must keep beyond keep_last (see `prune`)."""
        import torch.distributed as dist

        self.root, self.keep_last, self.held = root, keep_last, held
        # Committed steps after the resumed one (an older step named on purpose) are replaced when
        # the run reaches them; their folder is deleted then, in `save`.
        self._committed_later: set[int] = set()
        if dist.get_rank() == 0:
            for step in _all_steps(root):
                if step > resumed_step:
                    if is_committed(step_uri(root, step)):
                        self._committed_later.add(step)
                    else:
                        storage.remove(step_uri(root, step))
        # Long-lived threads: each keeps its own S3 client (fsspec caches one per thread).
        self._files = ThreadPoolExecutor(upload_threads, thread_name_prefix="ckpt-file")
        self._job = ThreadPoolExecutor(1, thread_name_prefix="ckpt-upload")
        self._pending: tuple[int, Future] | None = None
        self._finished: tuple[int, float] | None = None  # waited for by `save`, not yet polled
        self._cancel = threading.Event()

    def save(self, engine: Any, step: int, meta: CheckpointMeta) -> dict[str, float]:
        """Capture every rank's state at `step` and start committing it. Collective: every rank
        calls it with the same step. Returns {"stall_s": seconds the caller was blocked,
        "write_s": of which writing the local files}."""
        import torch.distributed as dist

        start = time.perf_counter()
        self._finished = self.wait() or self._finished  # the previous save; raises its failure
        uri = step_uri(self.root, step)
        rank, world = dist.get_rank(), dist.get_world_size()
        if rank == 0 and step in self._committed_later:
            storage.remove(uri)
        dist.barrier()  # nobody uploads into the folder before rank 0 has cleaned it
        write_start = time.perf_counter()
        local = _local_state(engine, step, rank)
        write_s = time.perf_counter() - write_start
        future = self._job.submit(self._commit, local, uri, step, rank, world, meta)
        self._pending = (step, future)
        return {"stall_s": time.perf_counter() - start, "write_s": write_s}

    def poll(self) -> tuple[int, float] | None:
        """(step, seconds from save to commit) once the save in flight has finished, else None;
        raises its failure."""
        if self._finished is not None:
            done, self._finished = self._finished, None
            return done
        if self._pending is None or not self._pending[1].done():
            return None
        return self.wait()

    def wait(self) -> tuple[int, float] | None:
        """Block until the save in flight (if any) is committed (rank 0) or uploaded (other ranks);
        return (step, its seconds) or None; raise its failure."""
        if self._pending is None:
            return None
        step, future = self._pending
        self._pending = None
        try:
            return step, future.result()
        except KoelectraError:
            raise
        except Exception as e:  # noqa: BLE001 - a storage outage is transient: the driver retries
            raise RuntimeError(f"checkpoint of step {step}: upload failed ({type(e).__name__}: {e})") from e

    def close(self) -> None:
        """Stop: an upload still in flight is abandoned (its step stays uncommitted)."""
        self._cancel.set()
        self._files.shutdown(wait=False, cancel_futures=True)
        self._job.shutdown(wait=False, cancel_futures=True)

    def _commit(self, local: str, uri: str, step: int, rank: int, world: int, meta: CheckpointMeta) -> float:
        start = time.perf_counter()
        try:
            try:
                files = self._upload(local, uri)
            except BaseException as e:
                with contextlib.suppress(Exception):  # tells rank 0 not to wait for us
                    storage.write_bytes(_marker(uri, rank, "failed"), f"{type(e).__name__}: {e}".encode())
                raise
        finally:
            shutil.rmtree(local, ignore_errors=True)
        storage.write_json(_marker(uri, rank, "json"), files)
        if rank == 0:
            self._seal(uri, step, world, meta)
            prune(self.root, self.keep_last, self.held)
        return time.perf_counter() - start

    def _upload(self, local: str, uri: str) -> dict[str, dict[str, Any]]:
        """Hash and upload every file below `local`, several at a time; their digests by name."""

        def one(name: str) -> dict[str, Any]:
            if self._cancel.is_set():
                raise CheckpointError(f"{uri}: upload abandoned (the run stopped)")
            path = os.path.join(local, *name.split("/"))
            digest = file_digest(path)
            storage.upload_file(path, storage.join(uri, *name.split("/")))
            return digest

        names = sorted(
            os.path.relpath(os.path.join(folder, n), local).replace(os.sep, "/")
            for folder, _, found in os.walk(local)
            for n in found
        )
        futures = {name: self._files.submit(one, name) for name in names}
        return {name: f.result() for name, f in futures.items()}

    def _seal(self, uri: str, step: int, world: int, meta: CheckpointMeta) -> None:
        """Rank 0: once every rank's marker is there, write meta.json, then COMMITTED."""
        delay = 0.05
        while True:
            found = {posixpath.basename(f) for f in storage.list_files(storage.join(uri, UPLOADED_DIR))}
            if failed := sorted(n for n in found if n.endswith(".failed")):
                reason = storage.read_bytes(storage.join(uri, UPLOADED_DIR, failed[0])).decode(errors="replace")
                raise RuntimeError(f"{uri}: {failed[0].split('.')[0]} could not upload its files ({reason})")
            if all(f"rank-{r:05d}.json" in found for r in range(world)):
                break
            if self._cancel.wait(delay):
                raise CheckpointError(f"{uri}: commit abandoned (the run stopped)")
            delay = min(2.0, delay * 2)
        sealed: dict[str, dict[str, Any]] = {}
        for r in range(world):
            sealed.update(storage.read_json(_marker(uri, r, "json")))
        meta_bytes = json.dumps(meta.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
        storage.write_bytes(storage.join(uri, META), meta_bytes)
        sealed[META] = {"bytes": len(meta_bytes), "sha256": hashlib.sha256(meta_bytes).hexdigest()}
        storage.write_json(storage.join(uri, COMMITTED), {"step": step, "time": time.time(), "files": sealed})


def save(engine: Any, root: str, step: int, meta: CheckpointMeta, keep_last: int) -> float:
    """Save and commit `step` before returning (no background upload); return the seconds it took.
    Collective: every rank must call it with the same step."""
    import torch.distributed as dist

    start = time.perf_counter()
    saver = Checkpointer(root, keep_last, resumed_step=step - 1)
    try:
        saver.save(engine, step, meta)
        saver.wait()
    finally:
        saver.close()
    dist.barrier()  # rank 0 has committed: every rank may read the step
    return time.perf_counter() - start


def prune(root: str, keep_last: int, held: Callable[[list[int]], set[int]] | None = None) -> list[int]:
    """Delete committed steps beyond the newest `keep_last` (but not those `held(committed)` names:
    checkpoints a downstream probe still needs), and uncommitted leftovers older than the newest
    committed step (a crashed upload); return the deleted steps."""
    steps = _all_steps(root)
    committed = [s for s in steps if is_committed(step_uri(root, s))]
    keep = set(committed[-keep_last:]) | (held(committed) if held else set())
    newest = committed[-1] if committed else -1
    doomed = [s for s in steps if s not in keep and (s in committed or s < newest)]
    for s in doomed:
        storage.remove(step_uri(root, s))
    return doomed


# ---------------------------------------------------------------- loading (called on every rank)


def load(engine: Any, uri: str, world_size: int) -> CheckpointMeta:
    """Load the committed checkpoint `uri` (chosen by `latest_verified`) into `engine`, one rank of
    `world_size`, and return its meta.json. A checkpoint written by another number of workers is
    loaded through its universal form; the engine must then have been built with
    `load_universal=True` (`needs_universal`)."""
    meta = read_meta(uri)
    scratch = tempfile.mkdtemp(prefix="koelectra-resume-")
    try:
        local = materialize(uri, scratch)
        if storage.local_path(uri) is None and (problems := verify(uri, local)):
            # damaged in transit: a transient fault, so not a user error (the attempt is retried)
            raise RuntimeError(f"{uri}: the downloaded copy does not match its seal: {'; '.join(problems)}")
        load_dir, tag = os.path.join(local, DEEPSPEED_DIR), DEEPSPEED_TAG
        if needs_universal(meta, world_size):
            load_dir, tag = to_universal(os.path.join(load_dir, tag), os.path.join(scratch, "universal"))
            log.info("%s: written by %d workers, loaded on %d via its universal form", uri, meta.world_size, world_size)
        load_path, _ = engine.load_checkpoint(
            load_dir, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise CheckpointError(f"{uri}: DeepSpeed found no engine state under {DEEPSPEED_DIR}/{DEEPSPEED_TAG}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return meta


def needs_universal(meta: CheckpointMeta, world_size: int) -> bool:
    """Whether `world_size` workers must load this checkpoint through its universal form."""
    return meta.world_size != world_size


def to_universal(state_dir: str, out_root: str) -> tuple[str, str]:
    """Convert DeepSpeed's per-rank files in `state_dir` (any ZeRO stage) to a universal checkpoint
    under `out_root`; return (load_dir, tag) for `engine.load_checkpoint`. In this process (no
    worker pool): it runs on every rank that needs it, beside training's own threads."""
    import argparse

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tag = "universal"
    args = argparse.Namespace(
        input_folder=state_dir,
        output_folder=os.path.join(out_root, tag),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        # our engines do not record `universal_checkpoint_info` (a Megatron-style client state);
        # its defaults (no tensor or pipeline parallelism) are ours
        inject_missing_state=True,
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ds_to_universal(args)
    log.debug("ds_to_universal: %s", printed.getvalue())
    return out_root, tag


def consolidated_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict of a committed checkpoint, whatever its ZeRO stage (no
    distributed setup needed). Keys start with `generator.` / `discriminator.`."""
    meta = read_meta(uri)
    with tempfile.TemporaryDirectory(prefix="koelectra-consolidate-") as scratch:
        local = os.path.join(materialize(uri, scratch), DEEPSPEED_DIR)
        if meta.zero_stage == 0:
            path = os.path.join(local, DEEPSPEED_TAG, "mp_rank_00_model_states.pt")
            module = torch.load(path, map_location="cpu", weights_only=False)["module"]
            return {k: v.float() for k, v in module.items()}
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(local, tag=DEEPSPEED_TAG))
