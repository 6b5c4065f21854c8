"""Time the generator's vocab work (cross-entropy, Gumbel-max sample, argmax accuracy, and the
cross-entropy's backward) over [masked positions x vocab] logits: the fused pass
(`train.fused_vocab`, `koelectra_dist/pretrain/vocab_pass.py`) against the reference computation in
`model.py`, measured in the same run, interleaved, on the same logits.

    python benchmarks/bench_vocab_pass.py                      # CPU, fp32, vocab 35000, 512 and 2048 rows
    python benchmarks/bench_vocab_pass.py --device cuda --dtype bfloat16 --rows 2464 9856

Prints one JSON line per size: fused_s, reference_s (median seconds per pass), ratio
(reference / fused: above 1 the fused pass is faster), compile_s (the first fused call), and
whether the samples were identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from koelectra_dist.pretrain.model import gumbel_sample
from koelectra_dist.pretrain.vocab_pass import FusedVocabPass


def reference(logits: torch.Tensor, targets: torch.Tensor):
    sampled = gumbel_sample(logits.detach())
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return ce, sampled, logits.argmax(-1) == targets


def fused_call(fused: FusedVocabPass):
    def run(logits: torch.Tensor, targets: torch.Tensor):
        noise = torch.rand(logits.shape, device=logits.device, dtype=torch.float32)
        return fused(logits, noise, targets)

    return run


def timed(fn, logits, targets, sync) -> float:
    start = time.perf_counter()
    ce, sampled, correct = fn(logits, targets)
    ce.mean().backward()
    correct.sum()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--vocab", type=int, default=35000)
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 2048], help="masked positions per pass")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fused = FusedVocabPass()
    for rows in args.rows:
        gen = torch.Generator(device=device).manual_seed(rows)
        logits = (torch.randn(rows, args.vocab, device=device, generator=gen) * 3).to(dtype).requires_grad_()
        targets = torch.randint(0, args.vocab, (rows,), device=device, generator=gen)
        torch.manual_seed(0)
        expected = reference(logits, targets)[1]
        torch.manual_seed(0)
        start = time.perf_counter()
        ce, sampled, _ = fused_call(fused)(logits, targets)
        ce.mean().backward()  # the first call compiles forward and backward (later sizes: dynamic, none)
        sync()
        compile_s = time.perf_counter() - start
        same = torch.equal(sampled, expected)
        timed(reference, logits, targets, sync)
        times: dict[str, list[float]] = {"fused": [], "reference": []}
        for _ in range(args.repeats):
            for name, fn in (("fused", fused_call(fused)), ("reference", reference)):
                logits.grad = None
                times[name].append(timed(fn, logits, targets, sync))
        f, r = statistics.median(times["fused"]), statistics.median(times["reference"])
        result = {
            "device": args.device,
            "dtype": args.dtype,
            "vocab": args.vocab,
            "rows": rows,
            "fused_s": round(f, 5),
            "reference_s": round(r, 5),
            "ratio": round(r / f, 3),
            "compile_s": round(compile_s, 2),
            "same_samples": same,
            "torch_threads": torch.get_num_threads(),
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
