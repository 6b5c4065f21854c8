"""Span extraction (KorQuAD 1.0): SQuAD-format JSON in, windows of the context out, answers read back.

A question (cut to its first MAX_QUERY_TOKENS tokens, at most half the length, as KoELECTRA's
max_query_length 64) and its context become one or more windows of at most max_length tokens: the
context is split with an overlap of DOC_STRIDE tokens (Hugging Face's run_qa with doc_stride 128),
or of half the room a window leaves it when that is less. A training window's target is the first
answer's first and last token, or [CLS] when the answer is not inside it. A prediction is the
best-scoring span (start + end logit, at most MAX_ANSWER_TOKENS, inside the context) over all
windows of the question.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from koelectra_dist.errors import DataError

DOC_STRIDE = 128
MAX_QUERY_TOKENS = 64
MAX_ANSWER_TOKENS = 30
N_BEST = 20


@dataclass
class Answer:
    start: int  # character offset in the context
    text: str


def parse_squad(text: str, uri: str, limit: int | None = None) -> tuple[list[str], list[str], list[list[Answer]]]:
    """Questions, their contexts and answers from SQuAD v1.1 JSON (KorQuAD 1.0's format); DataError
    naming the file and the entry on bad input."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{uri} line {e.lineno}: not SQuAD JSON ({e.msg})") from None
    questions: list[str] = []
    contexts: list[str] = []
    answers: list[list[Answer]] = []
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise DataError(f'{uri}: no "data" list; expected SQuAD v1.1 JSON (KorQuAD 1.0\'s format)')
    try:
        _collect(articles, uri, limit, questions, contexts, answers)
    except (AttributeError, TypeError) as e:  # an entry of the wrong JSON type
        raise DataError(f"{uri}: not SQuAD v1.1 JSON ({e})") from None
    if not questions:
        raise DataError(f"{uri}: no questions")
    return questions, contexts, answers


def _collect(articles: list, uri: str, limit: int | None, questions: list, contexts: list, answers: list) -> None:
    """Append each question, its context and its checked answers to the lists, up to `limit`."""
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{uri} data[{a}].paragraphs[{p}]"
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise DataError(f'{where}: no "context" text')
            for q, qa in enumerate(paragraph.get("qas", [])):
                entry = f"{where}.qas[{q}] (id {qa.get('id')!r})"
                if not isinstance(qa.get("question"), str) or not qa.get("answers"):
                    raise DataError(f'{entry}: needs a "question" and at least one of "answers"')
                found = []
                for answer in qa["answers"]:
                    start, said = answer.get("answer_start"), answer.get("text")
                    if (
                        not isinstance(start, int)
                        or not isinstance(said, str)
                        or context[start : start + len(said)] != said
                    ):
                        raise DataError(f"{entry}: answer {said!r} is not at answer_start {start!r} of the context")
                    found.append(Answer(start, said))
                questions.append(qa["question"])
                contexts.append(context)
                answers.append(found)
                if limit is not None and len(questions) >= limit:
                    return


@dataclass
class Windows:
    """Tokenized windows: ids, token types, [start, end] targets, and for reading answers back the
    question each window belongs to and each token's character span in the context (None outside it)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[list[int]]
    question: list[int]
    offsets: list[list[tuple[int, int] | None]]


def encode_windows(
    tokenizer: Any, questions: list[str], contexts: list[str], answers: list, max_length: int
) -> Windows:
    limit = min(MAX_QUERY_TOKENS, max_length // 2)
    cut = tokenizer(questions, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
    questions = [q if len(ids) < limit else tokenizer.decode(ids) for q, ids in zip(questions, cut, strict=True)]
    enc = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=min(DOC_STRIDE, (max_length - limit - 3) // 2),  # below the context room: [CLS] q [SEP] c [SEP]
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    labels, offsets = [], []
    for w, question in enumerate(enc["overflow_to_sample_mapping"]):
        in_context = [
            o if sid == 1 else None for o, sid in zip(enc["offset_mapping"][w], enc.sequence_ids(w), strict=True)
        ]
        offsets.append(in_context)
        first = answers[question][0]
        begin, end = first.start, first.start + len(first.text)
        tokens = [i for i, o in enumerate(in_context) if o is not None and o[0] < end and o[1] > begin]
        inside = bool(tokens) and in_context[tokens[0]][0] <= begin and in_context[tokens[-1]][1] >= end
        labels.append([tokens[0], tokens[-1]] if inside else [0, 0])
    return Windows(enc["input_ids"], enc["token_type_ids"], labels, list(enc["overflow_to_sample_mapping"]), offsets)


def best_answers(windows: Windows, contexts: list[str], start_logits: list, end_logits: list) -> list[str]:
    """Per question, the text of the best span over its windows ("" when no valid span)."""
    best: dict[int, tuple[float, str]] = {}
    for w, question in enumerate(windows.question):
        offsets, starts, ends = windows.offsets[w], start_logits[w], end_logits[w]
        top_starts = sorted(range(len(offsets)), key=lambda i: -starts[i])[:N_BEST]
        top_ends = sorted(range(len(offsets)), key=lambda i: -ends[i])[:N_BEST]
        for s in top_starts:
            for e in top_ends:
                if offsets[s] is None or offsets[e] is None or not 0 <= e - s < MAX_ANSWER_TOKENS:
                    continue
                score = starts[s] + ends[e]
                if question not in best or score > best[question][0]:
                    best[question] = (score, contexts[question][offsets[s][0] : offsets[e][1]])
    return [best.get(q, (0.0, ""))[1] for q in range(len(contexts))]
