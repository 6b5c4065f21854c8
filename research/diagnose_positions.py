"""How long a tiny ELECTRA takes to learn to look at its neighbours, per sequence length.

A synthetic corpus where every token is repeated once (`a a b b c c ...`, tokens drawn uniformly
from 1,000 ids), so a masked token is always given away by a neighbour. The generator (masked LM)
of an ElectraPretrainer is scored on the masked positions that were replaced by [MASK]: it stays
at chance (about 0.001) until its attention has learned to pick the adjacent position out of the
sequence with learned absolute position embeddings, then climbs past 0.9 within a few hundred
steps. The step where that happens grows steeply with the sequence length; --window-steps (short
windows first) removes that plateau here, though on real text it did not lift tiny CPU pre-training
above unigram level by itself (research/quality.md).

    python research/diagnose_positions.py                          # seq 16, 32, 64, 128; 1,500 steps each
    python research/diagnose_positions.py --seqs 128 --steps 5000
    python research/diagnose_positions.py --seqs 128 --window-steps 1000   # first 1,000 steps on 16-token windows

Prints one JSON line per sequence length: the masked-position accuracy every --log-every steps and
the first logged step at which it passed 0.5 (null: not within --steps).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from windows import short_windows

from koelectra_dist.config import ModelConfig
from koelectra_dist.pretrain.model import ElectraPretrainer, mask_tokens
from koelectra_dist.tokens import CLS_ID, MASK_ID, SEP_ID, SPECIAL_TOKENS

FIRST_ID, DISTINCT = len(SPECIAL_TOKENS), 1000  # the ids below FIRST_ID are the special tokens


def copy_batch(rows: int, length: int) -> torch.Tensor:
    """[rows, length] ids: [CLS] a a b b ... [SEP], every ordinary token next to its copy (at an odd
    length the last one has none)."""
    drawn = torch.randint(FIRST_ID, FIRST_ID + DISTINCT, (rows, (length - 2 + 1) // 2))
    ids = drawn.repeat_interleave(2, dim=1)[:, : length - 2]
    cls = torch.full((rows, 1), CLS_ID)
    sep = torch.full((rows, 1), SEP_ID)
    return torch.cat([cls, ids, sep], dim=1)


def masked_accuracy(model: ElectraPretrainer, ids: torch.Tensor) -> float:
    """Generator accuracy (eval mode) at the chosen positions that show [MASK]; the 15% that keep
    their token are left out, being trivial."""
    ones, zeros = torch.ones_like(ids), torch.zeros_like(ids)
    model.eval()
    with torch.no_grad():
        masked = mask_tokens(ids, ones, model.mask_prob, model.cap)
        predicted = model.generator_logits(masked, ones, zeros).argmax(-1)
    model.train()
    scored = masked.valid & (masked.input_ids.gather(1, masked.positions) == MASK_ID)
    hits = (predicted == masked.targets) & scored
    return round((hits.sum() / scored.sum().clamp(min=1)).item(), 4)


def learn_to_copy(length: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=FIRST_ID + DISTINCT,
        embedding_size=args.hidden,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        generator_size=1.0,
        max_length=length,
    )
    model = ElectraPretrainer(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, eps=1e-6)
    held_out = copy_batch(256, length)
    curve, learned_at, started = {}, None, time.time()
    for step in range(1, args.steps + 1):
        ids = copy_batch(args.batch, length)
        batch = (ids, torch.ones_like(ids), torch.zeros_like(ids))
        if step <= args.window_steps:
            batch = short_windows(*batch, args.window)
        loss = model(*batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.log_every == 0:
            curve[step] = masked_accuracy(model, held_out)
            if learned_at is None and curve[step] > 0.5:
                learned_at = step
    return {"seq": length, "learned_at": learned_at, "accuracy": curve, "seconds": round(time.time() - started)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", default="16,32,64,128", help="sequence lengths to try")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="constant")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--window", type=int, default=16, help="short-window width for --window-steps")
    p.add_argument("--window-steps", type=int, default=0, help="first steps on short windows of each row")
    args = p.parse_args()
    for length in map(int, args.seqs.split(",")):
        print(json.dumps(learn_to_copy(length, args)), flush=True)


if __name__ == "__main__":
    main()
