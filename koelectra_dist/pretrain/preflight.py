"""Before the trainer starts: can the cluster ever hold the requested workers?

Ray Train waits silently, forever, for resources that never come (a GPU request on a CPU-only
cluster, more workers than the nodes can hold). Here a Ray that this process started itself, which
nothing can grow, fails at once; a cluster we connected to gets `distributed.resource_wait_s`
seconds for its autoscaler to add nodes (a placement group of the workers' bundles is what the
autoscaler sees), then a clear error naming the settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from koelectra_dist.config import Config
from koelectra_dist.errors import ConfigError
from koelectra_dist.pretrain.config import allowed_worker_counts

log = logging.getLogger(__name__)


def worker_bundle(cfg: Config) -> dict[str, float]:
    d = cfg.distributed
    return {"CPU": float(d.cpus_per_worker), **({"GPU": float(d.gpus_per_worker)} if d.gpus_per_worker else {})}


def workers_that_fit(bundle: dict[str, float], nodes: list[dict[str, Any]]) -> int:
    """How many bundles the nodes' total resources hold (each bundle on one node)."""
    return sum(int(min(node.get(k, 0.0) // v for k, v in bundle.items())) for node in nodes)


def _describe(nodes: list[dict[str, Any]]) -> str:
    cpus = sum(n.get("CPU", 0) for n in nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    return f"{len(nodes)} node(s) with {cpus:g} CPUs and {gpus:g} GPUs in all"


def check_resources(cfg: Config, can_grow: bool) -> None:
    """ConfigError unless the cluster holds (or, when it can grow, comes to hold within
    distributed.resource_wait_s) `distributed.num_workers` worker bundles (the minimum of a range)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    d = cfg.distributed
    workers = allowed_worker_counts(cfg.train, d)[0]  # an elastic run starts with its smallest count
    bundle = worker_bundle(cfg)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if workers_that_fit(bundle, nodes) >= workers:
        return
    need = f"{workers} workers of {bundle} each (distributed.num_workers, .cpus_per_worker, .gpus_per_worker)"
    fix = (
        "lower those settings (distributed.gpus_per_worker=0 trains on CPUs), or run on a cluster that has the "
        "resources (ray job submit, RAY_ADDRESS)"
    )
    if not can_grow:
        raise ConfigError(f"the local Ray started here can never hold {need}: it has {_describe(nodes)}; {fix}")
    log.info("pretrain: waiting up to %ds for the cluster to hold %s", d.resource_wait_s, need)
    group = placement_group([bundle] * workers, strategy="PACK")
    start = time.monotonic()
    ready, _ = ray.wait([group.ready()], timeout=d.resource_wait_s)
    remove_placement_group(group)
    if not ready:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        raise ConfigError(
            f"the cluster did not come to hold {need} within {d.resource_wait_s}s "
            f"(distributed.resource_wait_s; it has {_describe(nodes)}): no autoscaler added the nodes. Check the "
            f"cluster's node types and their max_workers, or {fix}"
        )
    log.info("pretrain: the cluster holds the workers after %.0fs", time.monotonic() - start)
