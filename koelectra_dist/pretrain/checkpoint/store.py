"""The step folders under a checkpoint root: naming, the COMMITTED seal and its verification,
which committed step to use, and retention. No engine and no collective here."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable
from typing import Any

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError, KoelectraError, StorageUnavailable, bullets
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


def all_steps(root: str) -> list[int]:
    return sorted(int(m.group(1)) for name in storage.list_dirs(root) if (m := _STEP_RE.match(name)))


def is_committed(uri: str) -> bool:
    return storage.exists(storage.join(uri, COMMITTED))


def committed_steps(root: str) -> list[int]:
    """Steps whose COMMITTED marker exists, ascending."""
    return [s for s in all_steps(root) if is_committed(step_uri(root, s))]


def latest_committed(root: str) -> str | None:
    steps = committed_steps(root)
    return step_uri(root, steps[-1]) if steps else None


def _require_committed(uri: str) -> None:
    """CheckpointError unless `uri` is a committed step folder, saying what it is instead: a file
    (meta.json named in place of its folder), a step an earlier run rejected, an upload cut short."""
    if is_committed(uri):
        return
    fs, path = storage.filesystem(uri)
    if fs.isfile(path):
        folder = posixpath.dirname(uri.rstrip("/")) if storage.is_s3(uri) else os.path.dirname(uri)
        raise CheckpointError(
            f"{uri} is a file, not a step folder; name its folder {folder} (a step-N folder holding "
            f"{COMMITTED}, {META} and {DEEPSPEED_DIR}/)"
        )
    rejected = storage.join(uri, REJECTED)
    if storage.exists(rejected):
        raise CheckpointError(
            f"{uri} was rejected by an earlier run: its files do not match their seal ({rejected}: "
            f"{'; '.join(_rejection_reasons(rejected))}); use another step (the newest one that verifies is "
            "chosen when no step is named)"
        )
    raise CheckpointError(
        f"{uri}: no {COMMITTED} marker, so this checkpoint is incomplete (its upload was cut "
        "short) and cannot be used; use an earlier step (the latest committed one is chosen "
        "automatically when no step is named)"
    )


def _rejection_reasons(rejected: str) -> list[str]:
    try:
        problems = storage.read_json(rejected).get("problems")
    except (KoelectraError, AttributeError, UnicodeDecodeError):
        problems = None
    return [str(p) for p in problems[:3]] if isinstance(problems, list) and problems else ["see the file"]


def read_meta(uri: str) -> CheckpointMeta:
    _require_committed(uri)
    return CheckpointMeta.from_json(storage.read_json(storage.join(uri, META)), uri)


class DamagedSeal(CheckpointError):
    """COMMITTED itself is damaged: the step is rejected like one with a damaged file."""


def sealed_files(uri: str) -> dict[str, dict[str, Any]] | None:
    """The file list COMMITTED sealed; None for a checkpoint written before files were sealed
    (its marker holds only step and time). DamagedSeal when the marker is not one this project
    writes (not JSON, another step, a file list without sizes and hashes)."""
    data = storage.read_bytes(storage.join(uri, COMMITTED))  # an outage stays a StorageError
    try:
        marker = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedSeal(f"{COMMITTED}: not valid JSON ({e}); the marker is damaged") from None
    step = _STEP_RE.match(posixpath.basename(uri.rstrip("/")))
    if not isinstance(marker, dict) or (step and marker.get("step") != int(step.group(1))):
        raise DamagedSeal(f"{COMMITTED}: not this step's seal (damaged)")
    files = marker.get("files")
    if files is None and set(marker) <= {"step", "time"}:
        return None
    entries = files.values() if isinstance(files, dict) else [None]
    if not all(
        isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str) for e in entries
    ):
        raise DamagedSeal(f"{COMMITTED}: its file list is damaged")
    return files


def verify(uri: str, local_dir: str | None = None) -> list[str]:
    """What is wrong with the committed step `uri`: a damaged COMMITTED, or each sealed file that
    is missing, of another size, or of another sha256 (read from `local_dir`, a local copy, when
    given). Empty: intact."""
    try:
        sealed = sealed_files(uri)
    except DamagedSeal as e:
        return [str(e)]
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
            "checkpoint %s is damaged and will not be used:%s\nfalling back to the previous committed step",
            uri,
            bullets(problems),
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


def file_digest(path: str) -> dict[str, Any]:
    """Size and sha256 of a local file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def prune(root: str, keep_last: int, held: Callable[[list[int]], set[int]] | None = None) -> list[int]:
    """Delete committed steps beyond the newest `keep_last` (but not those `held(committed)` names:
    checkpoints a downstream probe still needs), and uncommitted leftovers older than the newest
    committed step (a crashed upload); return the deleted steps."""
    steps = all_steps(root)
    committed = [s for s in steps if is_committed(step_uri(root, s))]
    keep = set(committed[-keep_last:]) | (held(committed) if held else set())
    newest = committed[-1] if committed else -1
    doomed = [s for s in steps if s not in keep and (s in committed or s < newest)]
    for s in doomed:
        storage.remove(step_uri(root, s))
    return doomed
