"""The plan of one run: batch split, memory per ZeRO stage, step and total time, traffic against the
interconnect, cost, and warnings with their fix. Pure arithmetic on the config (`make_plan`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from koelectra_dist.config import Config
from koelectra_dist.plan.hardware import GiB, Gpu, inter_node_gbps
from koelectra_dist.plan.memory import (
    HEADROOM,
    activation_bytes,
    bucket_bytes,
    largest_micro_batch,
    model_states_bytes,
    param_count,
)
from koelectra_dist.pretrain.model import train_flops_per_token

DEFAULT_MFU = 0.25
"""Assumed when none is measured: what a static review of the shipped step expects on one H100 at
micro-batch 32 x 512 (benchmarks/gpu_check.py measures it)."""
MIN_TOKENS_PER_MICRO_BATCH = 8192
"""Below this many tokens per forward the kernels are too small to fill an A100/H100: launch
overhead, not arithmetic, sets the step time, and the MFU above does not hold."""
BACKWARD_SHARE = 2 / 3
"""The backward pass's share of a step's FLOPs (2 of the 3 forward-equivalents)."""


@dataclass(frozen=True)
class Cluster:
    gpu: Gpu
    gpus: int
    gpus_per_node: int = 8
    interconnect: str = "efa"

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / self.gpus_per_node)

    def bandwidth(self) -> tuple[float, str]:
        """GB/s per GPU per direction that a ring collective over all GPUs runs at, and its source:
        NVLink within one node, the slower inter-node link across nodes."""
        if self.nodes == 1:
            return self.gpu.nvlink_gbps, self.gpu.nvlink_source
        across, source = inter_node_gbps(self.gpu, self.interconnect, self.gpus_per_node)
        return min(across, self.gpu.nvlink_gbps), source


@dataclass(frozen=True)
class Mfu:
    value: float
    source: str
    """"assumed ..." or "measured ..." (the output labels the time with it)."""
    micro_batch: int | None = None
    """The micro-batch it was measured at."""


def warning(problem: str, fix: str) -> dict[str, str]:
    return {"problem": problem, "fix": fix}


def batch_split(cfg: Config, gpus: int) -> tuple[int, int, list[dict[str, str]]]:
    """(micro-batch per GPU, accumulation steps, warnings): the configured micro-batch when the
    global batch divides into it, else the largest micro-batch that divides the per-GPU share."""
    t = cfg.train
    g, micro = t.global_batch_size, t.micro_batch_size
    if g % gpus:
        near = [n for n in range(max(1, gpus // 2), 2 * gpus + 1) if g % n == 0]
        fits = sorted(near, key=lambda n: abs(n - gpus))[:3]
        fix = f"use {' or '.join(map(str, sorted(fits)))} GPUs, or " if fits else ""
        multiple = math.ceil(g / gpus) * gpus
        return (
            min(micro, math.ceil(g / gpus)),
            max(1, math.ceil(g / (micro * gpus))),
            [
                warning(
                    f"train.global_batch_size ({g}) cannot be divided across {gpus} GPUs",
                    f"{fix}set train.global_batch_size to a multiple of {gpus} (e.g. {multiple})",
                )
            ],
        )
    share = g // gpus
    if share % micro == 0:
        return micro, share // micro, []
    planned = max(d for d in range(1, min(micro, share) + 1) if share % d == 0)
    return (
        planned,
        share // planned,
        [
            warning(
                f"train.global_batch_size ({g}) is not divisible by train.micro_batch_size x GPUs "
                f"({micro} x {gpus} = {micro * gpus}): planned with micro-batch {planned}, "
                f"accumulation {share // planned}",
                f"set train.micro_batch_size={planned}, or train.global_batch_size={micro * gpus} "
                "(a larger global batch: see the large-batch recipe in docs/pretrain.md)",
            )
        ],
    )


def memory_rows(cfg: Config, cluster: Cluster, micro: int) -> list[dict[str, Any]]:
    """Per ZeRO stage: GiB per GPU of model states, buckets and activations at `micro`, whether it
    fits under the usable memory, and the largest micro-batch that does."""
    m, t, d = cfg.model, cfg.train, cfg.distributed
    params = param_count(m)
    usable = (1 - HEADROOM) * cluster.gpu.memory_gib * GiB
    per_example = activation_bytes(m, 1, m.max_length, t.mask_prob, d.precision)
    rows = []
    for stage in range(4):
        states = model_states_bytes(params, stage, cluster.gpus, d.precision)
        buckets = bucket_bytes(stage, d, d.precision)
        acts = activation_bytes(m, micro, m.max_length, t.mask_prob, d.precision)
        total = states + buckets + acts
        rows.append(
            {
                "zero_stage": stage,
                "model_states_gib": round(states / GiB, 3),
                "buckets_gib": round(buckets / GiB, 3),
                "activations_gib": round(acts / GiB, 3),
                "total_gib": round(total / GiB, 3),
                "fits": total <= usable,
                "max_micro_batch": int(largest_micro_batch(states + buckets, per_example, int(usable))),
            }
        )
    return rows


def transfers(stage: int, gpus: int, params: int, accumulation: int, precision: str) -> list[dict[str, Any]]:
    """Bytes each GPU sends per optimizer step, as DeepSpeed 0.19 communicates (ring collectives: a
    GPU sends (n-1)/n of the data per all-gather or reduce-scatter, twice that per all-reduce).
    ZeRO 1/2 all-reduce gradient buckets (its default `use_multi_rank_bucket_allreduce`) and all-gather
    the updated weights; ZeRO 2 reduces at every micro-batch (its gradients are partitioned),
    ZeRO 1 at the last only; ZeRO 3 gathers weights for every forward and backward and
    reduce-scatters gradients every micro-batch. `overlaps`: the compute a transfer can hide behind
    (ZeRO 3 as if its prefetch were perfect: its per-layer gathers add latency this does not count)."""
    width = 4 if precision == "fp32" else 2
    ring = (gpus - 1) / gpus * params * width
    a = accumulation
    table = {
        0: [("gradient all-reduce after the backward", 2 * ring, None)],
        1: [
            ("gradient all-reduce, last micro-batch", 2 * ring, "last_backward"),
            ("weight all-gather after the update", ring, None),
        ],
        2: [
            ("gradient all-reduce, every micro-batch", 2 * ring * a, "backward"),
            ("weight all-gather after the update", ring, None),
        ],
        3: [
            ("weight all-gather, every forward", ring * a, "forward"),
            ("weight all-gather, every backward", ring * a, "backward"),
            ("gradient reduce-scatter, every micro-batch", ring * a, "backward"),
        ],
    }
    return [{"what": what, "bytes": int(b), "overlaps": o} for what, b, o in table[stage]]


def comm_time(
    items: list[dict[str, Any]], gbps: float, compute_s: float, accumulation: int, overlap: bool
) -> tuple[float, float]:
    """(seconds on the wire, seconds the step waits for them): what overlaps waits only for what
    its window of compute does not cover; with overlap off everything waits."""
    windows = {
        "last_backward": BACKWARD_SHARE * compute_s / accumulation,
        "backward": BACKWARD_SHARE * compute_s,
        "forward": (1 - BACKWARD_SHARE) * compute_s,
    }
    wire = exposed = 0.0
    hideable: dict[str, float] = {}
    for item in items:
        s = item["bytes"] / (gbps * 1e9)
        wire += s
        if overlap and item["overlaps"]:
            hideable[item["overlaps"]] = hideable.get(item["overlaps"], 0.0) + s
        else:
            exposed += s
    exposed += sum(max(0.0, s - windows[key]) for key, s in hideable.items())
    return wire, exposed


def make_plan(cfg: Config, cluster: Cluster, mfu: Mfu, price_per_gpu_hour: float | None = None) -> dict[str, Any]:
    """The whole plan as a JSON-ready dict (`plan.command` prints it as a table)."""
    m, t, d = cfg.model, cfg.train, cfg.distributed
    seq, n = m.max_length, cluster.gpus
    params = param_count(m)
    micro, accumulation, warns = batch_split(cfg, n)
    memory = memory_rows(cfg, cluster, micro)
    flops_per_token = train_flops_per_token(m, seq, t.mask_prob)
    flops_per_step = flops_per_token * t.global_batch_size * seq
    compute_s = flops_per_step / (n * cluster.gpu.peak_flops * mfu.value)
    gbps, bw_source = cluster.bandwidth()
    traffic = []
    for stage in range(4):
        items = transfers(stage, n, params.total, accumulation, d.precision)
        wire, exposed = comm_time(items, gbps, compute_s, accumulation, d.overlap_comm) if n > 1 else (0.0, 0.0)
        traffic.append(
            {
                "zero_stage": stage,
                "bytes_per_gpu": sum(i["bytes"] for i in items) if n > 1 else 0,
                "transfers": items if n > 1 else [],
                "comm_s": round(wire, 9),
                "exposed_s": round(exposed, 9),
                "hidden": exposed <= 0.05 * compute_s,
            }
        )
    chosen = traffic[d.zero_stage]
    step_s = compute_s + chosen["exposed_s"]
    total_s = step_s * t.steps
    gpu_hours = n * total_s / 3600
    warns += _warnings(cfg, cluster, mfu, micro, memory, chosen, compute_s)
    return {
        "config": cfg.run.name,
        "model": {
            "parameters": params.total,
            "largest_layer_parameters": params.largest_layer,
            "seq": seq,
            "train_flops_per_token": flops_per_token,
        },
        "cluster": {
            "gpu": cluster.gpu.name,
            "gpus": n,
            "nodes": cluster.nodes,
            "gpus_per_node": cluster.gpus_per_node,
            "interconnect": "nvlink" if cluster.nodes == 1 else cluster.interconnect,
            "bandwidth_gbps_per_gpu": round(gbps, 3),
            "bandwidth_source": bw_source,
            "memory_gib": cluster.gpu.memory_gib,
            "usable_gib": round((1 - HEADROOM) * cluster.gpu.memory_gib, 2),
            "peak_flops": cluster.gpu.peak_flops,
        },
        "batch": {
            "global": t.global_batch_size,
            "micro_per_gpu": micro,
            "accumulation": accumulation,
            "tokens_per_micro_batch": micro * seq,
        },
        "zero_stage": d.zero_stage,
        "precision": d.precision,
        "memory": memory,
        "traffic": traffic,
        "time": {
            "mfu": mfu.value,
            "mfu_source": mfu.source,
            "flops_per_step": flops_per_step,
            "compute_s": round(compute_s, 9),
            "exposed_comm_s": chosen["exposed_s"],
            "step_s": round(step_s, 9),
            "steps": t.steps,
            "tokens": t.steps * t.global_batch_size * seq,
            "total_h": round(total_s / 3600, 3),
        },
        "cost": {
            "gpu_hours": round(gpu_hours, 1),
            "price_per_gpu_hour": price_per_gpu_hour,
            "total": None if price_per_gpu_hour is None else round(gpu_hours * price_per_gpu_hour, 2),
        },
        "warnings": warns,
    }


def _warnings(
    cfg: Config,
    cluster: Cluster,
    mfu: Mfu,
    micro: int,
    memory: list[dict[str, Any]],
    chosen: dict[str, Any],
    compute_s: float,
) -> list[dict[str, str]]:
    d, seq, n = cfg.distributed, cfg.model.max_length, cluster.gpus
    found = []
    stage = memory[d.zero_stage]
    if not stage["fits"]:
        fitting = [r["zero_stage"] for r in memory if r["fits"]]
        found.append(
            warning(
                f"ZeRO {d.zero_stage} needs {stage['total_gib']:.1f} GiB per GPU at micro-batch {micro}, over the "
                f"{(1 - HEADROOM) * cluster.gpu.memory_gib:.1f} GiB usable on {cluster.gpu.name}",
                (f"set distributed.zero_stage={fitting[0]}, or " if fitting else "")
                + f"train.micro_batch_size={max(1, stage['max_micro_batch'])} with more accumulation",
            )
        )
    tokens = micro * seq
    if tokens < MIN_TOKENS_PER_MICRO_BATCH:
        wanted = math.ceil(MIN_TOKENS_PER_MICRO_BATCH / seq)
        found.append(
            warning(
                f"micro-batch {micro} x {seq} = {tokens} tokens per GPU per forward is too small to keep a "
                f"{cluster.gpu.name} busy (launch-bound): the {mfu.value:.0%} MFU, and so the time, is optimistic",
                f"raise train.global_batch_size to at least {wanted * n} ({wanted} per GPU) with the large-batch "
                "learning-rate rule (configs/base_v3_large_batch.json, docs/pretrain.md), or use fewer GPUs",
            )
        )
    elif mfu.micro_batch and micro < mfu.micro_batch:
        found.append(
            warning(
                f"the MFU was measured at micro-batch {mfu.micro_batch}; this plan runs {micro} per GPU, "
                "where it is likely lower",
                f"measure at micro-batch {micro} (benchmarks/gpu_check.py --micro-batch {micro})",
            )
        )
    if chosen["comm_s"] > compute_s:
        found.append(
            warning(
                f"communication ({chosen['comm_s'] * 1e3:.1f} ms per step at ZeRO {d.zero_stage}) is longer than "
                f"compute ({compute_s * 1e3:.1f} ms): more GPUs will not make the run faster",
                "give each GPU more compute per step (a larger train.global_batch_size: the large-batch recipe), use "
                "EFA or InfiniBand rather than TCP, or a ZeRO stage that moves fewer bytes (see the traffic table)",
            )
        )
    elif not chosen["hidden"]:
        found.append(
            warning(
                f"{chosen['exposed_s'] * 1e3:.1f} ms of communication per step at ZeRO {d.zero_stage} does not hide "
                f"behind compute ({compute_s * 1e3:.1f} ms)",
                "a larger train.global_batch_size (more compute per step for the same bytes), fewer GPUs, or a "
                "faster link; keep distributed.overlap_comm on",
            )
        )
    return found
