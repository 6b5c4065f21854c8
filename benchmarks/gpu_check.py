"""The GPU check: what one GPU can say about the shipped pre-training step, in sections that each
fail on their own and are written as soon as they are done, within a time budget.

    python benchmarks/gpu_check.py --out gpu_check.json             # Base v3, seq 512, bf16, ~6 min
    python benchmarks/gpu_check.py --smoke --out smoke.json         # a tiny model on CPU: checks the script
    bash scripts/gpu_kit.sh                                         # the same on a machine without DeepSpeed

Sections, in this order (`SECTIONS`); each is skipped, with the reason written, when its estimate
would not fit what is left of `--budget-s`:
- environment: versions (and where DeepSpeed and pydantic were imported from), the GPU, its clocks,
  cuDNN, the SDPA backends and their priority;
- fused_adam: DeepSpeed's FusedAdam op built (JIT: ninja + nvcc) and timed; when it fails, the
  failure is written and every later engine uses ElectraAdamW (the same update in PyTorch);
- shipped: the product's step (`pretrain.loop.pretrainer` in `pretrain.engine.build_engine`, ZeRO as
  configured, one rank, one micro-batch a step) on full rows of random ids: no attention mask;
- real_stream: the stage's own data path over shards shaped like KoELECTRA's (`shaped_shards`: 5%
  short rows, packed by the corpus stage's ExampleBuilder), Base v3's global batch on one GPU (its
  micro-batches accumulated), with the share of micro-batches that carried an attention mask;
- sync_debug: one step under `torch.cuda.set_sync_debug_mode("warn")`, listing every host sync site;
- profile: device time by kernel class over a few steps, GPU-busy time over wall time, the attention
  kernel that ran;
- compile: `train.compile=true` (compile seconds apart from step time);
- peak_memory: peak device memory at the largest micro-batch that fits (`--memory-batches`);
- zero_stages: one accumulation-2 step series each at ZeRO 0 and ZeRO 2 (Base v3 ships ZeRO 2: its
  gradients accumulate in fp32);
- checkpoint_save: one local checkpoint save through the stage's background Uploader (the stall seconds);
- extras (`--variants`, when time is left): ElectraAdamW against FusedAdam, four examples per row.

MFU = train_flops_per_token x real tokens per second / the device's dense bf16 peak
(`pretrain.metrics.PEAK_FLOPS`; none on CPU). The JSON keeps the keys earlier versions had
(`environment`, `model`, `micro_batch`, `variants` [variant, step_s, tokens_per_s, mfu,
step_time_vs_shipped], `peak_memory`, `profile`) and adds one per section, `summary` (per variant:
mfu, step_time_s, peak_memory_gib), `sections` (status and seconds of each) and `skipped`.

It runs with the GPU image's torch 2.11 / transformers 5.17 as with the project's pins: nothing on
its path needs a newer API.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from koelectra_dist.config import Config, load_config
from koelectra_dist.pretrain.loop import micro_batch_seed, pretrainer
from koelectra_dist.pretrain.metrics import peak_flops
from koelectra_dist.pretrain.model import train_flops_per_token
from koelectra_dist.pretrain.optim import ElectraAdamW, param_groups
from koelectra_dist.tokens import CLS_ID, SEP_ID

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matmul", ("gemm", "matmul", "cutlass", "xmma", "sm80_", "sm90_", "cublas", "aten::mm", "aten::addmm", "bmm")),
    ("optimizer", ("adam", "multi_tensor")),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("softmax_reduce", ("softmax", "reduce", "logsumexp", "argmax", "cross_entropy", "nll")),
    ("random", ("philox", "uniform", "rand", "bernoulli", "dropout")),
    ("copy", ("memcpy", "memset", "copy", "cat")),
    ("communication", ("nccl", "allreduce", "all_reduce", "allgather")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "pointwise", "triton", "aten::mul", "aten::add")),
    ("elementwise", ("aten::div", "aten::sub", "aten::gelu", "aten::where", "aten::sum", "aten::mean")),
    # on CPU: the framework's own time (autograd's bookkeeping, views), not a kernel
    ("framework", ("autograd::", "aten::view", "aten::slice", "aten::select", "aten::expand", "aten::empty")),
    ("framework", ("aten::as_strided", "aten::reshape", "aten::transpose", "aten::detach", "aten::unsqueeze")),
)
REAL_STREAM_GLOBAL_BATCH = 256  # Base v3's train.global_batch_size: 8 micro-batches a step on one GPU


@dataclasses.dataclass(frozen=True)
class Extra:
    """An extra variant against the shipped step (run last, when time is left)."""

    electra_adamw: bool = False
    examples_per_row: int = 1


EXTRAS: dict[str, Extra] = {
    "electra_adamw": Extra(electra_adamw=True),
    "four_examples_per_row": Extra(examples_per_row=4),
}


class Check:
    """The run's state: arguments, the report (written after every section), the budget, and what
    later sections reuse (the optimizer fallback, the measured build and step seconds)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.perf_counter()
        self.use_electra_adamw = args.device != "cuda"  # FusedAdam needs CUDA; set by the fused_adam section
        self.build_s = 3.0 if args.smoke else 20.0  # priors until the shipped section measures them
        self.step_s = 0.05 if args.smoke else 0.15
        self.report: dict[str, Any] = {
            "benchmark": "gpu_check",
            "complete": False,
            "budget_s": args.budget_s,
            "model": {},
            "micro_batch": args.micro_batch,
            "variants": [],
            "summary": {},
            "sections": {},
            "skipped": [],
        }

    def left_s(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.started)

    def write(self) -> None:
        """Rewrite --out whole (a reader never sees half a file)."""
        self.report["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        if not self.args.out:
            return
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=1))
        os.replace(tmp, out)

    def section(self, name: str, run: Callable[[Check], Any], estimate_s: float) -> None:
        """Run one section unless its estimate exceeds the budget left; its result (or its error)
        goes under report[name]; the file is rewritten either way."""
        left = self.left_s()
        if estimate_s > left:
            reason = f"needs about {estimate_s:.0f} s, {max(left, 0):.0f} s of --budget-s {self.args.budget_s:g} left"
            self.report["skipped"].append({"section": name, "reason": reason})
            self.report["sections"][name] = {"status": "skipped", "reason": reason}
            log(f"{name}: skipped ({reason})")
            self.write()
            return
        log(f"{name}: running (estimate {estimate_s:.0f} s, {left:.0f} s left)")
        start = time.perf_counter()
        try:
            result = run(self)
            status: dict[str, Any] = {"status": "ok"}
            if result is not None:
                self.report[name] = result
        except Exception as e:  # noqa: BLE001 - one section failing must not lose the others
            status = {"status": "error", "error": f"{type(e).__name__}: {str(e)[:800]}"}
            status["traceback"] = traceback.format_exc()[-3000:]
            self.report[name] = {"error": status["error"]}
        finally:
            release()
        status["seconds"] = round(time.perf_counter() - start, 1)
        self.report["sections"][name] = status
        log(f"{name}: {status['status']} in {status['seconds']} s")
        self.write()

    def add_variant(self, result: dict[str, Any]) -> None:
        shipped = next((v for v in self.report["variants"] if v["variant"] == "shipped"), None)
        if shipped and shipped.get("step_s") and result.get("step_s"):
            result["step_time_vs_shipped"] = round(result["step_s"] / shipped["step_s"], 3)
        self.report["variants"].append(result)
        self.report["summary"][result["variant"]] = {
            "mfu": result.get("mfu"),
            "step_time_s": result.get("step_s"),
            "peak_memory_gib": result.get("peak_memory_gib"),
        }


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- building and timing


def run_config(
    args: argparse.Namespace, micro_batch: int, extra: tuple[str, ...] = (), accumulation: int = 1
) -> Config:
    overrides = [
        "distributed.num_workers=1",
        f"distributed.gpus_per_worker={1 if args.device == 'cuda' else 0}",
        f"distributed.precision={'bf16' if args.device == 'cuda' else 'fp32'}",
        f"train.micro_batch_size={micro_batch}",
        f"train.global_batch_size={micro_batch * accumulation}",
        "train.warmup_steps=0",
        'run.stages=["pretrain"]',
        "run.output_uri=outputs/gpu_check",
    ]
    if args.smoke:
        overrides += [
            "model.vocab_size=1000",
            "model.embedding_size=64",
            "model.hidden_size=64",
            "model.num_hidden_layers=2",
            "model.num_attention_heads=2",
            "model.intermediate_size=128",
            "model.max_length=64",
        ]
    return load_config(args.config, [*overrides, *extra])


def make_batch(cfg: Config, micro_batch: int, device: str, seed: int, examples_per_row: int = 1) -> dict[str, Any]:
    """Full rows of random ids, as one example or as `examples_per_row` equal ones (own positions,
    block-diagonal attention)."""
    gen = torch.Generator().manual_seed(seed)
    length = cfg.model.max_length
    ids = torch.randint(5, cfg.model.vocab_size, (micro_batch, length), generator=gen)
    ids[:, 0] = CLS_ID
    ids[:, -1] = SEP_ID
    batch = {"input_ids": ids.to(device), "attention_mask": None, "token_type_ids": torch.zeros_like(ids).to(device)}
    if examples_per_row > 1:
        example = torch.arange(length) * examples_per_row // length  # example index of each position
        starts = (torch.arange(examples_per_row) * length + examples_per_row - 1) // examples_per_row
        positions = torch.arange(length) - starts[example]
        batch["position_ids"] = positions.expand(micro_batch, length).contiguous().to(device)
        batch["example_ids"] = example.expand(micro_batch, length).contiguous().to(device)
    return batch


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(check: Check, cfg: Config, *, electra_adamw: bool = False) -> Any:
    """The product's engine; ElectraAdamW in place of its optimizer when asked or when FusedAdam failed."""
    from koelectra_dist.pretrain.engine import build_engine

    start = time.perf_counter()
    torch.manual_seed(0)
    model = pretrainer(cfg)
    t = cfg.train
    optimizer = None
    if electra_adamw or check.use_electra_adamw:
        optimizer = ElectraAdamW(param_groups(model, t.weight_decay), lr=t.learning_rate, eps=t.adam_eps)
    engine, _, _ = build_engine(cfg, model, optimizer)
    check.last_build_s = time.perf_counter() - start
    return engine


def micro_step(engine: Any, batch: dict[str, Any], with_metrics: bool = False) -> None:
    out = engine(**batch, with_metrics=with_metrics)
    engine.backward(out.loss)
    engine.step()


def time_steps(
    engine: Any, batches: Callable[[], dict[str, Any]], device: str, steps: int, warmup: int, micro: int = 1
):
    """Median seconds of an optimizer step of `micro` micro-batches, after `warmup` steps."""
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(micro):
            micro_step(engine, batches())
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def speed(check: Check, name: str, cfg: Config, step_s: float, tokens_per_step: float) -> dict[str, Any]:
    result = {"variant": name, "step_s": round(step_s, 5), "tokens_per_s": round(tokens_per_step / step_s)}
    peak = peak_flops(torch.device(check.args.device))
    if peak:
        flops = train_flops_per_token(cfg.model, cfg.model.max_length, cfg.train.mask_prob)
        result["mfu"] = round(flops * tokens_per_step / step_s / peak, 4)
    result["peak_memory_gib"] = peak_gib(check.args.device)
    result["optimizer"] = "ElectraAdamW" if check.use_electra_adamw else "FusedAdam"
    return result


def measure(
    check: Check, name: str, *, extra: tuple[str, ...] = (), electra_adamw: bool = False, examples_per_row: int = 1
):
    """One variant of full rows, one micro-batch a step; returns (result, engine)."""
    a = check.args
    cfg = run_config(a, a.micro_batch, extra)
    batch = make_batch(cfg, a.micro_batch, a.device, seed=1, examples_per_row=examples_per_row)
    reset_peak(a.device)
    engine = build(check, cfg, electra_adamw=electra_adamw)
    build_s = check.last_build_s
    first = time.perf_counter()
    micro_step(engine, batch)
    synchronize(a.device)
    first_s = time.perf_counter() - first
    step_s = time_steps(engine, lambda: batch, a.device, a.steps, a.warmup)
    result = speed(check, name, cfg, step_s, a.micro_batch * cfg.model.max_length)
    result |= {"build_s": round(build_s, 1), "first_step_s": round(first_s, 2)}
    if electra_adamw:
        result["optimizer"] = "ElectraAdamW"
    check.add_variant(result)
    return result, engine


# ---------------------------------------------------------------- sections


def environment(check: Check) -> dict[str, Any]:
    """Versions and the device's settings; every probe on its own (one failing says so)."""
    a = check.args
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "device": a.device}
    probes: dict[str, Callable[[], Any]] = {
        "deepspeed": lambda: __import__("deepspeed").__version__,
        "transformers": lambda: __import__("transformers").__version__,
        "numpy": lambda: __import__("numpy").__version__,
        # where the kit's packages came from (the kit's --target folder, or the environment's own)
        "imported_from": lambda: {
            m: str(Path(__import__(m).__file__).parent.parent) for m in ("deepspeed", "pydantic", "hjson")
        },
        "cpu_count": os.cpu_count,
    }
    if a.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        probes |= {
            "gpu": torch.cuda.get_device_name,
            "gpu_memory_gib": lambda: round(props.total_memory / 2**30, 1),
            "multiprocessors": lambda: props.multi_processor_count,
            "capability": lambda: list(torch.cuda.get_device_capability()),
            "cuda": lambda: torch.version.cuda,
            "peak_bf16_flops": lambda: peak_flops(torch.device("cuda")),
            "cudnn": torch.backends.cudnn.version,
            "cudnn_enabled": lambda: torch.backends.cudnn.enabled,
            "tf32_matmul": lambda: torch.backends.cuda.matmul.allow_tf32,
            "sdpa_enabled": lambda: {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            },
            "sdpa_priority": lambda: [str(b) for b in torch._C._get_sdp_priority_order()],
            "clocks": nvidia_smi,
            "nvcc": lambda: (
                subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=20)
                .stdout.strip()
                .splitlines()[-1]
            ),
        }
    for key, probe in probes.items():
        try:
            env[key] = probe()
        except Exception as e:  # noqa: BLE001 - a missing probe is a finding, not a failure
            env[key] = f"unavailable: {type(e).__name__}: {str(e)[:200]}"
    cfg = run_config(a, a.micro_batch)
    check.report["model"] = {"config": Path(a.config).name, "smoke": a.smoke, "seq": cfg.model.max_length}
    return env


def nvidia_smi() -> dict[str, str]:
    fields = "clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,power.limit,temperature.gpu,persistence_mode,driver_version"
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
    )
    return dict(zip(fields.split(","), (v.strip() for v in done.stdout.splitlines()[0].split(",")), strict=False))


def fused_adam(check: Check) -> dict[str, Any]:
    """Build DeepSpeed's FusedAdam op now, timed; on failure every later engine uses ElectraAdamW
    (the failure is raised after the fallback is set, so the section records it)."""
    check.use_electra_adamw = True
    if check.args.fail_fused_adam:
        raise RuntimeError("FusedAdam build failure forced by --fail-fused-adam; later sections use ElectraAdamW")
    if check.args.device != "cuda":
        return {"built": False, "reason": "FusedAdam needs CUDA; ElectraAdamW is used"}
    from deepspeed.ops.op_builder import FusedAdamBuilder

    start = time.perf_counter()
    builder = FusedAdamBuilder()
    compatible = builder.is_compatible(verbose=True)
    builder.load()
    check.use_electra_adamw = False
    return {"built": True, "compatible": compatible, "build_s": round(time.perf_counter() - start, 1)}


def shipped(check: Check) -> dict[str, Any]:
    result, engine = measure(check, "shipped")
    check.build_s = max(result["build_s"], 1.0)
    check.step_s = result["step_s"]
    check.engine = engine  # sync_debug and profile reuse it
    return result


def real_stream(check: Check) -> dict[str, Any]:
    """The stage's data path (Parquet shards -> ShardStream -> Prefetcher -> device) over shards shaped
    like KoELECTRA's, Base v3's global batch: its micro-batches accumulated into one step."""
    from shaped_shards import write_shaped_shards

    from koelectra_dist.pretrain.data import Prefetcher, ShardStream

    a = check.args
    accumulation = max(1, REAL_STREAM_GLOBAL_BATCH // a.micro_batch) if not a.smoke else 8
    cfg = run_config(a, a.micro_batch, accumulation=accumulation)
    steps, warmup = max(2, a.steps // 4), 2
    rows = (steps + warmup + 1) * a.micro_batch * accumulation
    folder = tempfile.mkdtemp(prefix="gpu-check-shards-")
    uris, counts = write_shaped_shards(folder, 2, rows // 2 + 1, cfg.model.max_length, cfg.model.vocab_size)
    stream = ShardStream(uris, counts, seed=0, rank=0, world_size=1, micro_batch=a.micro_batch, start=0)
    loader = Prefetcher(stream.batches(), pin=a.device == "cuda")  # as the stage does
    reset_peak(a.device)
    engine = build(check, cfg)
    seen = {"micro_batches": 0, "masked": 0, "tokens": 0}
    index = iter(range(10**9))

    def next_batch() -> dict[str, Any]:
        batch = loader.next()
        torch.manual_seed(micro_batch_seed(0, next(index)))  # as the stage seeds each micro-batch
        seen["micro_batches"] += 1
        if batch["attention_mask"] is not None:
            seen["masked"] += 1
            seen["tokens"] += int(batch["attention_mask"].sum())
        else:
            seen["tokens"] += batch["input_ids"].numel()
        return {k: v if v is None else v.to(a.device, non_blocking=True) for k, v in batch.items()}

    try:
        times = []
        for i in range(warmup + steps):
            before = seen["tokens"]
            synchronize(a.device)
            start = time.perf_counter()
            for _ in range(accumulation):
                micro_step(engine, next_batch())
            synchronize(a.device)
            if i >= warmup:
                times.append((time.perf_counter() - start, seen["tokens"] - before))
    finally:
        loader.close()
    step_s = statistics.median(t for t, _ in times)
    tokens = sum(n for _, n in times) / len(times)
    result = speed(check, "real_stream", cfg, step_s, tokens)
    result |= {
        "accumulation": accumulation,
        "masked_micro_batch_share": round(seen["masked"] / seen["micro_batches"], 3),
        "micro_batches": seen["micro_batches"],
        "loader_wait_s": round(loader.wait_seconds, 3),
    }
    check.add_variant(result)
    return result


def shipped_engine(check: Check) -> Any:
    engine = getattr(check, "engine", None)
    return engine if engine is not None else build(check, run_config(check.args, check.args.micro_batch))


def sync_debug(check: Check) -> dict[str, Any]:
    """One shipped step (batch copied to the device as the stage does) under CUDA's sync debug mode:
    every host synchronisation warns; each is recorded with the innermost frames that name it."""
    a = check.args
    engine = shipped_engine(check)
    cfg = run_config(a, a.micro_batch)
    host = make_batch(cfg, a.micro_batch, "cpu", seed=4)
    micro_step(engine, {k: v if v is None else v.to(a.device) for k, v in host.items()})  # warm
    synchronize(a.device)
    sites: Counter[str] = Counter()
    messages: dict[str, str] = {}

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        frames = traceback.extract_stack()[:-1]
        ours = [f for f in frames if "koelectra_dist" in f.filename or "benchmarks" in f.filename]
        ds = [f for f in frames if f"{os.sep}deepspeed{os.sep}" in f.filename]
        where = f"{filename}:{lineno}"
        if ds:
            where += f" <- deepspeed {ds[-1].filename.split('deepspeed', 1)[-1]}:{ds[-1].lineno} ({ds[-1].name})"
        if ours:
            where += f" <- {Path(ours[-1].filename).name}:{ours[-1].lineno} ({ours[-1].name})"
        sites[where] += 1
        messages.setdefault(where, str(message)[:200])

    cuda = a.device == "cuda"
    saved = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        try:
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            batch = {k: v if v is None else v.to(a.device, non_blocking=True) for k, v in host.items()}
            micro_step(engine, batch)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning = saved
    synchronize(a.device)
    result: dict[str, Any] = {
        "sync_sites": [{"site": s, "count": n, "message": messages[s]} for s, n in sites.most_common()],
        "syncs": sum(sites.values()),
    }
    if not cuda:
        result["note"] = "sync debug mode is CUDA's: on CPU the step ran without it"
    return result


def attention_backend(op_names: set[str]) -> str:
    """Which attention implementation the step ran, from the profiled op names."""
    kinds = (
        ("flash", "_scaled_dot_product_flash_attention"),
        ("cudnn", "_scaled_dot_product_cudnn_attention"),
        ("memory-efficient", "_scaled_dot_product_efficient_attention"),
        ("math (SDPA's fallback)", "_scaled_dot_product_attention_math"),
    )
    found = [kind for kind, op in kinds if any(op in name for name in op_names)]
    return ", ".join(found) or "matmul + softmax (no SDPA: the CPU towers' attention with dropout)"


def classify(kernel: str) -> str:
    lowered = kernel.lower()
    return next((cls for cls, keys in KERNEL_CLASSES if any(k in lowered for k in keys)), "other")


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(intervals):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def profile(check: Check) -> dict[str, Any]:
    """Device time by kernel class over a few shipped steps, GPU-busy over wall, which attention ran."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    a = check.args
    engine = shipped_engine(check)
    cfg = run_config(a, a.micro_batch)
    batch = make_batch(cfg, a.micro_batch, a.device, seed=3)
    time_steps(engine, lambda: batch, a.device, 1, 1)
    cuda = a.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        synchronize(a.device)
        wall = time.perf_counter()
        for _ in range(3):
            micro_step(engine, batch)
        synchronize(a.device)
        wall = time.perf_counter() - wall
    by_class: dict[str, float] = defaultdict(float)
    other: dict[str, float] = defaultdict(float)
    attention_kernels = set()
    averages = prof.key_averages()
    for event in averages:
        # on CUDA kernels only: a CPU op's device time is its kernels' again
        us = (
            (event.self_device_time_total if event.device_type == DeviceType.CUDA else 0)
            if cuda
            else event.self_cpu_time_total
        )
        if not us:
            continue
        cls = classify(event.key)
        by_class[cls] += us
        if cls == "attention":
            attention_kernels.add(event.key[:120])
        if cls == "other":
            other[event.key[:80]] += us
    total = sum(by_class.values()) or 1.0
    result: dict[str, Any] = {
        "time_fraction_by_kernel_class": {
            k: round(v / total, 4) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])
        },
        "top_other": {k: round(v / total, 4) for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:8]},
        "attention_backend": attention_backend({event.key for event in averages}),
        "attention_kernels": sorted(attention_kernels),
        "wall_s": round(wall, 4),
        "steps": 3,
    }
    if cuda:
        kernels = [(e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA]
        result["gpu_busy_s"] = round(busy_us(kernels) / 1e6, 4)
        result["gpu_busy_over_wall"] = round(busy_us(kernels) / 1e6 / wall, 4)
    else:
        result["gpu_busy_over_wall"] = None
    check.engine = None  # the last user of the shipped engine: later sections measure memory
    return result


def compile_section(check: Check) -> dict[str, Any]:
    result, _ = measure(check, "compile", extra=("train.compile=true",))
    return result


def peak_memory(check: Check) -> list[dict[str, Any]]:
    """Peak memory of a few shipped steps at the largest micro-batch that fits (then the next
    smaller), after the shipped variant's own; on CPU the process's peak resident memory instead."""
    a = check.args
    shipped = check.report["summary"].get("shipped", {}).get("peak_memory_gib")
    found = [{"micro_batch": a.micro_batch, "peak_gib": shipped, "from": "shipped"}] if shipped else []
    for micro_batch in sorted(set(a.memory_batches) - {a.micro_batch if shipped else None}, reverse=True):
        cfg = run_config(a, micro_batch)
        release()
        reset_peak(a.device)
        try:
            engine = build(check, cfg)
            batch = make_batch(cfg, micro_batch, a.device, seed=2)
            step_s = time_steps(engine, lambda batch=batch: batch, a.device, 2, 1)
            entry = {"micro_batch": micro_batch, "peak_gib": peak_gib(a.device), "step_s": round(step_s, 4)}
            if a.device != "cuda":
                entry["process_max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
            found.append(entry)
            del engine
            break
        except torch.OutOfMemoryError:
            found.append({"micro_batch": micro_batch, "peak_gib": None, "error": "out of memory"})
    return found


def zero_stages(check: Check) -> list[dict[str, Any]]:
    """One series of accumulation-2 steps at ZeRO 0 and at ZeRO 2 (the shipped one step of one
    micro-batch accumulates nothing)."""
    from koelectra_dist.pretrain.engine import ds_config

    a = check.args
    found = []
    for stage in (0, 2):
        cfg = run_config(a, a.micro_batch, (f"distributed.zero_stage={stage}",), accumulation=2)
        name = f"zero{stage}_accum2"
        try:
            batch = make_batch(cfg, a.micro_batch, a.device, seed=5)
            reset_peak(a.device)
            engine = build(check, cfg)
            step_s = time_steps(engine, lambda batch=batch: batch, a.device, max(2, a.steps // 4), 2, micro=2)
            result = speed(check, name, cfg, step_s, 2 * a.micro_batch * cfg.model.max_length)
            result["grad_accum_dtype"] = (
                ds_config(cfg, workers=1).get("data_types", {}).get("grad_accum_dtype", cfg.distributed.precision)
            )
            check.add_variant(result)
            found.append(result)
            del engine
        except Exception as e:  # noqa: BLE001 - one stage failing must not lose the other
            found.append({"variant": name, "error": f"{type(e).__name__}: {str(e)[:500]}"})
        release()
    return found


def checkpoint_save(check: Check) -> dict[str, Any]:
    """One checkpoint of the shipped engine through the stage's background Uploader into a local
    folder: the seconds the step loop is stalled, and the seconds until the background commit."""
    from koelectra_dist.pretrain.checkpoint.upload import Uploader
    from koelectra_dist.pretrain.meta import CheckpointMeta

    a = check.args
    cfg = run_config(a, a.micro_batch)
    engine = build(check, cfg)
    batch = make_batch(cfg, a.micro_batch, a.device, seed=6)
    micro_step(engine, batch)
    synchronize(a.device)
    root = tempfile.mkdtemp(prefix="gpu-check-ckpt-")
    meta = CheckpointMeta(
        step=1, consumed_samples=a.micro_batch, world_size=1, zero_stage=cfg.distributed.zero_stage,
        precision=cfg.distributed.precision, vocab_sha256="0" * 64, metrics={}, config=cfg.to_dict(),
    )  # fmt: skip
    saver = Uploader(root, keep_last=1, resumed_step=0)
    try:
        saved = saver.save(engine, 1, meta)
        committed = saver.wait()
    finally:
        saver.close()
    size = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())
    return {
        "stall_s": round(saved["stall_s"], 3),
        "write_s": round(saved["write_s"], 3),
        "commit_s": round(committed[1], 3) if committed else None,
        "bytes": size,
    }


def extras(check: Check) -> None:
    for name in check.args.variants:
        x = EXTRAS[name]
        if name == "electra_adamw" and check.use_electra_adamw:
            continue  # every variant ran on it already
        check.section(
            name,
            lambda c, name=name, x=x: measure(
                c, name, electra_adamw=x.electra_adamw, examples_per_row=x.examples_per_row
            )[0],
            check.build_s + (check.args.steps + check.args.warmup + 1) * check.step_s * x.examples_per_row,
        )


def estimates(check: Check) -> dict[str, Callable[[], float]]:
    """Seconds each section is expected to take, from the measured build and step seconds (priors
    before the shipped section has measured them)."""
    a = check.args
    steps = a.steps + a.warmup + 1
    big = max(a.memory_batches) / a.micro_batch
    real_micro = 8 if a.smoke else max(1, REAL_STREAM_GLOBAL_BATCH // a.micro_batch)
    return {
        "environment": lambda: 0.0,  # always runs: nothing else can be read without it
        "fused_adam": lambda: 5.0 if a.device != "cuda" else 150.0,
        "shipped": lambda: check.build_s + steps * check.step_s,
        "real_stream": lambda: check.build_s + 3 + (max(2, a.steps // 4) + 2) * real_micro * check.step_s * 1.3,
        "sync_debug": lambda: 3 * check.step_s + 2,
        "profile": lambda: 5 * check.step_s + 10,
        "compile": lambda: check.build_s + steps * check.step_s + (20 if a.smoke else 90),
        "peak_memory": lambda: check.build_s + 3 * check.step_s * big,
        "zero_stages": lambda: 2 * (check.build_s + (max(2, a.steps // 4) + 2) * 2 * check.step_s),
        "checkpoint_save": lambda: check.build_s + check.step_s + (5 if a.smoke else 30),
    }


SECTIONS: dict[str, Callable[[Check], Any]] = {
    "environment": environment,
    "fused_adam": fused_adam,
    "shipped": shipped,
    "real_stream": real_stream,
    "sync_debug": sync_debug,
    "profile": profile,
    "compile": compile_section,
    "peak_memory": peak_memory,
    "zero_stages": zero_stages,
    "checkpoint_save": checkpoint_save,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIGS / "base_v3.json"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true", help="a tiny model on CPU, few steps: checks the script itself")
    p.add_argument(
        "--out", help="JSON file rewritten after every section (the last line of stdout is the final JSON too)"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=360.0,
        help="skip sections whose estimate exceeds what is left (default 6 min)",
    )
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--memory-batches", type=int, nargs="*", default=[32, 64, 128])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS), help="default: all")
    p.add_argument("--variants", nargs="*", default=list(EXTRAS), choices=list(EXTRAS), help="extras, run last")
    p.add_argument("--fail-fused-adam", action="store_true", help="make the FusedAdam build fail (tests the fallback)")
    args = p.parse_args()
    if args.smoke:
        args.device, args.micro_batch, args.steps, args.warmup, args.memory_batches = "cpu", 4, 2, 1, [8]
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)  # it logs to stdout, where the JSON goes
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=0, world_size=1)
    check = Check(args)
    check.write()
    expected = estimates(check)
    for name in ["environment", *(s for s in SECTIONS if s != "environment" and s in args.sections)]:
        check.section(name, SECTIONS[name], expected[name]())
    extras(check)
    check.report["complete"] = True
    check.write()
    print(json.dumps(check.report))
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
