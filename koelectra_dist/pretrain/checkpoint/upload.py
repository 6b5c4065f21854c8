"""One rank's checkpoint writer: the engine state written to a local folder (the only part that
blocks the step), then hashed and uploaded in the background; rank 0 seals the step once every
rank's files are there."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError, KoelectraError
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.pretrain.meta import CheckpointMeta

if TYPE_CHECKING:
    from koelectra_dist.pretrain.engine import Engine


def _local_state(engine: Engine, step: int, rank: int) -> str:
    """Write this rank's engine state to a new local temporary folder; return it."""
    local = tempfile.mkdtemp(prefix=f"koelectra-ckpt-{step}-r{rank}-")
    try:
        engine.save_checkpoint(os.path.join(local, store.DEEPSPEED_DIR), tag=store.DEEPSPEED_TAG)
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    return local


def _marker(uri: str, rank: int, suffix: str) -> str:
    return storage.join(uri, store.UPLOADED_DIR, f"rank-{rank:05d}.{suffix}")


class Uploader:
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
        `held(committed steps)`: the steps retention must keep beyond keep_last (see `store.prune`)."""
        import torch.distributed as dist

        self.root, self.keep_last, self.held = root, keep_last, held
        # Committed steps after the resumed one (an older step named on purpose) are replaced when
        # the run reaches them; their folder is deleted then, in `save`.
        self._committed_later: set[int] = set()
        if dist.get_rank() == 0:
            for step in store.all_steps(root):
                if step > resumed_step:
                    if store.is_committed(store.step_uri(root, step)):
                        self._committed_later.add(step)
                    else:
                        storage.remove(store.step_uri(root, step))
        # Long-lived threads: each keeps its own S3 client (fsspec caches one per thread).
        self._files = ThreadPoolExecutor(upload_threads, thread_name_prefix="ckpt-file")
        self._job = ThreadPoolExecutor(1, thread_name_prefix="ckpt-upload")
        self._pending: tuple[int, Future] | None = None
        self._finished: tuple[int, float] | None = None  # waited for by `save`, not yet polled
        self._cancel = threading.Event()

    def save(self, engine: Engine, step: int, meta: CheckpointMeta) -> dict[str, float]:
        """Capture every rank's state at `step` and start committing it. Collective: every rank
        calls it with the same step. Returns {"stall_s": seconds the caller was blocked,
        "write_s": of which writing the local files}."""
        import torch.distributed as dist

        start = time.perf_counter()
        self._finished = self.wait() or self._finished  # the previous save; raises its failure
        uri = store.step_uri(self.root, step)
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
            store.prune(self.root, self.keep_last, self.held)
        return time.perf_counter() - start

    def _upload(self, local: str, uri: str) -> dict[str, dict[str, Any]]:
        """Hash and upload every file below `local`, several at a time; their digests by name."""

        def one(name: str) -> dict[str, Any]:
            if self._cancel.is_set():
                raise CheckpointError(f"{uri}: upload abandoned (the run stopped)")
            path = os.path.join(local, *name.split("/"))
            digest = store.file_digest(path)
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
            found = {posixpath.basename(f) for f in storage.list_files(storage.join(uri, store.UPLOADED_DIR))}
            if failed := sorted(n for n in found if n.endswith(".failed")):
                reason = storage.read_bytes(storage.join(uri, store.UPLOADED_DIR, failed[0])).decode(errors="replace")
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
        storage.write_bytes(storage.join(uri, store.META), meta_bytes)
        sealed[store.META] = {"bytes": len(meta_bytes), "sha256": hashlib.sha256(meta_bytes).hexdigest()}
        storage.write_json(storage.join(uri, store.COMMITTED), {"step": step, "time": time.time(), "files": sealed})


def save(engine: Engine, root: str, step: int, meta: CheckpointMeta, keep_last: int) -> float:
    """Save and commit `step` before returning (no background upload); return the seconds it took.
    Collective: every rank must call it with the same step. For tests and tools that need a
    committed step at once; training uses `Uploader` through `checkpointer.Checkpointer`."""
    import torch.distributed as dist

    start = time.perf_counter()
    saver = Uploader(root, keep_last, resumed_step=step - 1)
    try:
        saver.save(engine, step, meta)
        saver.wait()
    finally:
        saver.close()
    dist.barrier()  # rank 0 has committed: every rank may read the step
    return time.perf_counter() - start
