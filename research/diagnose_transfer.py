"""Why tiny pre-training does not help yet: the discriminator's learning curve and where transfer breaks.

Pre-trains an ElectraPretrainer in a plain torch loop (no Ray, no DeepSpeed, so minutes go to steps)
on the first lines of ../shared/data/nsmc/corpus.txt.gz, packed by the corpus stage's ExampleBuilder,
then fine-tunes four NSMC starts with the finetune stage's own trainer and recipe:

  pretrained        the pre-trained discriminator
  fresh_embeddings  its encoder layers, freshly initialised word embeddings
  fresh_layers      its embeddings module, freshly initialised encoder layers
  random            the same architecture from random initialisation

    python research/diagnose_transfer.py --steps 600
    python research/diagnose_transfer.py --steps 3000 --replacements unigram --variants ""   # discriminator alone

`--replacements unigram|uniform` trains the discriminator alone against replacements drawn from the
corpus's unigram distribution or uniformly (no generator), to see how long it takes to learn each.
Prints JSON lines: held-out pre-training metrics every --log-every steps (eval mode, the last
~2,048 tokens' rows; with --replacements unigram first the AUC of a count-based bigram detector on
the same task, what context alone gives away), then one line per start with the NSMC dev accuracy
of each fine-tuning seed (x100).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gzip
import itertools
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
import transformers
from windows import short_windows

from koelectra_dist.config import ModelConfig
from koelectra_dist.corpus.config import VocabConfig
from koelectra_dist.corpus.examples import ExampleBuilder
from koelectra_dist.corpus.vocab import train_vocab, write_vocab_dir
from koelectra_dist.export.stage import write_tokenizer
from koelectra_dist.finetune.config import FinetuneConfig, resolve_tasks
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.trainer import finetune
from koelectra_dist.pretrain.model import ElectraPretrainer, binary_auc, mask_tokens, replaced_token_loss
from koelectra_dist.pretrain.optim import lr_factor
from koelectra_dist.tokens import PAD_ID, SPECIAL_TOKENS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HELD_OUT_TOKENS = 2048


def packed_rows(lines: list[str], tokenizer, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, length] ids and token types: ELECTRA's packing of the lines (blank line = document end)."""
    builder = ExampleBuilder(length, random.Random(0))
    encodings = tokenizer.encode_batch([line for line in lines if line], add_special_tokens=False)
    builder.add_lines(lines, (encoding.ids for encoding in encodings))
    out = builder.out
    ids = torch.full((out.rows, length), PAD_ID, dtype=torch.long)
    types = torch.zeros_like(ids)
    for row, (start, end) in enumerate(itertools.pairwise(out.offsets)):
        ids[row, : end - start] = torch.tensor(out.ids[start:end])
        types[row, : end - start] = torch.tensor(out.token_types[start:end])
    return ids, types


def nsmc_corpus_rows(
    lines: int, vocab_size: int, length: int, vocab_dir: str
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The first `lines` of the NSMC corpus: a WordPiece vocabulary (written to `vocab_dir`) and the
    packed [N, length] ids and token types."""
    with gzip.open(SHARED / "nsmc" / "corpus.txt.gz", "rt", encoding="utf-8") as f:
        text = [line.strip() for line in itertools.islice(f, lines)]
    vocab = train_vocab(text, VocabConfig(pretokenizer="whitespace", num_unused=0, limit_alphabet=1000), vocab_size)
    ids, types = packed_rows(text, write_vocab_dir(vocab, vocab_dir, length), length)
    print(json.dumps({"rows": len(ids), "tokens": int((ids != PAD_ID).sum()), "vocab": len(vocab)}), flush=True)
    return vocab, ids, types


class NsmcFinetuning:
    """The finetune stage's trainer and NSMC recipe on a slice of ratings_train (dev: 2,000 rows of
    ratings_dev), several seeds per start."""

    def __init__(self, rows: int, learning_rate: float, epochs: float, seeds: int, max_length: int):
        spec = resolve_tasks(FinetuneConfig(tasks=["nsmc"]))[0]
        self.spec = dataclasses.replace(
            spec, learning_rate=learning_rate, epochs=epochs, batch_size=32, max_length=max_length
        )
        self.train = read_split(str(SHARED), self.spec, "train", limit=rows)
        self.dev = read_split(str(SHARED), self.spec, "dev", limit=2000)
        self.seeds = seeds

    def report(self, start: str, folder: str) -> None:
        """Fine-tune the Hugging Face folder once per seed; print one JSON line."""
        runs = [finetune(folder, self.spec, self.train, self.dev, seed=42 + s) for s in range(self.seeds)]
        line = {
            "start": start,
            "nsmc_dev_accuracy": [round(r["score"], 1) for r in runs],
            "final_train_loss": [round(r["final_train_loss"], 3) for r in runs],
        }
        print(json.dumps(line), flush=True)


def work_folder(keep: str | None, prefix: str) -> Path:
    """`keep` (created if needed) or a temporary folder that is removed at exit."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def keep_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="write the vocabulary and every fine-tuning start (a Hugging Face folder) under DIR and keep them",
    )


def held_out_rows(ids: torch.Tensor) -> int:
    return max(16, HELD_OUT_TOKENS // ids.size(1))


def bigram_auc(ids: torch.Tensor, probs: torch.Tensor) -> float:
    """AUC of a count-based detector of unigram-sampled replacements on the held-out rows: a token
    is suspicious when its pointwise mutual information with both neighbours is low."""
    first_held = len(ids) - held_out_rows(ids)
    train, held = ids[:first_held], ids[first_held:]
    vocab = len(probs)
    pairs = torch.zeros(vocab, vocab, dtype=torch.float64)
    pairs.index_put_(
        (train[:, :-1].flatten(), train[:, 1:].flatten()), torch.ones(1, dtype=torch.float64), accumulate=True
    )
    pairs += 0.1  # add-0.1 smoothing
    log_next = (pairs / pairs.sum(1, keepdim=True)).log()  # log P(b | a)
    log_prev = (pairs / pairs.sum(0, keepdim=True)).log()  # log P(a | b)
    log_unigram = (torch.bincount(train.flatten(), minlength=vocab).double() + 1).log()
    log_unigram -= log_unigram.logsumexp(0)
    generator = torch.Generator().manual_seed(0)
    chosen = (torch.rand(held.shape, generator=generator) < 0.15) & (held >= len(SPECIAL_TOKENS))
    chosen[:, [0, -1]] = False
    fake = held.clone()
    fake[chosen] = torch.multinomial(probs, int(chosen.sum()), replacement=True, generator=generator)
    x, before, after = fake[:, 1:-1], fake[:, :-2], fake[:, 2:]
    pmi = log_next[before, x] + log_prev[x, after] - 2 * log_unigram[x]
    replaced = (fake != held)[:, 1:-1]
    return round(binary_auc(-pmi.float(), replaced, held[:, 1:-1] != PAD_ID).item(), 4)


class FixedReplacements:
    """The discriminator alone, against replacements from a fixed distribution over ordinary tokens."""

    def __init__(self, model: ElectraPretrainer, probs: torch.Tensor):
        self.model, self.probs = model, probs

    def __call__(self, ids, mask, types, positions=None) -> tuple[torch.Tensor, dict[str, float]]:
        masked = mask_tokens(ids, mask, self.model.mask_prob, self.model.cap)
        drawn = torch.multinomial(self.probs, masked.positions.numel(), replacement=True).view_as(masked.positions)
        fake = ids.scatter(1, masked.positions, torch.where(masked.valid, drawn, masked.targets))
        real = mask.bool()
        replaced = (fake != ids) & real
        logits = self.model.discriminator_logits(fake, mask, types, positions)
        loss = replaced_token_loss(logits, replaced, real)
        auc = binary_auc(logits.detach(), replaced, real)
        return loss, {"disc_loss": round(loss.item(), 4), "disc_auc": round(auc.item(), 4)}


def full_objective(model: ElectraPretrainer):
    def step(ids, mask, types, positions=None) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(ids, mask, types, positions)
        return out.loss, {k: round(v.item(), 4) for k, v in out.metrics.items()}

    return step


def pretrain(model: ElectraPretrainer, objective, ids, types, args) -> None:
    first_held = len(ids) - held_out_rows(ids)
    held = slice(first_held, None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, eps=1e-6)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + 1, warmup, args.steps))
    started = time.time()
    for step in range(1, args.steps + 1):
        rows = torch.randint(0, first_held, (args.batch,))
        chosen = ids[rows]
        batch = (chosen, (chosen != PAD_ID).long(), types[rows])
        if step <= args.window_steps:
            batch = short_windows(*batch, args.window)
        loss, _ = objective(*batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                _, metrics = objective(ids[held], (ids[held] != PAD_ID).long(), types[held])
            model.train()
            print(json.dumps({"step": step, "seconds": round(time.time() - started), **metrics}), flush=True)


def start_folder(model: ElectraPretrainer, variant: str, vocab_dir: str, folder: str, seed: int) -> str:
    """A Hugging Face discriminator folder for one fine-tuning start."""
    torch.manual_seed(seed)
    fresh = transformers.ElectraForPreTraining(model.discriminator.config)
    pretrained = model.discriminator.state_dict()
    keep = {
        "pretrained": lambda key: True,
        "fresh_embeddings": lambda key: key != "electra.embeddings.word_embeddings.weight",
        "fresh_layers": lambda key: key.startswith("electra.embeddings."),
        "random": lambda key: False,
    }[variant]
    fresh.load_state_dict({k: v for k, v in pretrained.items() if keep(k)}, strict=False)
    fresh.save_pretrained(folder)
    write_tokenizer(vocab_dir, folder, model.max_length)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=150_000, help="corpus lines to pre-train on")
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, help="attention heads (default: hidden / 64, at least 1)")
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    p.add_argument("--generator-size", type=float, default=1.0)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3, help="peak; ELECTRA's warm-up (10%% of steps) and decay")
    p.add_argument("--window", type=int, default=16, help="short-window width for --window-steps")
    p.add_argument("--window-steps", type=int, default=0, help="first steps on short windows of each row")
    p.add_argument("--replacements", choices=["generator", "unigram", "uniform"], default="generator")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--variants", default="pretrained,fresh_embeddings,fresh_layers,random")
    p.add_argument("--finetune-rows", type=int, default=4000)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--finetune-epochs", type=float, default=2)
    p.add_argument("--seeds", type=int, default=2, help="fine-tuning seeds per start")
    p.add_argument("--seed", type=int, default=0, help="pre-training seed (initialisation, batches, masking)")
    keep_argument(p)
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    work = work_folder(args.keep, "diagnose-transfer-")
    vocab_dir = str(work / "vocab")
    vocab, ids, types = nsmc_corpus_rows(args.lines, args.vocab, args.seq, vocab_dir)
    cfg = ModelConfig(
        vocab_size=len(vocab),
        embedding_size=args.hidden,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads or max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
        generator_size=args.generator_size,
        max_length=args.seq,
        hidden_dropout=args.dropout,
        attention_dropout=args.dropout,
    )
    model = ElectraPretrainer(cfg)
    if args.replacements == "generator":
        objective = full_objective(model)
    else:
        probs = torch.bincount(ids.flatten(), minlength=len(vocab)).float()
        if args.replacements == "uniform":
            probs = torch.ones(len(vocab))
        probs[: len(SPECIAL_TOKENS)] = 0  # never a special token
        probs /= probs.sum()
        objective = FixedReplacements(model, probs)
        if args.replacements == "unigram":
            print(json.dumps({"bigram_detector_auc": bigram_auc(ids, probs)}), flush=True)
    pretrain(model, objective, ids, types, args)

    nsmc = NsmcFinetuning(args.finetune_rows, args.finetune_lr, args.finetune_epochs, args.seeds, min(64, args.seq))
    for variant in filter(None, args.variants.split(",")):
        nsmc.report(variant, start_folder(model, variant, vocab_dir, str(work / variant), seed=1))


if __name__ == "__main__":
    main()
