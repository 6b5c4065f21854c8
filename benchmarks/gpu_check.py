"""The GPU check: MFU of the shipped pre-training step on one GPU, each speed-relevant choice toggled,
peak memory per micro-batch, the attention kernel used, and where the time goes. Prints one JSON
object. About 10 minutes on one H100/H200 for Base v3 at seq 512 in bf16.

    python benchmarks/gpu_check.py                       # Base v3 (configs/base_v3.json), seq 512, bf16
    python benchmarks/gpu_check.py --device cpu --tiny   # a smoke run of the script itself on CPU

The step is the product's: `ElectraPretrainer` inside a real DeepSpeed engine built by
`koelectra_dist.pretrain.engine.build_engine` (ZeRO 1, one rank), rows of random token ids.
MFU = train_flops_per_token x real tokens per second / the device's dense bf16 peak
(koelectra_dist.pretrain.metrics.PEAK_FLOPS).

Variants (each against "shipped" in the same run):
- shipped: full rows, so no attention mask (the fused SDPA kernel), fp32 gradient accumulation,
  DeepSpeed's FusedAdam when its op builds, no DeepSpeed timers;
- padded_rows: rows of 70% of the length on average, padded with a mask (what unpacked shards cost);
- electra_adamw: the PyTorch ElectraAdamW instead of FusedAdam;
- deepspeed_timers: DeepSpeed's throughput timer on, its default (a device sync per step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from koelectra_dist.config import Config, load_config
from koelectra_dist.pretrain.engine import build_engine, fused_adam_available
from koelectra_dist.pretrain.metrics import peak_flops
from koelectra_dist.pretrain.model import ElectraPretrainer, train_flops_per_token
from koelectra_dist.pretrain.optim import ElectraAdamW, param_groups
from koelectra_dist.tokens import CLS_ID, PAD_ID, SEP_ID

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matmul", ("gemm", "matmul", "cutlass", "xmma", "sm80_", "sm90_", "cublas")),
    ("optimizer", ("adam", "multi_tensor")),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("softmax_reduce", ("softmax", "reduce", "logsumexp", "argmax", "cross_entropy", "nll")),
    ("random", ("philox", "uniform", "rand", "bernoulli", "dropout")),
    ("copy", ("memcpy", "memset", "copy", "cat")),
    ("communication", ("nccl", "allreduce", "all_reduce", "allgather")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "pointwise", "triton")),
)


def run_config(args: argparse.Namespace, micro_batch: int) -> Config:
    overrides = [
        "distributed.num_workers=1",
        f"distributed.gpus_per_worker={1 if args.device == 'cuda' else 0}",
        "distributed.zero_stage=1",
        f"distributed.precision={'bf16' if args.device == 'cuda' else 'fp32'}",
        f"train.micro_batch_size={micro_batch}",
        f"train.global_batch_size={micro_batch}",
        "train.warmup_steps=0",
        'run.stages=["pretrain"]',
        "run.output_uri=outputs/gpu_check",
    ]
    if args.tiny:
        overrides += [
            "model.vocab_size=1000",
            "model.embedding_size=64",
            "model.hidden_size=64",
            "model.num_hidden_layers=2",
            "model.num_attention_heads=2",
            "model.intermediate_size=128",
            "model.max_length=64",
        ]
    return load_config(args.config, overrides)


def make_batch(cfg: Config, micro_batch: int, device: str, padded: bool, seed: int) -> dict[str, Any]:
    """Rows of random ids; padded rows end at 40-100% of the length (70% on average), full rows fill it."""
    gen = torch.Generator().manual_seed(seed)
    length = cfg.model.max_length
    ids = torch.randint(5, cfg.model.vocab_size, (micro_batch, length), generator=gen)
    ids[:, 0] = CLS_ID
    mask = None
    if padded:
        ends = torch.randint(int(0.4 * length), length + 1, (micro_batch,), generator=gen)
        mask = (torch.arange(length) < ends[:, None]).long()
        ids[mask == 0] = PAD_ID
        ids[torch.arange(micro_batch), ends - 1] = SEP_ID
        mask = mask.to(device)
    else:
        ids[:, -1] = SEP_ID
    return {"input_ids": ids.to(device), "attention_mask": mask, "token_type_ids": torch.zeros_like(ids).to(device)}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(cfg: Config, *, electra_adamw: bool = False) -> Any:
    """The product's engine, or with ElectraAdamW in place of the optimizer it would choose."""
    torch.manual_seed(0)
    model = ElectraPretrainer(cfg.model, cfg.train.mask_prob, cfg.train.gen_weight, cfg.train.disc_weight)
    t = cfg.train
    optimizer = (
        ElectraAdamW(param_groups(model, t.weight_decay), lr=t.learning_rate, eps=t.adam_eps) if electra_adamw else None
    )
    engine, _, _ = build_engine(cfg, model, optimizer)
    return engine


def time_steps(engine: Any, batch: dict[str, Any], device: str, steps: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        out = engine(**batch)
        engine.backward(out.loss)
        engine.step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def measure(
    name: str, cfg: Config, args: argparse.Namespace, padded: bool = False, electra_adamw: bool = False
) -> dict[str, Any]:
    batch = make_batch(cfg, args.micro_batch, args.device, padded, seed=1)
    engine = build(cfg, electra_adamw=electra_adamw)
    seconds = statistics.median(time_steps(engine, batch, args.device, args.steps, args.warmup))
    real = args.micro_batch * cfg.model.max_length if batch["attention_mask"] is None else batch["attention_mask"].sum()
    tokens_per_s = float(real) / seconds
    result = {"variant": name, "step_s": round(seconds, 5), "tokens_per_s": round(tokens_per_s)}
    peak = peak_flops(torch.device(args.device))
    if peak:
        flops = train_flops_per_token(cfg.model, cfg.model.max_length, cfg.train.mask_prob)
        result["mfu"] = round(flops * tokens_per_s / peak, 4)
    del engine
    return result


def peak_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak device memory of a few shipped steps at each micro-batch size (CUDA only)."""
    found = []
    for micro_batch in args.memory_batches:
        cfg = run_config(args, micro_batch)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            engine = build(cfg)
            time_steps(engine, make_batch(cfg, micro_batch, args.device, False, seed=2), args.device, 2, 1)
            found.append({"micro_batch": micro_batch, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
            del engine
        except torch.OutOfMemoryError:
            found.append({"micro_batch": micro_batch, "peak_gib": None, "error": "out of memory"})
    return found


def classify(kernel: str) -> str:
    lowered = kernel.lower()
    return next((cls for cls, keys in KERNEL_CLASSES if any(k in lowered for k in keys)), "other")


def profile(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Device time by kernel class over a few shipped steps, and which attention kernel ran."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    engine = build(cfg)
    batch = make_batch(cfg, args.micro_batch, args.device, False, seed=3)
    time_steps(engine, batch, args.device, 1, 2)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        time_steps(engine, batch, args.device, 3, 0)
    by_class: dict[str, float] = defaultdict(float)
    attention_kernels = set()
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", 0) if args.device == "cuda" else event.self_cpu_time_total
        if not device_us:
            continue
        cls = classify(event.key)
        by_class[cls] += device_us
        if cls == "attention":
            attention_kernels.add(event.key[:120])
    total = sum(by_class.values()) or 1.0
    return {
        "time_fraction_by_kernel_class": {
            k: round(v / total, 4) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])
        },
        "attention_kernels": sorted(attention_kernels),
    }


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import deepspeed
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "transformers": transformers.__version__,
        "device": args.device,
    }
    if args.device == "cuda":
        env |= {
            "gpu": torch.cuda.get_device_name(),
            "cuda": torch.version.cuda,
            "peak_bf16_flops": peak_flops(torch.device("cuda")),
            "fused_adam": fused_adam_available(),
            "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
        }
    return env


def timers_config(args: argparse.Namespace) -> Config:
    """The shipped config plus a user DeepSpeed file that turns DeepSpeed's timers back on."""
    path = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "timers.json"
    path.write_text(json.dumps({"timers": {"throughput": {"enabled": True}}}))  # DeepSpeed's default
    return dataclasses.replace(
        run_config(args, args.micro_batch),
        distributed=dataclasses.replace(run_config(args, args.micro_batch).distributed, deepspeed_config=str(path)),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIGS / "base_v3.json"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="a tiny model: checks the script itself")
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--memory-batches", type=int, nargs="*", default=[32, 64, 128])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)  # it logs to stdout, where the JSON goes
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=0, world_size=1)
    cfg = run_config(args, args.micro_batch)
    variants: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("shipped", lambda: measure("shipped", cfg, args)),
        ("padded_rows", lambda: measure("padded_rows", cfg, args, padded=True)),
        ("electra_adamw", lambda: measure("electra_adamw", cfg, args, electra_adamw=True)),
        ("deepspeed_timers", lambda: measure("deepspeed_timers", timers_config(args), args)),
    ]
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "environment": environment(args),
        "model": {"config": Path(args.config).name, "tiny": args.tiny, "seq": cfg.model.max_length},
        "micro_batch": args.micro_batch,
        "variants": [run() for _, run in variants],
    }
    shipped = report["variants"][0]["step_s"]
    for v in report["variants"]:
        v["step_time_vs_shipped"] = round(v["step_s"] / shipped, 3)
    if args.device == "cuda":
        report["peak_memory"] = peak_memory(args)
    report["profile"] = profile(cfg, args)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
