"""The fine-tuning results table: per-run scores summarised per task, as JSON and Markdown."""

from __future__ import annotations

import math
import statistics
from typing import Any


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined score (e.g. constant predictions in a correlation) becomes null."""
    return value if math.isfinite(value) else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task (in run order): metric, mean and sample standard deviation of the scores (x100), runs."""
    tasks: dict[str, dict[str, Any]] = {}
    for run in runs:
        run = {**run, "score": _finite(run["score"])}
        entry = tasks.setdefault(run["task"], {"metric": run["metric"], "runs": []})
        entry["runs"].append(run)
    for entry in tasks.values():
        scores = [r["score"] for r in entry["runs"]]
        if None in scores:
            entry["mean"] = entry["std"] = None
        else:
            entry["mean"] = statistics.fmean(scores)
            entry["std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return tasks


def _score_cell(entry: dict[str, Any]) -> str:
    if entry["mean"] is None:
        return "undefined"
    if len(entry["runs"]) == 1:
        return f"{entry['mean']:.2f}"
    return f"{entry['mean']:.2f} ± {entry['std']:.2f}"


def _file_name(uri: str) -> str:
    """A results table names files, not the machine's folders."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def markdown(tasks: dict[str, dict[str, Any]], model: str) -> str:
    """The table the model card shows (scores x100, mean ± std over seeds), naming the split and
    the file each score comes from (and the dev file that chose the epoch for test scores)."""
    lines = [
        f"Fine-tuned from `{_file_name(model)}`; scores x100, mean ± standard deviation over seeds.",
        "",
        "| task | metric | score | split (file) | seeds | train / eval examples | epochs / batch / lr |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in tasks.items():
        first = entry["runs"][0]
        seeds = ", ".join(str(r["seed"]) for r in entry["runs"])
        split = f"{first.get('eval_split', 'dev')} (`{_file_name(first['eval_file'])}`)"
        if first.get("selection"):
            split += f", epoch chosen on `{_file_name(first['selection']['on'])}`"
        elif first.get("eval_split") == "test":
            split += ", final epoch (no dev file)"
        lines.append(
            f"| {name} | {entry['metric']} | {_score_cell(entry)} | {split} | {seeds} | "
            f"{first['train_examples']:,} / {first['eval_examples']:,} | "
            f"{first['epochs']:g} / {first['batch_size']} / {first['learning_rate']:g} |"
        )
    return "\n".join(lines) + "\n"
