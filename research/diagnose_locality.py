"""Does a masked LM that starts out looking at its neighbours learn transferable features faster?

A tiny masked LM (a plain `transformers` ElectraForMaskedLM, the generator tower alone) is trained
on the first lines of ../shared/data/nsmc/corpus.txt.gz, packed like diagnose_transfer.py, from one
of two initialisations:

  standard  ELECTRA's (normal 0.02): attention starts uniform, so until it learns where the
            neighbours are the model is a bag of words and stays at the unigram loss
  local     the same, except that the position embeddings are sinusoids at random frequencies and
            layer 0's query/key weights rotate them by one position, so that head h starts out
            attending to the previous token (h even) or the next one (h odd)

then fine-tunes it on NSMC with the finetune stage's trainer, next to its word/position embeddings
with fresh layers and to a random initialisation of the same kind.

    python research/diagnose_locality.py --init standard
    python research/diagnose_locality.py --init local --steps 2000

Prints JSON lines: the held-out masked-LM loss (all chosen tokens masked) every --log-every steps
beside the held-out unigram loss (what a bag of words reaches), then one line per fine-tuning start.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import transformers
from diagnose_transfer import NsmcFinetuning, keep_argument, nsmc_corpus_rows, work_folder

from koelectra_dist.export.stage import write_tokenizer
from koelectra_dist.tokens import MASK_ID, PAD_ID, SPECIAL_TOKENS


def local_attention_init(model: transformers.ElectraPreTrainedModel, sharpness: float = 2.0, seed: int = 0) -> None:
    """Sinusoidal position embeddings at random frequencies in the first head_size dims (scaled to
    the usual 0.02), and layer-0 heads whose query/key product is a one-position rotation of them."""
    embeddings, attention = model.electra.embeddings, model.electra.encoder.layer[0].attention.self
    length, hidden = embeddings.position_embeddings.weight.shape
    heads = model.config.num_attention_heads
    if heads < 2:
        raise ValueError("the local initialisation needs at least 2 heads: one looks left, one right")
    head = hidden // heads
    width = 2 * (head // 2)  # the position dims: one (sin, cos) pair per frequency
    angle = torch.rand(width // 2, generator=torch.Generator().manual_seed(seed)) * math.pi
    phase = torch.arange(length).float()[:, None] * angle
    positions = torch.zeros(length, hidden)
    positions[:, 0:width:2], positions[:, 1:width:2] = phase.sin(), phase.cos()
    with torch.no_grad():
        embeddings.position_embeddings.weight.copy_(positions / positions.std() * 0.02)
        for h in range(heads):
            # R maps the (sin, cos) pairs of position j to those of j + offset, so q_i . k_j = sharpness
            # * p_i . p_(j+offset) (plus content terms) peaks at j = i - offset.
            offset = 1.0 if h % 2 == 0 else -1.0
            cos, sin = (offset * angle).cos(), (offset * angle).sin()
            rotation = torch.zeros(width, width)
            rotation[0::2, 0::2], rotation[0::2, 1::2] = torch.diag(cos), torch.diag(sin)
            rotation[1::2, 0::2], rotation[1::2, 1::2] = torch.diag(-sin), torch.diag(cos)
            rows = slice(h * head, h * head + width)
            for layer, block in ((attention.query, sharpness * torch.eye(width)), (attention.key, rotation)):
                layer.weight[h * head : (h + 1) * head] = 0.0
                layer.weight[rows, :width] = block
                layer.bias[h * head : (h + 1) * head] = 0.0


def mask(ids: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """15% of the ordinary tokens replaced by [MASK]; labels -100 elsewhere."""
    chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & (ids >= len(SPECIAL_TOKENS))
    return ids.masked_fill(chosen, MASK_ID), ids.masked_fill(~chosen, -100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", choices=["standard", "local"], default="local")
    p.add_argument("--lines", type=int, default=150_000, help="corpus lines to pre-train on")
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-3, help="constant")
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--finetune-rows", type=int, default=1000)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--finetune-epochs", type=float, default=5)
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per start")
    keep_argument(p)
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    work = work_folder(args.keep, "diagnose-locality-")
    vocab_dir = str(work / "vocab")
    vocab, ids, _ = nsmc_corpus_rows(args.lines, args.vocab, args.seq, vocab_dir)
    train, held = ids[:-32], ids[-32:]
    config = transformers.ElectraConfig(
        vocab_size=len(vocab),
        embedding_size=args.hidden,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=args.seq,
    )

    def initialised() -> transformers.ElectraForMaskedLM:
        model = transformers.ElectraForMaskedLM(config)
        if args.init == "local":
            local_attention_init(model)
        return model

    model = initialised()
    held_in, held_labels = mask(held, torch.Generator().manual_seed(1))
    unigram = torch.bincount(train.flatten(), minlength=len(vocab)).float() + 1  # add-one: no token unseen
    unigram[: len(SPECIAL_TOKENS)] = 0
    unigram_loss = -(unigram / unigram.sum())[held_labels[held_labels != -100]].log().mean().item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, eps=1e-6)
    started = time.time()
    for step in range(1, args.steps + 1):
        rows = train[torch.randint(0, len(train), (args.batch,))]
        inputs, labels = mask(rows)
        loss = model(input_ids=inputs, attention_mask=(rows != PAD_ID).long(), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                held_loss = model(input_ids=held_in, attention_mask=(held != PAD_ID).long(), labels=held_labels).loss
            model.train()
            line = {"step": step, "seconds": round(time.time() - started), "held_out_loss": round(held_loss.item(), 3)}
            print(json.dumps({**line, "unigram_loss": round(unigram_loss, 3)}), flush=True)

    torch.manual_seed(1)
    fresh = initialised()
    embeddings_only = initialised()
    pretrained = model.state_dict()
    embeddings_only.load_state_dict(
        {k: v for k, v in pretrained.items() if k.startswith("electra.embeddings.")}, strict=False
    )
    nsmc = NsmcFinetuning(args.finetune_rows, args.finetune_lr, args.finetune_epochs, args.seeds, min(64, args.seq))
    for start, tower in (("pretrained", model), ("pretrained_embeddings", embeddings_only), ("random", fresh)):
        folder = str(work / start)
        tower.save_pretrained(folder)
        write_tokenizer(vocab_dir, folder, args.seq)
        nsmc.report(start, folder)


if __name__ == "__main__":
    main()
