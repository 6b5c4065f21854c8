"""Fine-tuning one task with one seed: KoELECTRA's recipe on any Hugging Face ELECTRA/BERT folder.

AdamW (eps 1e-8, weight decay 0), learning rate decaying linearly to 0 with no warm-up, gradient
clipping at 1.0, max length 128 (512 for KorQuAD; the spec's max_length). The task's kind (heads.py)
gives the head, the inputs, the targets and the scoring. A pre-training folder's head
(ElectraForPreTraining) is dropped and a fresh task head is initialised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import torch

from koelectra_dist import hf_tokenizer
from koelectra_dist.export.hf_layout import TOKENIZER_FILES
from koelectra_dist.finetune.data import TaskData
from koelectra_dist.finetune.heads import Encoded, Head, head_for
from koelectra_dist.finetune.spans import Windows
from koelectra_dist.finetune.task_specs import FinetuneTaskConfig
from koelectra_dist.training import format_eta, linear_decay, seed_everything

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 128


def lr_at(step: int, total_steps: int, peak: float) -> float:
    """Linear decay from `peak` at step 0 to 0 at `total_steps`, no warm-up (KoELECTRA)."""
    return peak * linear_decay(step, total_steps)


def total_steps(n_examples: int, batch_size: int, epochs: float) -> int:
    return max(1, round(epochs * math.ceil(n_examples / batch_size)))


def load_model(model_dir: str, head: Head) -> tuple[Any, torch.nn.Module]:
    """The folder's tokenizer (a KoBERT-family one converted, `hf_tokenizer`) and the task's head
    on its encoder."""
    return hf_tokenizer.load_local(model_dir, model_dir), head.model(model_dir)


def inputs(enc: Encoded | Windows, indexes: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The model inputs of the examples at `indexes`, padded to the longest."""
    width = max(len(enc.input_ids[i]) for i in indexes)
    ids = torch.full((len(indexes), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(indexes), width), dtype=torch.long)
    mask = torch.zeros((len(indexes), width), dtype=torch.long)
    for row, i in enumerate(indexes):
        n = len(enc.input_ids[i])
        ids[row, :n] = torch.tensor(enc.input_ids[i])
        types[row, :n] = torch.tensor(enc.token_type_ids[i])
        mask[row, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU that has it (weights and optimizer stay fp32); fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model: torch.nn.Module, head: Head, enc: Encoded | Windows, pad_id: int, device: torch.device) -> list:
    """The head's predictions, in example order (for windows, each window's start and end logits)."""
    model.eval()
    out: list = []
    for start in range(0, len(enc.labels), EVAL_BATCH_SIZE):
        rows = range(start, min(start + EVAL_BATCH_SIZE, len(enc.labels)))
        with autocast(device):
            output = model(**on(inputs(enc, list(rows), pad_id), device))
        out += head.read(output, enc, rows)
    model.train()
    return out


def finetune(
    model_dir: str,
    spec: FinetuneTaskConfig,
    train: TaskData,
    evaluation: TaskData,
    *,
    seed: int,
    device: torch.device | None = None,
    test: TaskData | None = None,
    save_dir: str | None = None,
) -> dict[str, Any]:
    """Fine-tune on `train` and score `evaluation` at the end; with `test`, score `evaluation` (dev)
    after every epoch, keep the best epoch's weights and score `test` once with them. Saves the
    scored model (and its tokenizer) to `save_dir`. Returns the scores and what was run (JSON-able)."""
    started = time.time()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed_everything(seed)
    head = head_for(spec)
    tokenizer, model = load_model(model_dir, head)
    model.to(device)
    pad_id = tokenizer.pad_token_id or 0
    # A model with fewer positions than the recipe's length (a tiny one) reads what it can.
    max_length = min(spec.max_length, model.config.max_position_embeddings)
    if max_length < spec.max_length:
        log.info("%s: max_length %d cut to the model's %d positions", spec.name, spec.max_length, max_length)
    train_enc, eval_enc = (head.encode(tokenizer, data, max_length) for data in (train, evaluation))
    n_train = len(train_enc.labels)  # examples, or windows of the context for spans
    per_epoch = math.ceil(n_train / spec.batch_size)
    steps = total_steps(n_train, spec.batch_size, spec.epochs)
    epochs = math.ceil(steps / per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, eps=1e-8, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    losses: list[float] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (dev score, epoch, weights)
    model.train()
    for step in range(steps):
        if not batches:  # a fresh permutation each epoch; the last partial batch is kept
            perm = torch.randperm(n_train, generator=order).tolist()
            batches = [perm[i : i + spec.batch_size] for i in range(0, len(perm), spec.batch_size)][::-1]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, spec.learning_rate)
        indexes = batches.pop()
        batch = inputs(train_enc, indexes, pad_id)
        batch |= head.targets(train_enc, indexes, batch["input_ids"].shape[1])
        with autocast(device):
            loss = model(**on(batch, device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % per_epoch and step + 1 != steps:
            continue
        epoch = math.ceil((step + 1) / per_epoch)
        recent = losses[-((step % per_epoch) + 1) :]
        line = f"{spec.name} (seed {seed}): epoch {epoch}/{epochs} ({100 * (step + 1) / steps:.0f}%, ETA "
        line += f"{format_eta((steps - step - 1) * (time.time() - started) / (step + 1))}) "
        line += f"train loss {sum(recent) / len(recent):.4f}"
        if test is not None:
            dev_score, _ = head.score(evaluation, eval_enc, predict(model, head, eval_enc, pad_id, device))
            line += f" dev {spec.metric} {100 * dev_score:.2f}"
            if best is None or dev_score > best[0]:
                best = (dev_score, epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        print(line, flush=True)
    scored, scored_enc, selection = evaluation, eval_enc, None
    if test is not None:
        model.load_state_dict(best[2])
        scored, scored_enc = test, head.encode(tokenizer, test, max_length)
        selection = {"on": evaluation.uri, "best_epoch": best[1], "dev_score": 100 * best[0]}
    score, extra = head.score(scored, scored_enc, predict(model, head, scored_enc, pad_id, device))
    if save_dir is not None:
        model.save_pretrained(save_dir)
        # the source folder's tokenizer files as they are (transformers 5 would write no vocab.txt),
        # a KoBERT-family one converted
        hf_tokenizer.copy_loadable(model_dir, save_dir, TOKENIZER_FILES)
    tail = losses[-max(1, len(losses) // 10) :]
    result = {
        "task": spec.name,
        "seed": seed,
        "metric": spec.metric,
        "score": 100 * score,
        "train_examples": len(train),
        "eval_examples": len(scored),
        "eval_file": scored.uri,
        "selection": selection,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "max_length": max_length,
        "steps": steps,
        "final_train_loss": sum(tail) / len(tail),
        "device": str(device),
        "precision": "bf16" if isinstance(autocast(device), torch.autocast) else "fp32",
        "seconds": round(time.time() - started, 1),
        **extra,
        **head.sizes(train_enc),
    }
    log.info("fine-tuned %s (seed %d): %s %.2f in %d steps", spec.name, seed, spec.metric, 100 * score, steps)
    return result
