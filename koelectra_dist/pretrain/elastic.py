"""Ray Train's elastic mode for a `distributed.num_workers` range: which worker counts Ray may
choose, and which failures it may retry.

Ray Train 2.x (`ScalingConfig(num_workers=(min, max))`) sizes the worker group to what the cluster
holds: it starts once `min` workers fit, grows (a restart of the whole group) when the autoscaler
adds nodes and restarts with fewer after a lost node. Two things it cannot know are added here, on
its controller's scaling and failure policies (Ray 2.60's internal API, the only way to shape them):

- a worker count must keep the global batch (global % (micro x W) == 0): a count the cluster
  offers that does not is rounded DOWN to the largest one that does (the spare workers' resources
  stay idle until the next resize) - never another global batch, never a refused start;
- a user error (bad data, config, checkpoint) stops the run at once; other failures (a lost node,
  a storage outage) are retried `distributed.max_failures` times, preemptions always.

Each resize and its cause is logged by the controller as a `koelectra_dist.pretrain.elastic`
line ("resize: ..."), which Ray copies to the driver's log.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.failure_handling.default import DefaultFailurePolicy
from ray.train.v2._internal.execution.failure_handling.failure_policy import FailureDecision
from ray.train.v2._internal.execution.scaling_policy import ElasticScalingPolicy, ResizeDecision

from koelectra_dist.errors import user_error_in
from koelectra_dist.pretrain.preflight import workers_that_fit

log = logging.getLogger(__name__)


def _controller_log() -> logging.Logger:
    """This module's logger, shown at INFO in Ray's controller process too (its root logger is
    unconfigured there, so INFO lines would be dropped)."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return log


SETTLE_S = 20.0
"""After a worker group fails, wait up to this long (or until a node is declared dead) before sizing
the next one: Ray declares a node that vanished dead only after its health checks fail (about 15 s
by default), and a group sized with it waits out Ray Train's startup timeout (60 s) before failing."""


def usable(count: int, allowed: list[int]) -> int:
    """The largest allowed worker count <= `count` (0 when none is)."""
    return max((w for w in allowed if w <= count), default=0)


class BatchKeepingScalingPolicy(ElasticScalingPolicy):
    """Ray's elastic policy, offering only the worker counts in `allowed`, and only as many workers
    as the live nodes hold: right after a node dies, the resources Ray reserved for the run still
    include it, and a worker group of that size would wait for its startup timeout."""

    def __init__(self, scaling_config: Any, allowed: list[int]):
        super().__init__(scaling_config)
        self.allowed = allowed
        self._running = 0  # the worker group's size while it runs; 0 when (re)starting
        self._settle: tuple[float, set[str]] | None = None

    def _count_possible_workers(self, reserved_resources: Any) -> int:
        import ray

        bundle = self.scaling_config._resources_per_worker_not_none
        alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        possible = min(super()._count_possible_workers(reserved_resources), workers_that_fit(bundle, alive))
        return usable(possible, self.allowed)

    def make_decision_for_non_running_worker_group(self) -> Any:
        import time

        import ray
        from ray.train.v2._internal.execution.scaling_policy import NoopDecision

        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        if self._running:  # the group just failed: a lost node may not be declared dead yet
            self._settle = (time.monotonic() + SETTLE_S, alive)
        self._running = 0
        if self._settle is not None:
            until, before = self._settle
            if time.monotonic() < until and alive == before:
                return NoopDecision()
            self._settle = None
        return super().make_decision_for_non_running_worker_group()

    def make_decision_for_running_worker_group(self, worker_group_state: Any, worker_group_status: Any) -> Any:
        self._running = worker_group_state.num_workers
        return super().make_decision_for_running_worker_group(worker_group_state, worker_group_status)

    def _get_resize_decision(self, num_workers: int) -> ResizeDecision:
        if not self._running:
            _controller_log().info("resize: starting %d workers (the cluster holds them now)", num_workers)
        else:
            cause = "grow: nodes were added" if num_workers > self._running else "shrink: nodes went away"
            _controller_log().info("resize: %d -> %d workers (%s)", self._running, num_workers, cause)
        return super()._get_resize_decision(num_workers)


def _first_cause(error: BaseException) -> str:
    """One line saying why a worker group failed (a worker's own error, else the error's text)."""
    failures = getattr(error, "worker_failures", None) or {}
    inner = next(iter(failures.values()), None) or getattr(error, "controller_failure", None) or error
    lines = [line for line in str(inner).splitlines() if line.strip()]
    return (lines[-1] if lines else type(inner).__name__)[:300]


class UserErrorsStopPolicy(DefaultFailurePolicy):
    """Ray's failure policy, except that a user error is raised at once, never retried."""

    def make_decision(self, training_failed_error: Any) -> FailureDecision:
        if user_error_in(training_failed_error) is not None:
            return FailureDecision.RAISE
        decision = super().make_decision(training_failed_error)
        if decision == FailureDecision.RETRY:
            _controller_log().warning(
                "resize: the worker group failed (%s), restarting with the workers the cluster holds: %s",
                type(training_failed_error).__name__,
                _first_cause(training_failed_error),
            )
        return decision


class ElasticTorchTrainer(TorchTrainer):
    """TorchTrainer whose controller uses the two policies above."""

    def __init__(self, *args: Any, allowed_workers: list[int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._allowed_workers = allowed_workers

    def _initialize_and_run_controller(self, **controller_init_kwargs: Any) -> Any:
        controller_init_kwargs["scaling_policy"] = BatchKeepingScalingPolicy(self.scaling_config, self._allowed_workers)
        controller_init_kwargs["failure_policy"] = UserErrorsStopPolicy(self.run_config.failure_config)
        return super()._initialize_and_run_controller(**controller_init_kwargs)
