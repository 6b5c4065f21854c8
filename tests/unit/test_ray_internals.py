"""The private Ray Train symbols that the pretrain stage relies on, named one by one.

Elastic mode (`koelectra_dist/pretrain/elastic.py`) subclasses Ray Train's internal scaling and
failure policies and hands them to its controller; the worker loop quiets one internal logger;
the launcher switches one internal watcher off.
None of this is public API: a Ray upgrade that moves or renames any of it would otherwise fail as
an AttributeError inside Ray's controller, mid-run. This test fails first, naming the symbol."""

from __future__ import annotations

import importlib
import inspect

import pytest

UPGRADE = (
    "koelectra_dist (pretrain/elastic.py, loop.py, launcher.py) relies on this private Ray Train symbol; the "
    "installed Ray ({version}) changed it: adapt elastic.py to the new internals before moving the pin"
)

# (module, attribute path, parameters the override or call needs), in the order elastic.py uses them
SYMBOLS = [
    ("ray.train.v2._internal.execution.scaling_policy", "ElasticScalingPolicy.__init__", ["scaling_config"]),
    (
        "ray.train.v2._internal.execution.scaling_policy",
        "ElasticScalingPolicy._count_possible_workers",
        ["reserved_resources"],
    ),
    (
        "ray.train.v2._internal.execution.scaling_policy",
        "ElasticScalingPolicy.make_decision_for_non_running_worker_group",
        [],
    ),
    (
        "ray.train.v2._internal.execution.scaling_policy",
        "ElasticScalingPolicy.make_decision_for_running_worker_group",
        ["worker_group_state", "worker_group_status"],
    ),
    ("ray.train.v2._internal.execution.scaling_policy", "ElasticScalingPolicy._get_resize_decision", ["num_workers"]),
    ("ray.train.v2._internal.execution.scaling_policy", "ResizeDecision", ["num_workers", "resources_per_worker"]),
    ("ray.train.v2._internal.execution.scaling_policy", "NoopDecision", []),
    ("ray.train.v2._internal.execution.failure_handling.default", "DefaultFailurePolicy.__init__", ["failure_config"]),
    (
        "ray.train.v2._internal.execution.failure_handling.default",
        "DefaultFailurePolicy.make_decision",
        ["training_failed_error"],
    ),
    ("ray.train.v2._internal.execution.failure_handling.failure_policy", "FailureDecision.RAISE", []),
    ("ray.train.v2._internal.execution.failure_handling.failure_policy", "FailureDecision.RETRY", []),
    ("ray.train.torch", "TorchTrainer._initialize_and_run_controller", []),
    (
        "ray.train.v2._internal.execution.controller.controller",
        "TrainController.__init__",
        ["scaling_policy", "failure_policy"],
    ),
    ("ray.train.v2.api.config", "ScalingConfig._resources_per_worker_not_none", []),
    ("ray.train.v2._internal.execution.context", "__file__", []),
]


def _resolve(module: str, path: str) -> object:
    obj: object = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("module", "path", "params"), SYMBOLS, ids=[f"{m}.{p}" for m, p, _ in SYMBOLS])
def test_the_private_ray_train_symbols_elastic_mode_needs_are_there(module, path, params):
    import ray

    why = UPGRADE.format(version=ray.__version__)
    try:
        obj = _resolve(module, path)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{module}.{path} is gone ({type(e).__name__}: {e}): {why}")
    if params:
        target = obj.__init__ if inspect.isclass(obj) else obj
        have = inspect.signature(target).parameters
        missing = [p for p in params if p not in have]
        assert not missing, f"{module}.{path} no longer takes {missing} (it takes {list(have)}): {why}"


def test_the_trainer_hands_its_controller_the_policies_elastic_mode_replaces():
    """ElasticTorchTrainer swaps the `scaling_policy` and `failure_policy` keyword arguments that
    Ray Train's `fit` passes to `_initialize_and_run_controller`."""
    import ray
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    source = inspect.getsource(DataParallelTrainer.fit)
    for keyword in ("_initialize_and_run_controller(", "scaling_policy=", "failure_policy="):
        assert keyword in source, (
            f"DataParallelTrainer.fit no longer calls `{keyword}`: {UPGRADE.format(version=ray.__version__)}"
        )


def test_the_preemption_watcher_switch_is_the_one_ray_train_reads():
    """The launcher turns Ray Train's preemption watcher off on a Ray it started, by this variable,
    which Ray Train's controller must still read (and pass on from the driver's environment)."""
    import ray
    from ray.train.v2._internal import constants

    from koelectra_dist.pretrain.launcher import PREEMPTION_WATCHER_ENV

    why = UPGRADE.format(version=ray.__version__)
    assert getattr(constants, "ENABLE_PREEMPTION_WATCHER_ENV_VAR", None) == PREEMPTION_WATCHER_ENV, why
    assert PREEMPTION_WATCHER_ENV in constants.ENV_VARS_TO_PROPAGATE, why
