"""Fine-tuning one task with one seed: KoELECTRA's recipe on any Hugging Face ELECTRA/BERT folder.

AdamW (eps 1e-8, weight decay 0), learning rate decaying linearly to 0 with no warm-up, gradient
clipping at 1.0, max length 128 (512 for KorQuAD; the spec's max_length). Classification uses the sequence-classification head with one
output per label; regression (KorSTS) one output and a squared-error loss; tagging (Naver NER) the
token-classification head, trained and read on each word's first sub-word, as KoELECTRA did; span
extraction (KorQuAD) the question-answering head over windows of the context (spans.py). A
pre-training folder's head (ElectraForPreTraining) is dropped and a fresh classifier is initialised.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from koelectra_dist.config import FinetuneTaskConfig
from koelectra_dist.finetune.data import TaskData
from koelectra_dist.finetune.metrics import METRICS, exact_match
from koelectra_dist.finetune.spans import Windows, best_answers, encode_windows
from koelectra_dist.finetune.tasks import is_regression, is_span, is_tagging

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 128
IGNORED = -100  # the label of positions the loss skips: special tokens and non-initial sub-words


@dataclass
class Encoded:
    """Tokenized examples (unpadded) and their targets; for tagging, a target per token and each
    token's word (None: a special token)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[int] | list[float] | list[list[int]]
    word_ids: list[list[int | None]] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def lr_at(step: int, total_steps: int, peak: float) -> float:
    """Linear decay from `peak` at step 0 to 0 at `total_steps`, no warm-up (KoELECTRA)."""
    return peak * max(0.0, 1.0 - step / total_steps)


def total_steps(n_examples: int, batch_size: int, epochs: float) -> int:
    return max(1, round(epochs * math.ceil(n_examples / batch_size)))


def load_model(model_dir: str, spec: FinetuneTaskConfig) -> tuple[Any, torch.nn.Module]:
    """The folder's tokenizer and the task's head on its encoder: sequence classification, token
    classification (tagging) or question answering (spans)."""
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if is_span(spec):
        return tokenizer, AutoModelForQuestionAnswering.from_pretrained(model_dir)
    if is_tagging(spec):
        return tokenizer, AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(spec.labels))
    regression = is_regression(spec)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=1 if regression else len(spec.labels),
        problem_type="regression" if regression else "single_label_classification",
    )
    return tokenizer, model


def first_subwords(word_ids: list[int | None]) -> list[int | None]:
    """Each token's word where the token is that word's first sub-word, else None."""
    firsts, before = [], None
    for w in word_ids:
        firsts.append(w if w is not None and w != before else None)
        before = w
    return firsts


def encode_tagging(tokenizer: Any, data: TaskData, max_length: int) -> Encoded:
    """Words to sub-words; each word's tag goes on its first sub-word, the rest are IGNORED."""
    enc = tokenizer(
        [text.split() for text in data.text_a],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    word_ids = [enc.word_ids(i) for i in range(len(data))]
    labels = [
        [IGNORED if w is None else tags[w] for w in first_subwords(words)]
        for tags, words in zip(data.labels, word_ids, strict=True)
    ]
    return Encoded(enc["input_ids"], enc["token_type_ids"], labels, word_ids)


def encode(tokenizer: Any, data: TaskData, spec: FinetuneTaskConfig, max_length: int) -> Encoded | Windows:
    """Tokenize a split for the task's kind: windows of the context (spans), sub-words with a tag on
    each word's first one (tagging), or one text or text pair per example."""
    if is_span(spec):
        return encode_windows(tokenizer, data.text_a, data.text_b, data.labels, max_length)
    if is_tagging(spec):
        return encode_tagging(tokenizer, data, max_length)
    enc = tokenizer(
        data.text_a,
        data.text_b,
        truncation=True,
        max_length=max_length,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    return Encoded(enc["input_ids"], enc["token_type_ids"], data.labels)


def collate(enc: Encoded | Windows, indexes: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A padded batch (to its longest example) on `device`."""
    width = max(len(enc.input_ids[i]) for i in indexes)
    ids = torch.full((len(indexes), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(indexes), width), dtype=torch.long)
    mask = torch.zeros((len(indexes), width), dtype=torch.long)
    for row, i in enumerate(indexes):
        n = len(enc.input_ids[i])
        ids[row, :n] = torch.tensor(enc.input_ids[i])
        types[row, :n] = torch.tensor(enc.token_type_ids[i])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if isinstance(enc, Windows):
        spans = torch.tensor([enc.labels[i] for i in indexes])
        batch |= {"start_positions": spans[:, 0], "end_positions": spans[:, 1]}
    elif enc.word_ids is None:
        batch["labels"] = torch.tensor([enc.labels[i] for i in indexes])
    else:
        batch["labels"] = torch.full((len(indexes), width), IGNORED, dtype=torch.long)
        for row, i in enumerate(indexes):
            batch["labels"][row, : len(enc.labels[i])] = torch.tensor(enc.labels[i])
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: torch.nn.Module, enc: Encoded | Windows, pad_id: int, device: torch.device, regression: bool
) -> list:
    """Predicted label ids (classification), scores (regression), tag ids per word (tagging), in
    example order; for windows, each window's start and end logits."""
    model.eval()
    out: list = []
    for start in range(0, len(enc.labels), EVAL_BATCH_SIZE):
        batch = collate(enc, list(range(start, min(start + EVAL_BATCH_SIZE, len(enc.labels)))), pad_id, device)
        for target in ("labels", "start_positions", "end_positions"):
            batch.pop(target, None)
        output = model(**batch)
        if isinstance(enc, Windows):
            out += zip(output.start_logits.float().tolist(), output.end_logits.float().tolist(), strict=True)
            continue
        logits = output.logits
        if enc.word_ids is not None:
            tokens = logits.argmax(-1).tolist()
            out += [word_tags(enc.word_ids[start + row], tags) for row, tags in enumerate(tokens)]
        else:
            out += logits[:, 0].float().tolist() if regression else logits.argmax(-1).tolist()
    return out


def word_tags(word_ids: list[int | None], token_tags: list[int]) -> list[int | None]:
    """The predicted tag of each word, read on its first sub-word; None for a word with no sub-word."""
    seen = [w for w in word_ids if w is not None]
    tags: list[int | None] = [None] * (max(seen) + 1 if seen else 0)
    for w, tag in zip(first_subwords(word_ids), token_tags, strict=False):  # token_tags run on into padding
        if w is not None:
            tags[w] = tag
    return tags


def tag_names(
    spec: FinetuneTaskConfig, gold: list[list[int]], predicted: list[list[int | None]]
) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tag strings per sentence; a word the model did not see (cut off by
    max_length, or no sub-word) is predicted "O"."""
    names = spec.labels
    gold_tags = [[names[t] for t in tags] for tags in gold]
    predicted_tags = [
        [names[t] if t is not None else "O" for t in tags] + ["O"] * (len(g) - len(tags))
        for g, tags in zip(gold, predicted, strict=True)
    ]
    return gold_tags, predicted_tags


def finetune(
    model_dir: str,
    spec: FinetuneTaskConfig,
    train: TaskData,
    evaluation: TaskData,
    *,
    seed: int,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Fine-tune on `train`, evaluate on `evaluation`; returns the scores and what was run (JSON-able)."""
    started = time.time()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed_everything(seed)
    tokenizer, model = load_model(model_dir, spec)
    model.to(device)
    pad_id = tokenizer.pad_token_id or 0
    regression = is_regression(spec)
    # A model with fewer positions than the recipe's length (a tiny one) reads what it can.
    max_length = min(spec.max_length, model.config.max_position_embeddings)
    if max_length < spec.max_length:
        log.info("%s: max_length %d cut to the model's %d positions", spec.name, spec.max_length, max_length)
    train_enc, eval_enc = (encode(tokenizer, data, spec, max_length) for data in (train, evaluation))
    n_train = len(train_enc.labels)  # examples, or windows of the context for spans
    steps = total_steps(n_train, spec.batch_size, spec.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, eps=1e-8, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    losses: list[float] = []
    model.train()
    for step in range(steps):
        if not batches:  # a fresh permutation each epoch; the last partial batch is kept
            perm = torch.randperm(n_train, generator=order).tolist()
            batches = [perm[i : i + spec.batch_size] for i in range(0, len(perm), spec.batch_size)][::-1]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, spec.learning_rate)
        loss = model(**collate(train_enc, batches.pop(), pad_id, device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    gold, predictions = evaluation.labels, predict(model, eval_enc, pad_id, device, regression)
    extra = {}
    if is_tagging(spec):
        gold, predictions = tag_names(spec, gold, predictions)
    elif is_span(spec):
        starts, ends = zip(*predictions, strict=True)
        gold, predictions = (
            [[a.text for a in answers] for answers in gold],
            best_answers(eval_enc, evaluation.text_b, starts, ends),
        )
        extra = {"exact_match": 100 * exact_match(gold, predictions), "train_windows": n_train}
    score = METRICS[spec.metric](gold, predictions)
    tail = losses[-max(1, len(losses) // 10) :]
    result = {
        "task": spec.name,
        "seed": seed,
        "metric": spec.metric,
        "score": 100 * score,
        "train_examples": len(train),
        "eval_examples": len(evaluation),
        "eval_file": evaluation.uri,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "max_length": max_length,
        "steps": steps,
        "final_train_loss": sum(tail) / len(tail),
        "device": str(device),
        "seconds": round(time.time() - started, 1),
        **extra,
    }
    log.info("fine-tuned %s (seed %d): %s %.2f in %d steps", spec.name, seed, spec.metric, 100 * score, steps)
    return result
