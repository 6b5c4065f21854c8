"""Pre-training checkpoints: `step-{N:08d}/` folders under a root (local path or s3://).

Layout of one step folder:
- `deepspeed/`: what `engine.save_checkpoint(local_dir, tag="state")` writes on every rank
  (each rank writes its own files into a local temp folder, then uploads them here);
- `rng/rank-{R:05d}.pt`: each rank's python, numpy and torch RNG states;
- `meta.json`: a `CheckpointMeta` (step, data position, world size, ZeRO stage, precision, vocabulary
  hash, last metrics, the run config);
- `COMMITTED`: written by rank 0 LAST, after a barrier that follows every rank's upload.

Only committed steps exist for readers: a step folder without COMMITTED (an upload cut short by
a crash) is never resumed from and is removed by the next save's retention pass.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import torch

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.meta import CheckpointMeta

COMMITTED = "COMMITTED"
META = "meta.json"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
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


def materialize(uri: str, local_dir: str) -> str:
    """A local folder holding the committed checkpoint `uri`: the folder itself when local, else
    a download into `local_dir`."""
    _require_committed(uri)
    local = storage.local_path(uri)
    if local is not None:
        return local
    return storage.download_dir(uri, local_dir)


# ---------------------------------------------------------------- RNG state, per rank


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rng_file(base: str, rank: int) -> str:
    return os.path.join(base, "rng", f"rank-{rank:05d}.pt")


# ---------------------------------------------------------------- saving (called on every rank)


def save(engine: Any, root: str, step: int, meta: CheckpointMeta, keep_last: int) -> float:
    """Save the engine state of every rank to `root`/step-N and commit it; return the seconds it
    took. Collective: every rank must call it with the same step."""
    import torch.distributed as dist

    start = time.perf_counter()
    uri = step_uri(root, step)
    rank = dist.get_rank()
    local = tempfile.mkdtemp(prefix=f"koelectra-ckpt-{step}-r{rank}-")
    try:
        engine.save_checkpoint(os.path.join(local, DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        os.makedirs(os.path.dirname(_rng_file(local, rank)), exist_ok=True)
        torch.save(rng_state(), _rng_file(local, rank))
        storage.upload_dir(local, uri)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    dist.barrier()  # every rank's files are stored before the marker says so
    if rank == 0:
        storage.write_json(storage.join(uri, META), meta.to_json())
        storage.write_json(storage.join(uri, COMMITTED), {"step": step, "time": time.time()})
        prune(root, keep_last)
    dist.barrier()
    return time.perf_counter() - start


def prune(root: str, keep_last: int) -> list[int]:
    """Delete committed steps beyond the newest `keep_last`, and uncommitted leftovers older than the
    newest committed step (a crashed upload); return the deleted steps."""
    steps = _all_steps(root)
    committed = [s for s in steps if is_committed(step_uri(root, s))]
    keep = set(committed[-keep_last:])
    newest = committed[-1] if committed else -1
    doomed = [s for s in steps if s not in keep and (s in committed or s < newest)]
    for s in doomed:
        storage.remove(step_uri(root, s))
    return doomed


# ---------------------------------------------------------------- loading (called on every rank)


def load(engine: Any, uri: str, rank: int) -> CheckpointMeta:
    """Load the committed checkpoint `uri` into `engine` on this rank, restore this rank's RNG
    states, and return its meta.json."""
    meta = read_meta(uri)
    scratch = tempfile.mkdtemp(prefix="koelectra-resume-")
    try:
        local = materialize(uri, scratch)
        load_path, _ = engine.load_checkpoint(
            os.path.join(local, DEEPSPEED_DIR),
            tag=DEEPSPEED_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if load_path is None:
            raise CheckpointError(f"{uri}: DeepSpeed found no engine state under {DEEPSPEED_DIR}/{DEEPSPEED_TAG}")
        rng = _rng_file(local, rank)
        if not os.path.exists(rng):
            raise CheckpointError(f"{uri}: no RNG state for rank {rank}; the checkpoint is damaged")
        set_rng_state(torch.load(rng, weights_only=False))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return meta


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
