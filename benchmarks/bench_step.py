"""Time one full ELECTRA training step as the product runs it against the straightforward baseline,
measured in the same run, same model, precision, batches and learning rate.

Ours: the pre-training stage's own step: `ElectraPretrainer` (built by the stage's `pretrainer`, so
`train.compile` applies) inside the DeepSpeed engine of `koelectra_dist.pretrain.engine.build_engine`
(ZeRO stage and optimizer as configured; one rank), fed the stage's own batches (`ShardStream`:
full rows get no attention mask), `engine(...)`, `engine.backward`, `engine.step` (gradient
clipping included).
Baseline: ElectraForMaskedLM with its head over every position + ElectraForPreTraining, embeddings
shared, masking done in Python on the host before the forward, an attention mask always passed,
torch AdamW and the same gradient clipping.

Both get the same batches of real shards: the corpus stage's output (`--shards`), or by default a
shard set the corpus stage builds from the first `--corpus-lines` lines of ../shared/data/nsmc with a
`model.vocab_size` vocabulary (35,000 for the Small/Base v3 configs; whitespace pre-tokenizer, for
speed; kept in `--work` so that later runs reuse it). `--synthetic` times full rows of random ids.

    python benchmarks/bench_step.py                  # Small v3 towers, vocab 35000, seq 128, batch 16, fp32, CPU
    python benchmarks/bench_step.py --device cuda    # Base v3 towers, seq 512, batch 32, bf16
    python benchmarks/bench_step.py --synthetic      # random full rows instead of shards

In bf16 the baseline holds bf16 weights and computes in bf16, as DeepSpeed's bf16 does (the headline
`ratio`); the same baseline with fp32 weights under autocast is timed too, its ratio only beside it
(`ratio_vs_autocast`). fp16 runs the baseline under autocast.

Prints one JSON line: ours_s, baseline_s (median seconds per step), ratio (baseline / ours), the
share of real tokens, and on CUDA mfu (model FLOPs per real token, `train_flops_per_token`, over the
device's bf16 peak from `koelectra_dist.pretrain.metrics.PEAK_FLOPS`).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist.config import Config, ModelConfig, load_config
from koelectra_dist.pretrain.metrics import peak_flops
from koelectra_dist.pretrain.model import gumbel_sample, hf_configs, train_flops_per_token
from koelectra_dist.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
NSMC = ROOT.parent / "shared" / "data" / "nsmc" / "corpus.txt.gz"


class Baseline(torch.nn.Module):
    """The textbook implementation: full-vocabulary logits at every position, host-side masking."""

    def __init__(self, model_cfg: ModelConfig, mask_prob: float, disc_weight: float):
        super().__init__()
        self.mask_prob, self.disc_weight = mask_prob, disc_weight
        gen_cfg, disc_cfg = hf_configs(model_cfg)
        self.generator = ElectraForMaskedLM(gen_cfg)
        self.discriminator = ElectraForPreTraining(disc_cfg)
        self.discriminator.electra.embeddings = self.generator.electra.embeddings
        self.cap = int((mask_prob + 0.005) * model_cfg.max_length)

    def host_mask(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ELECTRA's masking rule, row by row in Python: (masked ids, labels with -100 unmasked)."""
        rows = input_ids.tolist()
        masked, labels = [], []
        for row in rows:
            real = [t for t in row if t != PAD_ID]
            candidates = [i for i, t in enumerate(row) if t not in (CLS_ID, SEP_ID, MASK_ID, PAD_ID)]
            count = min(self.cap, max(1, round(self.mask_prob * len(real))), len(candidates))
            chosen = random.sample(candidates, count)
            new, lab = list(row), [-100] * len(row)
            for i in chosen:
                lab[i] = row[i]
                if random.random() < 0.85:
                    new[i] = MASK_ID
            masked.append(new)
            labels.append(lab)
        return torch.tensor(masked), torch.tensor(labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        masked, labels = self.host_mask(input_ids.cpu())
        masked, labels = masked.to(input_ids.device), labels.to(input_ids.device)
        gen = self.generator(
            input_ids=masked, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels
        )
        chosen = labels != -100
        fake = input_ids.clone()
        fake[chosen] = gumbel_sample(gen.logits[chosen].detach())
        replaced = ((fake != input_ids) & attention_mask.bool()).long()
        disc = self.discriminator(
            input_ids=fake, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=replaced
        )
        return gen.loss + self.disc_weight * disc.loss


def bench_config(args: argparse.Namespace, cuda: bool) -> Config:
    config = args.config or CONFIGS / ("base_v3.json" if cuda else "small_v3.json")
    batch, seq = args.batch or (32 if cuda else 16), args.seq or (512 if cuda else 128)
    overrides = [
        f"model.max_length={seq}",
        "distributed.num_workers=1",
        f"distributed.gpus_per_worker={1 if cuda else 0}",
        f"distributed.precision={args.precision or ('bf16' if cuda else 'fp32')}",
        f"train.micro_batch_size={batch}",
        f"train.global_batch_size={batch}",
        "train.warmup_steps=0",
        "train.steps=100000",
        f"run.output_uri={Path(args.work).resolve() / f'nsmc-{args.corpus_lines}-seq{seq}'}",
        'run.stages=["corpus"]',
        "corpus.vocab.pretokenizer=whitespace",
        "corpus.vocab.sample_lines=null",
    ]
    return load_config(config, overrides + args.set)


def build_shards(cfg: Config, args: argparse.Namespace) -> str:
    """The shard set of `--shards`, else one the corpus stage builds (once) from an NSMC slice."""
    if args.shards:
        return args.shards
    from koelectra_dist.pipeline import run_stages

    if not NSMC.exists():
        raise SystemExit(f"{NSMC} is absent: pass --shards (a corpus stage output's shards/) or --synthetic")
    work = Path(args.work).resolve()
    text = work / f"nsmc-{args.corpus_lines}.txt"
    if not text.exists():
        work.mkdir(parents=True, exist_ok=True)
        with gzip.open(NSMC, "rt", encoding="utf-8") as src, open(f"{text}.tmp", "w", encoding="utf-8") as dst:
            dst.writelines(itertools.islice(src, args.corpus_lines))
        os.replace(f"{text}.tmp", text)
    from dataclasses import replace

    from koelectra_dist import storage

    if storage.exists(storage.join(cfg.paths.shards, "manifest.json")):
        return cfg.paths.shards  # built by an earlier run (the manifest is written last)
    cfg = replace(cfg, corpus=replace(cfg.corpus, inputs=[str(text)]))
    os.environ.setdefault("RAY_ADDRESS", "local")
    run_stages(cfg)
    return cfg.paths.shards


def real_batches(cfg: Config, shards: str, count: int, device: torch.device) -> list[dict[str, Any]]:
    """`count` micro-batches of the stage's own data path (ShardStream + collate)."""
    from dataclasses import replace

    from koelectra_dist.pretrain.data import ShardStream, open_shards

    shard_set = open_shards(replace(cfg, train=replace(cfg.train, shards_uri=shards)))
    if shard_set.manifest.vocab_size != cfg.model.vocab_size:
        raise SystemExit(
            f"{shards}: vocabulary of {shard_set.manifest.vocab_size}, model.vocab_size {cfg.model.vocab_size}"
        )
    stream = ShardStream(
        shard_set.uris, shard_set.rows, seed=0, rank=0, world_size=1, micro_batch=cfg.train.micro_batch_size, start=0
    )
    return [to_device(b, device) for b in itertools.islice(stream.batches(), count)]


def synthetic_batches(cfg: Config, count: int, device: torch.device) -> list[dict[str, Any]]:
    """Full rows `[CLS] A [SEP] B [SEP]` of random ordinary tokens (no attention mask)."""
    batch, seq = cfg.train.micro_batch_size, cfg.model.max_length
    found = []
    for _ in range(count):
        ids = torch.randint(5, cfg.model.vocab_size, (batch, seq))
        ids[:, 0], ids[:, seq // 2], ids[:, -1] = CLS_ID, SEP_ID, SEP_ID
        types = torch.zeros_like(ids)
        types[:, seq // 2 + 1 :] = 1
        found.append(to_device({"input_ids": ids, "attention_mask": None, "token_type_ids": types}, device))
    return found


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v if v is None else v.to(device) for k, v in batch.items()}


def ours_step(cfg: Config) -> tuple[Callable[[dict[str, Any]], None], torch.nn.Module]:
    """The stage's step: its model builder, its engine, with_metrics off (not a log step)."""
    from koelectra_dist.pretrain.engine import build_engine
    from koelectra_dist.pretrain.loop import pretrainer

    torch.manual_seed(0)
    engine, _, _ = build_engine(cfg, pretrainer(cfg))

    def step(batch: dict[str, Any]) -> None:
        out = engine(**batch, with_metrics=False)
        engine.backward(out.loss)
        engine.step()

    return step, engine.module


def baseline_step(
    cfg: Config, weights: dict[str, torch.Tensor], device: torch.device, autocast_bf16: bool = False
) -> Callable[[dict[str, Any]], None]:
    """The baseline in the run's precision: bf16 weights and compute for bf16, as DeepSpeed's bf16
    runs them (`autocast_bf16`: fp32 weights under autocast instead, the figure shown beside);
    fp16 under autocast."""
    t = cfg.train
    precision = cfg.distributed.precision
    model = Baseline(cfg.model, t.mask_prob, t.disc_weight).to(device).train()
    model.load_state_dict(weights)
    if precision == "bf16" and not autocast_bf16:
        model = model.to(torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, fused=device.type == "cuda")
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if precision == "fp16" or (precision == "bf16" and autocast_bf16)
        else contextlib.nullcontext()
    )

    def step(batch: dict[str, Any]) -> None:
        mask = batch["attention_mask"]
        mask = torch.ones_like(batch["input_ids"]) if mask is None else mask
        with autocast:
            loss = model(batch["input_ids"], mask, batch["token_type_ids"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step: Callable[[dict[str, Any]], None], batch: dict[str, Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--config", help="run config JSON (default: Small v3 on CPU, Base v3 on CUDA)")
    parser.add_argument("--seq", type=int, help="sequence length (default 128 CPU, 512 CUDA)")
    parser.add_argument("--batch", type=int, help="micro-batch size (default 16 CPU, 32 CUDA)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="default fp32 CPU, bf16 CUDA")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--synthetic", action="store_true", help="random full rows instead of real shards")
    parser.add_argument("--shards", help="an existing shard set (a corpus stage output's shards/ folder)")
    parser.add_argument(
        "--corpus-lines", type=int, default=100_000, help="NSMC lines the default shard set is built from"
    )
    parser.add_argument("--work", default="outputs/bench_step", help="where the default shard set is built and kept")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)  # it logs to stdout, where the JSON goes
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = bench_config(args, device.type == "cuda")
    count = args.warmup + args.steps
    batches = (
        synthetic_batches(cfg, count, device)
        if args.synthetic
        else real_batches(cfg, build_shards(cfg, args), count, device)
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29534"))
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    random.seed(0)
    ours, module = ours_step(cfg)
    steps = {"ours": ours, "baseline": baseline_step(cfg, module.state_dict(), device)}
    if cfg.distributed.precision == "bf16":
        steps["baseline_autocast"] = baseline_step(cfg, module.state_dict(), device, autocast_bf16=True)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i, batch in enumerate(batches):
        # Interleaved, on the same batch: load from other processes hits both alike.
        for name, step in steps.items():
            seconds = timed(step, batch, device)
            if i >= args.warmup:
                times[name].append(seconds)
    ours_s, baseline_s = statistics.median(times["ours"]), statistics.median(times["baseline"])
    m = cfg.model
    real = [
        float(b["input_ids"].numel() if b["attention_mask"] is None else b["attention_mask"].sum()) for b in batches
    ]
    result = {
        "config": f"{m.hidden_size}h{m.num_hidden_layers}L-gen{m.generator_hidden_size()}",
        "vocab": m.vocab_size,
        "seq": m.max_length,
        "batch": cfg.train.micro_batch_size,
        "precision": cfg.distributed.precision,
        "zero_stage": cfg.distributed.zero_stage,
        "compile": cfg.train.compile,
        "data": "synthetic full rows" if args.synthetic else "shards",
        "real_token_frac": round(sum(real) / sum(b["input_ids"].numel() for b in batches), 4),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "steps": args.steps,
        "ours_s": round(ours_s, 4),
        "baseline_s": round(baseline_s, 4),
        "ratio": round(baseline_s / ours_s, 3),
    }
    if times.get("baseline_autocast"):
        # Beside the headline only: fp32 weights under autocast, a slower baseline than bf16 weights.
        result["ratio_vs_autocast"] = round(statistics.median(times["baseline_autocast"]) / ours_s, 3)
    peak = peak_flops(device)
    if peak:
        tokens = statistics.mean(real[args.warmup :])
        flops = train_flops_per_token(m, m.max_length, cfg.train.mask_prob)
        result["mfu"] = round(tokens * flops / ours_s / peak, 4)
        result["baseline_mfu"] = round(tokens * flops / baseline_s / peak, 4)
    print(json.dumps(result), flush=True)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
