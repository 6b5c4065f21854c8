"""The GPU check: MFU of the shipped pre-training step on one GPU, each speed-relevant choice toggled,
peak memory per micro-batch, the attention kernel used, and where the time goes. Prints one JSON
object. About 10 minutes on one H100/H200 for Base v3 at seq 512 in bf16.

    python benchmarks/gpu_check.py                       # Base v3 (configs/base_v3.json), seq 512, bf16
    python benchmarks/gpu_check.py --smoke               # a tiny, fast run of the whole script on CPU

The step is the product's: the stage's model (`koelectra_dist.pretrain.loop.pretrainer`) inside a
real DeepSpeed engine built by `koelectra_dist.pretrain.engine.build_engine` (ZeRO 1, one rank),
rows of random token ids, `with_metrics` only as on a log step. MFU = train_flops_per_token x real
tokens per second / the device's dense bf16 peak (koelectra_dist.pretrain.metrics.PEAK_FLOPS; no
MFU for a device not listed there, nor on CPU).

Variants (`VARIANTS`; each against "shipped", measured in the same run):
- shipped: full rows, so no attention mask (the fused SDPA kernel); the AUC metric off (as on all
  but log steps); fp32 gradient accumulation; FusedAdam when its op builds; ZeRO buckets of 5e7
  with overlap_comm; no DeepSpeed timers; train.compile as configured (false);
- padded_rows: rows of 70% of the length on average, padded with a mask (what unpacked shards cost);
- metrics_every_step: the AUC metric (a sort over every token) on every step, not on log steps only;
- electra_adamw: the PyTorch ElectraAdamW instead of FusedAdam;
- compile: train.compile=true (each encoder layer compiled by Inductor);
- deepspeed_buckets: DeepSpeed's own bucket sizes (5e8) without overlap_comm. On one GPU there is no
  gradient communication, so this measures only their cost here; their benefit needs several GPUs;
- deepspeed_timers: DeepSpeed's throughput timer on, its default (a device sync per step);
- unfused_vocab: train.fused_vocab=false (the generator's cross-entropy, Gumbel sample and accuracy
  as separate passes over the vocabulary);
- four_examples_per_row: full rows of four examples each, attention kept inside each example by a
  block-diagonal mask (what corpus.several_examples_per_row costs against one unmasked example).
A new config flag becomes one more entry of VARIANTS (its config overrides).
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
from pathlib import Path
from typing import Any

import torch

from koelectra_dist.config import Config, load_config
from koelectra_dist.pretrain.engine import build_engine, fused_adam_available
from koelectra_dist.pretrain.loop import pretrainer
from koelectra_dist.pretrain.metrics import peak_flops
from koelectra_dist.pretrain.model import train_flops_per_token
from koelectra_dist.pretrain.optim import ElectraAdamW, param_groups
from koelectra_dist.tokens import CLS_ID, PAD_ID, SEP_ID

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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One change against the shipped step: config overrides and/or how the step is fed and built."""

    overrides: tuple[str, ...] = ()
    padded: bool = False
    examples_per_row: int = 1
    with_metrics: bool = False
    electra_adamw: bool = False
    deepspeed: dict[str, Any] | None = None  # a user DeepSpeed file's contents


VARIANTS: dict[str, Variant] = {
    "shipped": Variant(),
    "padded_rows": Variant(padded=True),
    "metrics_every_step": Variant(with_metrics=True),
    "electra_adamw": Variant(electra_adamw=True),
    "compile": Variant(overrides=("train.compile=true",)),
    "deepspeed_buckets": Variant(
        overrides=(
            "distributed.reduce_bucket_size=500000000",
            "distributed.allgather_bucket_size=500000000",
            "distributed.overlap_comm=false",
        )
    ),
    "deepspeed_timers": Variant(deepspeed={"timers": {"throughput": {"enabled": True}}}),
    "unfused_vocab": Variant(overrides=("train.fused_vocab=false",)),
    "four_examples_per_row": Variant(examples_per_row=4),
}


def run_config(args: argparse.Namespace, micro_batch: int, extra: tuple[str, ...] = ()) -> Config:
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


def make_batch(
    cfg: Config, micro_batch: int, device: str, padded: bool, seed: int, examples_per_row: int = 1
) -> dict[str, Any]:
    """Rows of random ids; padded rows end at 40-100% of the length (70% on average), full rows fill
    it, as one example or as `examples_per_row` equal ones (own positions, block-diagonal attention)."""
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
    batch = {"input_ids": ids.to(device), "attention_mask": mask, "token_type_ids": torch.zeros_like(ids).to(device)}
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


def build(cfg: Config, *, electra_adamw: bool = False) -> Any:
    """The product's engine, or with ElectraAdamW in place of the optimizer it would choose."""
    torch.manual_seed(0)
    model = pretrainer(cfg)
    t = cfg.train
    optimizer = (
        ElectraAdamW(param_groups(model, t.weight_decay), lr=t.learning_rate, eps=t.adam_eps) if electra_adamw else None
    )
    engine, _, _ = build_engine(cfg, model, optimizer)
    return engine


def time_steps(
    engine: Any, batch: dict[str, Any], device: str, steps: int, warmup: int, with_metrics: bool = False
) -> list[float]:
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        out = engine(**batch, with_metrics=with_metrics)
        engine.backward(out.loss)
        engine.step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def variant_config(args: argparse.Namespace, variant: Variant) -> Config:
    cfg = run_config(args, args.micro_batch, variant.overrides)
    if variant.deepspeed is None:
        return cfg
    path = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "deepspeed.json"
    path.write_text(json.dumps(variant.deepspeed))
    return dataclasses.replace(cfg, distributed=dataclasses.replace(cfg.distributed, deepspeed_config=str(path)))


def measure(name: str, variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    cfg = variant_config(args, variant)
    batch = make_batch(
        cfg, args.micro_batch, args.device, variant.padded, seed=1, examples_per_row=variant.examples_per_row
    )
    try:
        engine = build(cfg, electra_adamw=variant.electra_adamw)
        seconds = statistics.median(
            time_steps(engine, batch, args.device, args.steps, args.warmup, variant.with_metrics)
        )
    except Exception as e:  # noqa: BLE001 - one variant failing (e.g. compile) must not lose the others
        return {"variant": name, "error": f"{type(e).__name__}: {str(e)[:500]}"}
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
    from torch.autograd import DeviceType

    by_class: dict[str, float] = defaultdict(float)
    other: dict[str, float] = defaultdict(float)
    attention_kernels = set()
    names = {event.key for event in prof.key_averages()}
    for event in prof.key_averages():
        if args.device == "cuda":
            # kernels only: a CPU op's device time is its kernels' again
            us = event.self_device_time_total if event.device_type == DeviceType.CUDA else 0
        else:
            us = event.self_cpu_time_total
        if not us:
            continue
        cls = classify(event.key)
        by_class[cls] += us
        if cls == "attention":
            attention_kernels.add(event.key[:120])
        if cls == "other":
            other[event.key[:80]] += us
    total = sum(by_class.values()) or 1.0
    return {
        "time_fraction_by_kernel_class": {
            k: round(v / total, 4) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])
        },
        "top_other": {k: round(v / total, 4) for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:8]},
        "attention_backend": attention_backend(names),
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIGS / "base_v3.json"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true", help="a tiny model on CPU, few steps: checks the script itself")
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--memory-batches", type=int, nargs="*", default=[32, 64, 128])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="default: all")
    args = p.parse_args()
    if args.smoke:
        args.device, args.micro_batch, args.steps, args.warmup = "cpu", 4, 2, 1
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)  # it logs to stdout, where the JSON goes
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=0, world_size=1)
    cfg = run_config(args, args.micro_batch)
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "environment": environment(args),
        "model": {"config": Path(args.config).name, "smoke": args.smoke, "seq": cfg.model.max_length},
        "micro_batch": args.micro_batch,
        "variants": [
            measure(name, VARIANTS[name], args) for name in ["shipped", *(n for n in args.variants if n != "shipped")]
        ],
    }
    shipped = report["variants"][0].get("step_s")
    for v in report["variants"]:
        if shipped and "step_s" in v:
            v["step_time_vs_shipped"] = round(v["step_s"] / shipped, 3)
    if args.device == "cuda":
        report["peak_memory"] = peak_memory(args)
    report["profile"] = profile(cfg, args)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
