"""Running a worker loop on Ray Train, for both training stages (pretrain and distill): one
`TorchTrainer` for a fixed worker count or a range (elastic mode, elastic.py), and what a failed
run does next.

A fixed count is retried here, not by Ray Train: each later attempt starts a new worker group from
the newest verified checkpoint, and an attempt that failed with a user error stops the run at once
(Ray Train's own failure policy cannot tell the two apart). A range is retried by Ray Train's
elastic controller, whose failure policy (elastic.py) makes the same distinction. Either way a user
error reaches the caller as itself."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from koelectra_dist import storage, tracking
from koelectra_dist.config import Config
from koelectra_dist.errors import KoelectraError, user_error_in
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.pretrain.config import allowed_worker_counts, is_elastic
from koelectra_dist.pretrain.preflight import check_resources, worker_bundle

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer

log = logging.getLogger(__name__)

PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
"""Ray Train's switch for its preemption watcher (an actor per worker group that polls node drains),
read by its controller from the driver's environment when the controller starts."""

WorkerLoop = Callable[[dict[str, Any]], None]
"""A Ray Train worker loop, taking {"cfg": Config, "resume": the step URI to resume from or None}."""


def _ray_storage(root: str) -> dict[str, Any]:
    """RunConfig storage for Ray Train's own bookkeeping, beside our checkpoints."""
    if not storage.is_s3(root):
        return {"storage_path": os.path.abspath(storage.local_path(root) or root)}
    import pyarrow.fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    fs = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, region=os.environ.get("AWS_DEFAULT_REGION"))
    return {"storage_path": root[len("s3://") :].rstrip("/"), "storage_filesystem": fs}


def trainer(cfg: Config, loop: WorkerLoop, resume: str | None) -> TorchTrainer:
    """The Ray Train trainer running `loop` as `cfg.distributed` says: `num_workers` workers, or a
    range of them in elastic mode (where Ray Train retries failures itself, `max_failures` times)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    d = cfg.distributed
    elastic = is_elastic(d)
    kwargs: dict[str, Any] = {
        "train_loop_config": {"cfg": cfg, "resume": resume},
        "torch_config": TorchConfig(backend="nccl" if d.gpus_per_worker else "gloo"),
        "run_config": RunConfig(
            name=f"{cfg.run.name}-ray",
            failure_config=FailureConfig(max_failures=d.max_failures if elastic else 0),
            **_ray_storage(cfg.paths.checkpoints),
        ),
    }
    scaling = {"use_gpu": d.gpus_per_worker > 0, "resources_per_worker": worker_bundle(cfg)}
    if not elastic:
        return TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=d.num_workers, **scaling), **kwargs)
    from koelectra_dist.pretrain.elastic import ElasticTorchTrainer

    allowed = allowed_worker_counts(cfg.train, d)
    scaling_config = ScalingConfig(
        num_workers=(allowed[0], allowed[-1]), elastic_resize_monitor_interval_s=d.resize_check_s, **scaling
    )
    return ElasticTorchTrainer(loop, allowed_workers=allowed, scaling_config=scaling_config, **kwargs)


def run_trainer(trainer: TorchTrainer) -> None:
    """`trainer.fit()`, a user error raised inside (by any worker) raised as itself."""
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - a user error is raised as itself, anything else as it is
        user = user_error_in(e)
        if user is not None:
            raise user from None
        raise


@contextlib.contextmanager
def _preemption_watcher(needed: bool) -> Iterator[None]:
    """Ray Train's preemption watcher off for the trainers started inside unless `needed` (or set by
    the user). Nothing drains a node of a Ray this process started, so there it would watch nothing;
    and Ray Train creates it with the workers' actor handles as constructor arguments (kept in the
    object store) and max_restarts=-1, which Ray reports as an error on every run
    (ray-project/ray#53727). Without it no preemption is announced, which is the truth there."""
    if needed or PREEMPTION_WATCHER_ENV in os.environ:
        yield
        return
    os.environ[PREEMPTION_WATCHER_ENV] = "0"
    try:
        yield
    finally:
        os.environ.pop(PREEMPTION_WATCHER_ENV, None)


def _attempts(max_failures: int) -> range:
    return range(1, 2**62 if max_failures < 0 else max_failures + 2)


def _fit_elastic(cfg: Config, loop: WorkerLoop, resume: str | None) -> None:
    """One Ray Train run in elastic mode: Ray Train resizes and retries (elastic.py)."""
    d = cfg.distributed
    allowed = allowed_worker_counts(cfg.train, d)
    log.info(
        "elastic: %d to %d workers (counts that keep the global batch: %s), ZeRO %d, %s, resuming from %s",
        allowed[0],
        allowed[-1],
        allowed,
        d.zero_stage,
        d.precision,
        resume,
    )
    run_trainer(trainer(cfg, loop, resume))


def _fit_fixed(cfg: Config, loop: WorkerLoop, resume: str | None) -> None:
    """Attempts of `distributed.num_workers` workers, each from the newest verified checkpoint."""
    d, root = cfg.distributed, cfg.paths.checkpoints
    attempts = _attempts(d.max_failures)
    for attempt in attempts:
        log.info(
            "%d workers, ZeRO %d, %s, attempt %d, resuming from %s",
            d.num_workers,
            d.zero_stage,
            d.precision,
            attempt,
            resume,
        )
        attempt_trainer = trainer(cfg, loop, resume)
        try:
            run_trainer(attempt_trainer)
            return
        except KoelectraError:
            raise
        except Exception as e:  # noqa: BLE001 - anything but a user error is retried
            if attempt == attempts[-1]:
                raise
            log.warning("attempt %d failed (%s: %s); starting again", attempt, type(e).__name__, e)
            # After a storage outage the next attempt starts once the store answers again.
            resume = storage.when_available(lambda: store.latest_verified(root), f"pretrain: {root}")


def fit(cfg: Config, loop: WorkerLoop, resume: str | None) -> None:
    """Run `loop` on Ray Train worker groups as `cfg.distributed` says, until it returns; the first
    group resumes from `resume` (the caller chose and verified it). Failures: module docstring."""
    from koelectra_dist import ray_runtime

    d = cfg.distributed
    ray_runtime.connect(cfg)
    check_resources(cfg, ray_runtime.cluster_can_grow())
    tracking.start_run(cfg, cfg.paths.checkpoints)  # before the workers, which log to it
    with _preemption_watcher(needed=ray_runtime.cluster_can_grow()):
        if is_elastic(d):
            _fit_elastic(cfg, loop, resume)
        else:
            _fit_fixed(cfg, loop, resume)
