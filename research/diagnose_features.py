"""Has pre-training collapsed a model's features? Token spread and frozen linear probes, no fine-tuning.

For each Hugging Face ELECTRA/BERT folder, encodes --rows rows of NSMC's ratings_train and 2,000 of
ratings_dev, and prints one JSON line with, per hidden layer (0 = the embeddings module's output):

  spread  how far token vectors lie from their mean, over their mean norm (real tokens of the
          training rows). A discriminator that predicts "original" for every token is pushed
          towards one output everywhere, and its layers towards one vector.
  probe   NSMC dev accuracy (x100) of a logistic regression on the frozen, mean-pooled layer
          (standardised features, L2 penalty 0.01): what the features say about sentiment
          before fine-tuning moves them.

    python research/diagnose_features.py outputs/bench_quality/run/hf/discriminator outputs/bench_quality/random_init
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers

from koelectra_dist.finetune.config import FinetuneConfig, resolve_tasks
from koelectra_dist.finetune.data import read_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BATCH = 256


def token_spread(hidden: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean distance of the real tokens' vectors from their mean, over their mean norm."""
    tokens = hidden[mask.bool()]
    return ((tokens - tokens.mean(0)).norm(dim=-1).mean() / tokens.norm(dim=-1).mean()).item()


@torch.no_grad()
def layer_features(folder: str, texts: list[str], max_length: int) -> tuple[torch.Tensor, list[float]]:
    """[layers + 1, N, hidden] mean-pooled hidden states of every layer, and each layer's token
    spread over the texts."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    pooled, spreads = [], []
    for start in range(0, len(texts), BATCH):
        batch = tokenizer(
            texts[start : start + BATCH], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        states = model(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in states]))
        spreads.append([token_spread(h, batch["attention_mask"]) for h in states])
    return torch.cat(pooled, dim=1), [sum(s) / len(s) for s in zip(*spreads, strict=True)]


def probe_accuracy(
    train: torch.Tensor, train_labels: torch.Tensor, dev: torch.Tensor, dev_labels: torch.Tensor, penalty: float = 0.01
) -> float:
    """Dev accuracy of an L2-penalised logistic regression (binary labels) on standardised features."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, dev = (train - mean) / std, (dev - mean) / std
    weight = torch.zeros(train.size(1), requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)
    targets = train_labels.float()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = train @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets) + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (((dev @ weight + bias) > 0).long() == dev_labels).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="Hugging Face model folders (with their tokenizer)")
    p.add_argument("--rows", type=int, default=4000, help="ratings_train rows the probe is fitted on")
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    spec = resolve_tasks(FinetuneConfig(tasks=["nsmc"]))[0]
    train = read_split(str(SHARED), spec, "train", limit=args.rows)
    dev = read_split(str(SHARED), spec, "dev", limit=2000)
    train_labels, dev_labels = torch.tensor(train.labels), torch.tensor(dev.labels)
    for folder in args.folders:
        train_features, spreads = layer_features(folder, train.text_a, args.max_length)
        dev_features, _ = layer_features(folder, dev.text_a, args.max_length)
        probes = [
            100 * probe_accuracy(x, train_labels, d, dev_labels)
            for x, d in zip(train_features, dev_features, strict=True)
        ]
        line = {"model": folder, "spread": [round(s, 3) for s in spreads], "probe": [round(a, 1) for a in probes]}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
