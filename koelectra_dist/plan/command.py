"""`koelectra-dist plan --config FILE --gpus N --gpu h100 [...]`: the plan as a table, or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from koelectra_dist.config import Config, load_config
from koelectra_dist.errors import ConfigError
from koelectra_dist.plan.estimate import DEFAULT_MFU, Cluster, Mfu, make_plan
from koelectra_dist.plan.hardware import GPUS, INTERCONNECTS, GiB
from koelectra_dist.plan.memory import activation_bytes, bucket_bytes, model_states_bytes, param_count

# How benchmarks/gpu_check.py's environment.gpu names each GPU type
DEVICE_NAMES = {"a100-40": "A100", "a100-80": "A100", "h100": "H100", "h200": "H200"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="koelectra-dist plan",
        description="Plan a pre-training run without a cluster: memory per ZeRO stage, time, traffic, cost.",
    )
    p.add_argument("--config", required=True, help="JSON config file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--gpus", type=int, required=True, help="GPUs in the run (one worker each)")
    p.add_argument("--gpu", required=True, choices=sorted(GPUS), help="GPU type")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument(
        "--interconnect", default="efa", choices=INTERCONNECTS, help="link between nodes (default efa; NVLink within)"
    )
    p.add_argument("--price-per-gpu-hour", type=float, help="your price per GPU-hour (spot or on-demand)")
    mfu = p.add_mutually_exclusive_group()
    mfu.add_argument("--mfu", type=float, help=f"model-FLOPs utilisation to assume (default {DEFAULT_MFU})")
    mfu.add_argument("--measured", help="a benchmarks/gpu_check.py JSON: its measured MFU and peak memory")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p.parse_args(argv)


def read_measured(path: str) -> dict[str, Any]:
    """gpu_check's JSON: the `shipped` variant's MFU, the GPU, the micro-batch, peak memory."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--measured {path}: cannot be read as JSON ({e})") from None
    variants = report.get("variants", []) if isinstance(report, dict) else []
    shipped = next((v for v in variants if v.get("variant") == "shipped"), None)
    if not shipped or not shipped.get("mfu"):
        raise ConfigError(
            f"--measured {path}: no MFU of the 'shipped' variant (a benchmarks/gpu_check.py JSON from a GPU run); "
            "pass --mfu instead"
        )
    return {
        "mfu": float(shipped["mfu"]),
        "gpu": report.get("environment", {}).get("gpu", "unknown GPU"),
        "micro_batch": report.get("micro_batch"),
        "step_s": shipped.get("step_s"),
        "peak_memory": [r for r in report.get("peak_memory", []) if r.get("peak_gib")],
    }


def mfu_of(args: argparse.Namespace, measured: dict[str, Any] | None) -> Mfu:
    if measured:
        return Mfu(
            measured["mfu"],
            f"measured: {args.measured} (gpu_check on {measured['gpu']}, micro-batch {measured['micro_batch']})",
            measured["micro_batch"],
        )
    if args.mfu is not None:
        if not 0 < args.mfu <= 1:
            raise ConfigError(f"--mfu: a fraction in (0, 1], got {args.mfu}")
        return Mfu(args.mfu, "given (--mfu)")
    return Mfu(DEFAULT_MFU, f"assumed ({DEFAULT_MFU:.0%}; measure it with benchmarks/gpu_check.py, pass --measured)")


def measured_checks(cfg: Config, gpu: str, measured: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """gpu_check's peak memory (one GPU, the config's ZeRO stage) beside this planner's figure for the same run,
    and a warning when it ran on another GPU type than the plan's."""
    m, t, d = cfg.model, cfg.train, cfg.distributed
    params = param_count(m)
    rows, stage = [], d.zero_stage
    for r in measured["peak_memory"]:
        planned = model_states_bytes(params, stage, 1, "bf16") + bucket_bytes(stage, d, "bf16")
        planned += activation_bytes(m, r["micro_batch"], m.max_length, t.mask_prob, "bf16")
        rows.append(
            {
                "micro_batch": r["micro_batch"],
                "zero_stage": stage,
                "measured_gib": r["peak_gib"],
                "planned_gib": round(planned / GiB, 2),
            }
        )
    warns = []
    if DEVICE_NAMES[gpu] not in measured["gpu"]:
        warns.append(
            {
                "problem": f"the MFU was measured on {measured['gpu']}, the plan is for {gpu}",
                "fix": f"run benchmarks/gpu_check.py on a {gpu} and pass its JSON",
            }
        )
    return rows, warns


def plan(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    if args.gpus < 1 or args.gpus_per_node < 1:
        raise ConfigError(f"--gpus and --gpus-per-node must be >= 1, got {args.gpus} and {args.gpus_per_node}")
    if args.price_per_gpu_hour is not None and args.price_per_gpu_hour < 0:
        raise ConfigError(f"--price-per-gpu-hour must be >= 0, got {args.price_per_gpu_hour}")
    cfg = load_config(args.config, list(args.set))
    if cfg.distributed.gpus_per_worker == 0:
        # a CPU config (tests, demo) planned for GPUs: plan it as the GPU run would run, bf16
        cfg = load_config(args.config, [*args.set, "distributed.gpus_per_worker=1", "distributed.precision=bf16"])
    measured = read_measured(args.measured) if args.measured else None
    cluster = Cluster(GPUS[args.gpu], args.gpus, min(args.gpus_per_node, args.gpus), args.interconnect)
    result = make_plan(cfg, cluster, mfu_of(args, measured), args.price_per_gpu_hour)
    if measured:
        result["measured_memory"], warns = measured_checks(cfg, args.gpu, measured)
        result["warnings"] += warns
    result["json"] = args.json
    return result


def table(p: dict[str, Any]) -> str:
    c, b, t, cost = p["cluster"], p["batch"], p["time"], p["cost"]
    mem = p["memory"]
    lines = [
        f"plan: {p['config']} on {c['gpus']} x {c['gpu']} ({c['nodes']} node(s) of {c['gpus_per_node']}; "
        f"{c['interconnect']}: {c['bandwidth_gbps_per_gpu']:g} GB/s per GPU, {c['bandwidth_source']})",
        f"model: {p['model']['parameters'] / 1e6:.1f}M parameters, {p['model']['train_flops_per_token'] / 1e6:.1f} "
        f"MFLOP per token per training step, seq {p['model']['seq']}, {p['precision']}",
        f"batch: global {b['global']} = {b['micro_per_gpu']} per GPU x {c['gpus']} GPUs x {b['accumulation']} "
        f"accumulation ({b['tokens_per_micro_batch']} tokens per micro-batch)",
        "",
        f"memory per GPU, GiB ({c['usable_gib']:g} usable of {c['memory_gib']:g})".ljust(46)
        + "".join(f"ZeRO {r['zero_stage']}".rjust(10) for r in mem),
    ]

    def row(label: str, key: str, fmt: str = "{:.2f}") -> str:
        return f"  {label}".ljust(46) + "".join(fmt.format(r[key]).rjust(10) for r in mem)

    lines += [
        row("model + optimizer states", "model_states_gib"),
        row("ZeRO buckets", "buckets_gib"),
        row(f"activations at micro-batch {b['micro_per_gpu']}", "activations_gib"),
        row("total", "total_gib"),
        row("fits", "fits", "{}"),
        row("largest micro-batch that fits", "max_micro_batch", "{}"),
        "",
        "traffic per step per GPU".ljust(46) + "".join(f"ZeRO {r['zero_stage']}".rjust(10) for r in p["traffic"]),
    ]
    tr = p["traffic"]
    lines += [
        "  MB sent".ljust(46) + "".join(f"{r['bytes_per_gpu'] / 1e6:.0f}".rjust(10) for r in tr),
        "  ms on the wire".ljust(46) + "".join(f"{r['comm_s'] * 1e3:.2f}".rjust(10) for r in tr),
        "  ms not hidden behind compute".ljust(46) + "".join(f"{r['exposed_s'] * 1e3:.2f}".rjust(10) for r in tr),
        "",
        f"time at ZeRO {p['zero_stage']}, MFU {t['mfu']:.1%} {t['mfu_source']}",
        f"  {t['flops_per_step'] / 1e12:.1f} TFLOP per step: compute {t['compute_s'] * 1e3:.1f} ms + exposed "
        f"communication {t['exposed_comm_s'] * 1e3:.1f} ms = {t['step_s'] * 1e3:.1f} ms per step",
        f"  {t['steps']:,} steps ({t['tokens'] / 1e9:.1f}B tokens): {t['total_h']:.1f} hours",
        f"cost: {cost['gpu_hours']:,.0f} GPU-hours"
        + (
            f" x ${cost['price_per_gpu_hour']:g} = ${cost['total']:,.0f}"
            if cost["total"] is not None
            else " (pass --price-per-gpu-hour for a cost)"
        ),
    ]
    for r in p.get("measured_memory", []):
        lines.append(
            f"check: gpu_check peak at micro-batch {r['micro_batch']} (1 GPU, ZeRO {r['zero_stage']}): {r['measured_gib']} GiB "
            f"measured, {r['planned_gib']} GiB planned"
        )
    if p["warnings"]:
        lines += ["", "warnings:"]
        for w in p["warnings"]:
            lines += [f"  - {w['problem']}", f"    fix: {w['fix']}"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    result = plan(argv)
    as_json = result.pop("json")
    print(json.dumps(result, indent=2) if as_json else table(result))
    sys.stdout.flush()
    return 0
