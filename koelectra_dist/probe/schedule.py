"""Which checkpoints are probed, what happens when probes pile up, which checkpoints retention must
keep for them, and which probed checkpoint is best. Pure rules over steps and records (no Ray)."""

from __future__ import annotations

from collections import deque
from typing import Any

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


def scheduled(step: int, interval_steps: int, every: int, final_step: int) -> bool:
    """Whether a committed `step` is probed: multiples of interval x every, and the final step.
    A function of the step alone, so a restarted or resized run selects the same checkpoints."""
    return step == final_step or (step > 0 and step % (interval_steps * every) == 0)


def pending(committed: list[int], records: list[dict[str, Any]], rule: Any) -> list[int]:
    """Scheduled committed steps without a record, ascending. `rule(step) -> bool` is `scheduled`
    bound to the run's settings."""
    recorded = {r["step"] for r in records}
    return [s for s in committed if rule(s) and s not in recorded]


class Backlog:
    """The busy rule. `due(step)` is called once per newly committed scheduled step, in step order;
    it answers what to do with it now:
    - "start" when fewer than `max_running` probes run;
    - else "queue" (`when_busy` "queue", or the final step, which is always probed) or "skip".
    `finished()` frees a slot; `next()` hands out the oldest queued step when a slot is free."""

    def __init__(self, max_running: int, when_busy: str, final_step: int):
        self.max_running, self.when_busy, self.final_step = max_running, when_busy, final_step
        self.running: set[int] = set()
        self.queued: deque[int] = deque()

    def due(self, step: int) -> str:
        if len(self.running) < self.max_running and not self.queued:
            self.running.add(step)
            return "start"
        if self.when_busy == "queue" or step == self.final_step:
            self.queued.append(step)
            return "queue"
        return "skip"

    def finished(self, step: int) -> None:
        self.running.discard(step)

    def next(self) -> int | None:
        if self.queued and len(self.running) < self.max_running:
            step = self.queued.popleft()
            self.running.add(step)
            return step
        return None

    def idle(self) -> bool:
        return not self.running and not self.queued


def best(records: list[dict[str, Any]], task: str) -> dict[str, Any] | None:
    """The finished probe with the highest mean score on `task` (the later step on a tie: more
    training for the same score); None when no probe of it finished."""
    scored = [r for r in records if r.get("status") == DONE and task in r.get("tasks", {})]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["tasks"][task]["mean"], r["step"]))


def held(committed: list[int], records: list[dict[str, Any]], rule: Any, best_task: str | None) -> set[int]:
    """Committed steps retention must keep: those a probe still needs (scheduled, no record yet),
    and, when export picks the best checkpoint (`best_task` given), the best one so far."""
    keep = set(pending(committed, records, rule))
    if best_task is not None and (top := best(records, best_task)) is not None:
        keep.add(top["step"])
    return keep
