"""The probes' picture: each task's score against the pre-training step (mean, with the seeds'
spread as a band), the training loss on a second axis, as curves.png beside probe.jsonl. Written
when training ends and by `koelectra-dist report RUN`."""

from __future__ import annotations

import io
import math
from typing import Any

from koelectra_dist import storage
from koelectra_dist.errors import DataError
from koelectra_dist.probe import records
from koelectra_dist.probe.schedule import DONE


def curves(recs: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float]]]:
    """(step, mean, std) per task, ascending steps, from the finished probes."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    for r in sorted((r for r in recs if r.get("status") == DONE), key=lambda r: r["step"]):
        for name, t in r["tasks"].items():
            out.setdefault(name, []).append((r["step"], t["mean"], t["std"]))
    return out


def png(recs: list[dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    done = sorted((r for r in recs if r.get("status") == DONE), key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for name, points in curves(recs).items():
        metric = next(r["tasks"][name]["metric"] for r in done if name in r["tasks"])
        steps, means, stds = zip(*points, strict=True)
        ax.plot(steps, means, marker="o", label=f"{name} ({metric})")
        low = [m - s for m, s in zip(means, stds, strict=True)]
        ax.fill_between(steps, low, [m + s for m, s in zip(means, stds, strict=True)], alpha=0.2)
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("probe score (x100)")
    losses = [(r["step"], r["train_loss"]) for r in done if isinstance(r.get("train_loss"), (int, float))]
    losses = [(s, v) for s, v in losses if math.isfinite(v)]
    handles, labels = ax.get_legend_handles_labels()
    if losses:
        twin = ax.twinx()
        twin.plot(*zip(*losses, strict=True), color="gray", linestyle="--", marker=".", label="training loss")
        twin.set_ylabel("training loss")
        more, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more, labels + more_labels
    # one legend below the axes: inside, it would cover the points
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.subplots_adjust(bottom=0.22)
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_curves(folder: str, title: str) -> str | None:
    """Draw the records under `folder` into `folder`/curves.png; its URI, or None when no probe
    has finished yet."""
    recs = records.read(folder)
    if not any(r.get("status") == DONE for r in recs):
        return None
    uri = storage.join(folder, records.CURVES)
    storage.write_bytes(uri, png(recs, title))
    return uri


def find_probe_dir(run: str) -> str:
    """The probe folder of RUN: a run's output root, its checkpoint root, or the probe folder itself."""
    for candidate in (storage.join(run, "checkpoints", records.PROBE_DIR), storage.join(run, records.PROBE_DIR), run):
        if storage.exists(storage.join(candidate, records.RECORDS)):
            return candidate
    raise DataError(
        f"{run}: no {records.RECORDS} in {run}/checkpoints/{records.PROBE_DIR}, {run}/{records.PROBE_DIR} or {run}; "
        "name a run's output folder (run.output_uri) or checkpoint folder whose pre-training ran with probe.tasks set"
    )


def report(run: str) -> dict[str, Any]:
    """`koelectra-dist report RUN`: draw the curves; return where, and each task's points."""
    folder = find_probe_dir(run)
    uri = write_curves(folder, run.rstrip("/").rsplit("/", 1)[-1])
    recs = records.read(folder)
    return {
        "records": storage.join(folder, records.RECORDS),
        "png": uri,
        "curves": curves(recs),
        "skipped": [r["step"] for r in recs if r.get("status") != DONE],
    }
