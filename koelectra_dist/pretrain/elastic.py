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


def usable(count: int, allowed: list[int]) -> int:
    """The largest allowed worker count <= `count` (0 when none is)."""
    return max((w for w in allowed if w <= count), default=0)


class BatchKeepingScalingPolicy(ElasticScalingPolicy):
    """Ray's elastic policy, offering only the worker counts in `allowed`."""

    def __init__(self, scaling_config: Any, allowed: list[int]):
        super().__init__(scaling_config)
        self.allowed = allowed
        self._size = 0

    def _count_possible_workers(self, reserved_resources: Any) -> int:
        return usable(super()._count_possible_workers(reserved_resources), self.allowed)

    def _get_resize_decision(self, num_workers: int) -> ResizeDecision:
        if self._size == 0:
            cause = "first start"
        elif num_workers > self._size:
            cause = "grow: the cluster holds more workers (nodes added)"
        elif num_workers < self._size:
            cause = "shrink: fewer workers fit (a node was lost or is draining)"
        else:
            cause = "restart at the same size after a failure"
        _controller_log().info("resize: %d -> %d workers (%s)", self._size, num_workers, cause)
        self._size = num_workers
        return super()._get_resize_decision(num_workers)


class UserErrorsStopPolicy(DefaultFailurePolicy):
    """Ray's failure policy, except that a user error is raised at once, never retried."""

    def make_decision(self, training_failed_error: Any) -> FailureDecision:
        if user_error_in(training_failed_error) is not None:
            return FailureDecision.RAISE
        decision = super().make_decision(training_failed_error)
        if decision == FailureDecision.RETRY:
            _controller_log().warning(
                "resize: the worker group failed (%s: %s); restarting with the workers the cluster now holds",
                type(training_failed_error).__name__,
                str(training_failed_error).splitlines()[0][:300],
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
