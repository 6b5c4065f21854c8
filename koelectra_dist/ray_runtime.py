"""Connecting the driver to Ray: the cluster we run under (`ray job submit`, RAY_ADDRESS), or a
local one started for this process."""

from __future__ import annotations

import logging
import os
import signal
import threading

from koelectra_dist.config import Config
from koelectra_dist.storage import use_storage_config

log = logging.getLogger(__name__)

_started_here = False


def cluster_can_grow() -> bool:
    """False when this process started its own local Ray: nothing can add nodes to it. A cluster we
    connected to (RAY_ADDRESS, `ray job submit`) may have an autoscaler."""
    return not _started_here


def connect(cfg: Config) -> None:
    """Initialise Ray once; storage settings travel to every worker through the runtime env."""
    import ray

    env = use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)  # this process's too
    if ray.is_initialized():
        return
    # Quiet, deterministic workers; the tokenizers library must not fork-bomb its own threads.
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ray Train copies every worker print into its logger, which log_to_driver then shows a
    # second time: without the patch each metric line reaches the console once.
    env.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    runtime_env = {"env_vars": env}
    global _started_here
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    # Without an address ray.init joins a cluster already running on this node, if there is one;
    # only a Ray whose processes this driver started is one that nothing else can grow.
    node = getattr(ray._private.worker, "_global_node", None)
    _started_here = bool(getattr(node, "all_processes", None))
    where = f"cluster at {address}" if address else "local Ray (started here, or the one running on this node)"
    log.info("connected to %s: %s", where, ray.cluster_resources())
    stop_on_sigterm()


def stop_on_sigterm() -> None:
    """Treat SIGTERM (`ray job stop`, a Kubernetes pod's end) as Ctrl-C. Installed after ray.init,
    whose own handler only logs the signal and dies.

    During a run Ray Train's Ctrl-C handler aborts the run gracefully: its workers stop and its
    autoscaling request is withdrawn. Killed without it, the request outlives the job for ~3 minutes
    and a resubmitted range job waits for it to expire.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers

    def on_sigterm(signum: int, frame: object) -> None:
        handler = signal.getsignal(signal.SIGINT)  # the one in force now: Ray Train's inside fit()
        if callable(handler):
            handler(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
