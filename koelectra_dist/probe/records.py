"""probe.jsonl: one JSON line per probed (or skipped, or failed) checkpoint step, appended by the
driver only, under `<checkpoint root>/probe/`. It is the probes' whole memory: a restarted driver
probes only the scheduled steps without a line, retention keeps their checkpoints until they have
one, and `export.checkpoint: best` reads the scores from it."""

from __future__ import annotations

import json
import time
from typing import Any

from koelectra_dist import storage

PROBE_DIR = "probe"
RECORDS = "probe.jsonl"
CURVES = "curves.png"


def probe_dir(checkpoint_root: str) -> str:
    """Where a run's probe results live: beside its step folders (a new checkpoint folder is a new
    run, with results of its own)."""
    return storage.join(checkpoint_root, PROBE_DIR)


def read(folder: str) -> list[dict[str, Any]]:
    """The records under `folder`, oldest first, one per step (a repeated step keeps its first
    line); [] when there are none. A line cut short by a crash mid-write cannot exist: the file is
    rewritten whole, atomically."""
    uri = storage.join(folder, RECORDS)
    if not storage.exists(uri):
        return []
    records, seen = [], set()
    for line in storage.read_bytes(uri).decode("utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record["step"] not in seen:
                seen.add(record["step"])
                records.append(record)
    return records


def append(folder: str, record: dict[str, Any]) -> None:
    """Add one record (S3 has no append: the file is rewritten whole, an atomic PUT; locally an
    atomic rename). Only the driver writes, one record at a time."""
    uri = storage.join(folder, RECORDS)
    old = storage.read_bytes(uri) if storage.exists(uri) else b""
    line = json.dumps({**record, "time": round(time.time(), 3)}, ensure_ascii=False) + "\n"
    storage.write_bytes(uri, old + line.encode("utf-8"))


def rule(cfg: Any) -> Any:
    """`schedule.scheduled` bound to the run's settings: step -> whether it is probed."""
    from koelectra_dist.probe.schedule import scheduled

    interval, every, final = cfg.checkpoint.interval_steps, cfg.probe.every, cfg.train.steps
    return lambda step: scheduled(step, interval, every, final)


def best_task(cfg: Any) -> str | None:
    """The task `export.checkpoint: best` maximises, or None when export does not pick by probes."""
    if cfg.export.checkpoint != "best" or not cfg.probe.tasks:
        return None
    return cfg.export.best_task or cfg.probe.tasks[0]


def held_steps(cfg: Any, committed: list[int]) -> set[int]:
    """The committed steps that keep_last must not prune for the probes (see `schedule.held`)."""
    from koelectra_dist.probe.schedule import held

    if not cfg.probe.enabled():
        return set()
    return held(committed, read(probe_dir(cfg.paths.checkpoints)), rule(cfg), best_task(cfg))
