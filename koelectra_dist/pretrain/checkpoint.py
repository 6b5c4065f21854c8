"""Pre-training checkpoints: `step-{N:08d}/` folders under a root (local path or s3://).

Layout of one step folder:
- `deepspeed/`: what `engine.save_checkpoint(local_dir, tag="state")` writes on every rank
  (each rank writes its own files into a local temp folder, then uploads them here);
- `meta.json`: a `CheckpointMeta` (step, data position, world size, ZeRO stage, precision, vocabulary
  hash, last metrics, the run config);
- `COMMITTED`: written by rank 0 LAST, after every rank's upload; it seals the step's file list,
  each file's size and sha256 (`files`).

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
import re
import shutil
import tempfile
import time
from typing import Any

import torch

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError, KoelectraError
from koelectra_dist.pretrain.meta import CheckpointMeta

log = logging.getLogger(__name__)

COMMITTED = "COMMITTED"
REJECTED = "REJECTED"
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


def _digests(local_dir: str) -> dict[str, dict[str, Any]]:
    """Every file below `local_dir`, by its '/'-separated relative path."""
    found = {}
    for folder, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, local_dir).replace(os.sep, "/")] = file_digest(path)
    return found


def save(engine: Any, root: str, step: int, meta: CheckpointMeta, keep_last: int) -> float:
    """Save the engine state of every rank to `root`/step-N and commit it; return the seconds it
    took. Collective: every rank must call it with the same step."""
    import torch.distributed as dist

    start = time.perf_counter()
    uri = step_uri(root, step)
    rank = dist.get_rank()
    if rank == 0:
        storage.remove(uri)  # a rejected or abandoned earlier attempt at this step
    dist.barrier()
    local = tempfile.mkdtemp(prefix=f"koelectra-ckpt-{step}-r{rank}-")
    try:
        engine.save_checkpoint(os.path.join(local, DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        files = _digests(local)
        storage.upload_dir(local, uri)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    every_rank: list[dict[str, Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(every_rank, files)  # also the barrier: every rank's files are stored
    if rank == 0:
        sealed = {name: digest for rank_files in every_rank for name, digest in (rank_files or {}).items()}
        meta_bytes = json.dumps(meta.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
        storage.write_bytes(storage.join(uri, META), meta_bytes)
        sealed[META] = {"bytes": len(meta_bytes), "sha256": hashlib.sha256(meta_bytes).hexdigest()}
        storage.write_json(storage.join(uri, COMMITTED), {"step": step, "time": time.time(), "files": sealed})
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
