"""Time one full ELECTRA training step (forward, backward, AdamW step): ElectraPretrainer against the
straightforward baseline, measured in the same run, same config, precision, batch and optimizer.

Baseline: ElectraForMaskedLM with its head over every position + ElectraForPreTraining, embeddings
shared, masking done in Python on the host before the forward.

    python benchmarks/bench_step.py                  # Small towers, seq 128, batch 16, fp32, CPU
    python benchmarks/bench_step.py --device cuda    # Base towers, seq 512, bf16

Prints one JSON line per configuration: ours_s, baseline_s (median seconds per step), ratio
(baseline / ours), device, and on CUDA mfu (model FLOPs per non-padding token, `train_flops_per_token`, over the device peak).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist.config import ModelConfig, load_config
from koelectra_dist.pretrain.model import ElectraPretrainer, gumbel_sample, hf_configs, train_flops_per_token
from koelectra_dist.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
H100_BF16_PEAK = 989e12
MASK_PROB = 0.15
DISC_WEIGHT = 50.0


class Baseline(torch.nn.Module):
    """The textbook implementation: full-vocabulary logits at every position, host-side masking."""

    def __init__(self, model_cfg: ModelConfig):
        super().__init__()
        gen_cfg, disc_cfg = hf_configs(model_cfg)
        self.generator = ElectraForMaskedLM(gen_cfg)
        self.discriminator = ElectraForPreTraining(disc_cfg)
        self.discriminator.electra.embeddings = self.generator.electra.embeddings
        self.cap = int((MASK_PROB + 0.005) * model_cfg.max_length)

    def host_mask(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ELECTRA's masking rule, row by row in Python: (masked ids, labels with -100 unmasked)."""
        rows = input_ids.tolist()
        masked, labels = [], []
        for row in rows:
            real = [t for t in row if t != PAD_ID]
            candidates = [i for i, t in enumerate(row) if t not in (CLS_ID, SEP_ID, MASK_ID, PAD_ID)]
            count = min(self.cap, max(1, round(MASK_PROB * len(real))), len(candidates))
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
        return gen.loss + DISC_WEIGHT * disc.loss


def make_batch(batch: int, seq: int, vocab: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Packed full-length examples `[CLS] A [SEP] B [SEP]` of random ordinary tokens."""
    ids = torch.randint(5, vocab, (batch, seq))
    ids[:, 0] = CLS_ID
    ids[:, seq // 2] = SEP_ID
    ids[:, -1] = SEP_ID
    token_types = torch.zeros_like(ids)
    token_types[:, seq // 2 + 1 :] = 1
    return ids.to(device), torch.ones_like(ids).to(device), token_types.to(device)


def step_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], precision: str) -> Callable[[], None]:
    device = batch[0].device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = (
        torch.autocast(device.type, dtype=getattr(torch, precision))
        if precision != "float32"
        else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            out = model(*batch)
        loss = out.loss if hasattr(out, "loss") else out
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(
    model_cfg: ModelConfig, seq: int, batch_size: int, precision: str, device: torch.device, steps: int, warmup: int
) -> dict:
    torch.manual_seed(0)
    random.seed(0)
    ours = ElectraPretrainer(model_cfg, mask_prob=MASK_PROB, disc_weight=DISC_WEIGHT).to(device).train()
    baseline = Baseline(model_cfg).to(device).train()
    baseline.load_state_dict(ours.state_dict())
    batch = make_batch(batch_size, seq, model_cfg.vocab_size, device)
    steps_fn = {"ours": step_fn(ours, batch, precision), "baseline": step_fn(baseline, batch, precision)}
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    for i in range(warmup + steps):
        # Interleave so that load from other processes hits both alike.
        for name, step in steps_fn.items():
            seconds = timed(step, device)
            if i >= warmup:
                times[name].append(seconds)
    ours_s, baseline_s = statistics.median(times["ours"]), statistics.median(times["baseline"])
    result = {
        "config": f"{model_cfg.hidden_size}h{model_cfg.num_hidden_layers}L-gen{model_cfg.generator_hidden_size()}",
        "vocab": model_cfg.vocab_size,
        "seq": seq,
        "batch": batch_size,
        "precision": precision,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "steps": steps,
        "ours_s": round(ours_s, 4),
        "baseline_s": round(baseline_s, 4),
        "ratio": round(baseline_s / ours_s, 3),
    }
    if device.type == "cuda":
        tokens = int(batch[1].sum())
        result["mfu"] = round(tokens * train_flops_per_token(model_cfg, seq, MASK_PROB) / ours_s / H100_BF16_PEAK, 4)
        result["baseline_mfu"] = round(
            tokens * train_flops_per_token(model_cfg, seq, MASK_PROB) / baseline_s / H100_BF16_PEAK, 4
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--config", help="model config JSON (default: Small on CPU, Base on CUDA)")
    parser.add_argument("--seq", type=int, help="sequence length (default 128 CPU, 512 CUDA)")
    parser.add_argument("--batch", type=int, help="batch size (default 16 CPU, 32 CUDA)")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "float16"], help="default fp32 CPU, bf16 CUDA")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    model_cfg = load_config(args.config or CONFIGS / ("base_v3.json" if cuda else "small_v3.json")).model
    result = run(
        model_cfg,
        seq=args.seq or (512 if cuda else 128),
        batch_size=args.batch or (32 if cuda else 16),
        precision=args.precision or ("bfloat16" if cuda else "float32"),
        device=torch.device(args.device),
        steps=args.steps,
        warmup=args.warmup,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
