"""What differs between kinds of task when fine-tuning, one class per kind: the model's head, how a
split becomes model inputs, the targets of a training batch, how outputs become predictions and how
predictions are scored. The training loop (trainer.py) is the same for every kind.

- SequenceHead: one label per text or text pair (classification), or one score (regression, KorSTS,
  one output and a squared-error loss).
- TaggingHead: one tag per word (Naver NER), trained and read on each word's first sub-word, as
  KoELECTRA did.
- SpanHead: an answer span in a context (KorQuAD), over windows of the context (spans.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from koelectra_dist.finetune.data import TaskData
from koelectra_dist.finetune.metrics import METRICS, exact_match
from koelectra_dist.finetune.spans import Windows, best_answers, encode_windows
from koelectra_dist.finetune.task_specs import FinetuneTaskConfig, is_regression, is_span, is_tagging

IGNORED = -100  # the label of positions the loss skips: special tokens and non-initial sub-words


@dataclass
class Encoded:
    """Tokenized examples (unpadded) and their targets; for tagging, a target per token and each
    token's word (None: a special token)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[int] | list[float] | list[list[int]]
    word_ids: list[list[int | None]] | None = None


@dataclass(frozen=True)
class Head:
    """One task's kind; subclasses say what differs."""

    spec: FinetuneTaskConfig

    def model(self, model_dir: str) -> torch.nn.Module:
        raise NotImplementedError

    def encode(self, tokenizer: Any, data: TaskData, max_length: int) -> Encoded | Windows:
        raise NotImplementedError

    def targets(self, enc: Any, indexes: list[int], width: int) -> dict[str, torch.Tensor]:
        """The training targets of the examples at `indexes`, padded to `width` tokens."""
        raise NotImplementedError

    def read(self, output: Any, enc: Any, rows: range) -> list:
        """Predictions of a batch of examples `rows` from the model's output."""
        raise NotImplementedError

    def score(self, evaluation: TaskData, enc: Any, predictions: list) -> tuple[float, dict[str, Any]]:
        """The metric (0-1) and any further figures (x100)."""
        return METRICS[self.spec.metric](evaluation.labels, predictions), {}

    def sizes(self, enc: Any) -> dict[str, int]:
        """What the training split became, where it is not one input per example."""
        return {}


class SequenceHead(Head):
    def model(self, model_dir: str) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        regression = is_regression(self.spec)
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=1 if regression else len(self.spec.labels),
            problem_type="regression" if regression else "single_label_classification",
        )

    def encode(self, tokenizer: Any, data: TaskData, max_length: int) -> Encoded:
        enc = tokenizer(
            data.text_a,
            data.text_b,
            truncation=True,
            max_length=max_length,
            return_token_type_ids=True,
            return_attention_mask=False,
        )
        return Encoded(enc["input_ids"], enc["token_type_ids"], data.labels)

    def targets(self, enc: Encoded, indexes: list[int], width: int) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([enc.labels[i] for i in indexes])}

    def read(self, output: Any, enc: Encoded, rows: range) -> list:
        if is_regression(self.spec):
            return output.logits[:, 0].float().tolist()
        return output.logits.argmax(-1).tolist()


class TaggingHead(Head):
    def model(self, model_dir: str) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(self.spec.labels))

    def encode(self, tokenizer: Any, data: TaskData, max_length: int) -> Encoded:
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

    def targets(self, enc: Encoded, indexes: list[int], width: int) -> dict[str, torch.Tensor]:
        labels = torch.full((len(indexes), width), IGNORED, dtype=torch.long)
        for row, i in enumerate(indexes):
            labels[row, : len(enc.labels[i])] = torch.tensor(enc.labels[i])
        return {"labels": labels}

    def read(self, output: Any, enc: Encoded, rows: range) -> list:
        tokens = output.logits.argmax(-1).tolist()
        return [word_tags(enc.word_ids[i], tags) for i, tags in zip(rows, tokens, strict=True)]

    def score(self, evaluation: TaskData, enc: Encoded, predictions: list) -> tuple[float, dict[str, Any]]:
        gold, predicted = tag_names(self.spec, evaluation.labels, predictions)
        return METRICS[self.spec.metric](gold, predicted), {}


class SpanHead(Head):
    def model(self, model_dir: str) -> torch.nn.Module:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(model_dir)

    def encode(self, tokenizer: Any, data: TaskData, max_length: int) -> Windows:
        return encode_windows(tokenizer, data.text_a, data.text_b, data.labels, max_length)

    def targets(self, enc: Windows, indexes: list[int], width: int) -> dict[str, torch.Tensor]:
        spans = torch.tensor([enc.labels[i] for i in indexes])
        return {"start_positions": spans[:, 0], "end_positions": spans[:, 1]}

    def read(self, output: Any, enc: Windows, rows: range) -> list:
        return list(zip(output.start_logits.float().tolist(), output.end_logits.float().tolist(), strict=True))

    def score(self, evaluation: TaskData, enc: Windows, predictions: list) -> tuple[float, dict[str, Any]]:
        starts, ends = zip(*predictions, strict=True)
        gold = [[a.text for a in answers] for answers in evaluation.labels]
        predicted = best_answers(enc, evaluation.text_b, starts, ends)
        return METRICS[self.spec.metric](gold, predicted), {"exact_match": 100 * exact_match(gold, predicted)}

    def sizes(self, enc: Windows) -> dict[str, int]:
        return {"train_windows": len(enc.labels)}


def head_for(spec: FinetuneTaskConfig) -> Head:
    if is_span(spec):
        return SpanHead(spec)
    if is_tagging(spec):
        return TaggingHead(spec)
    return SequenceHead(spec)


def first_subwords(word_ids: list[int | None]) -> list[int | None]:
    """Each token's word where the token is that word's first sub-word, else None."""
    firsts, before = [], None
    for w in word_ids:
        firsts.append(w if w is not None and w != before else None)
        before = w
    return firsts


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
