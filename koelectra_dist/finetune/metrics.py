"""Downstream metrics, exact and dependency-free: accuracy, macro F1, Pearson, Spearman, entity F1 and
KorQuAD's exact match and character F1."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from koelectra_dist.errors import DataError


def _check(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred) or not gold:
        raise DataError(f"metric needs equally many gold and predicted values (got {len(gold)} and {len(pred)})")


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    _check(gold, pred)
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in gold or predictions (as
    scikit-learn's f1_score(average="macro")); a class with no true positives scores 0."""
    _check(gold, pred)
    scores = []
    for label in sorted(set(gold) | set(pred)):
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant (undefined, as in scipy)."""
    _check(x, y)
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties getting the average of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            result[i] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson of the tie-averaged ranks."""
    _check(x, y)
    return pearson(ranks(x), ranks(y))


def _tag_parts(tag: str) -> tuple[str, str]:
    """(position, type) of a BIO tag in either spelling: "B-PER" or Naver NER's "PER-B"; ("O", "")."""
    if tag == "O":
        return "O", ""
    head, _, tail = tag.partition("-")
    if head in ("B", "I"):
        return head, tail
    kind, _, position = tag.rpartition("-")
    return (position, kind) if position in ("B", "I") else ("B", tag)


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) spans of a BIO sequence, read like conlleval and seqeval's default mode:
    an I- tag that does not continue an entity of its type starts one."""
    spans: set[tuple[str, int, int]] = set()
    start, current = 0, ""
    for i, tag in enumerate([*tags, "O"]):
        position, kind = _tag_parts(tag)
        if current and (position != "I" or kind != current):
            spans.add((current, start, i - 1))
            current = ""
        if position != "O" and not current:
            start, current = i, kind
    return spans


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Micro-averaged F1 of exactly matching entities (type and span) over all sentences, as
    seqeval's f1_score; 0 when neither side has an entity."""
    _check(gold, pred)
    tp = n_gold = n_pred = 0
    for number, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise DataError(f"sentence {number}: {len(g)} gold tags but {len(p)} predicted")
        g_spans, p_spans = entities(g), entities(p)
        tp, n_gold, n_pred = tp + len(g_spans & p_spans), n_gold + len(g_spans), n_pred + len(p_spans)
    return 2 * tp / (n_gold + n_pred) if n_gold + n_pred else 0.0


_KORQUAD_SYMBOLS = re.compile("['\"《》<>〈〉()‘’]")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """KorQuAD 1.0's official normalisation: quotes and brackets to spaces, lower case, ASCII
    punctuation removed, whitespace collapsed."""
    text = "".join(ch for ch in _KORQUAD_SYMBOLS.sub(" ", text).lower() if ch not in _PUNCTUATION)
    return " ".join(text.split())


def _char_f1(prediction: str, truth: str) -> float:
    """F1 over the characters of the normalised answers (spaces left out), as KorQuAD scores it."""
    pred, gold = list(normalize_answer(prediction).replace(" ", "")), list(normalize_answer(truth).replace(" ", ""))
    same = sum((Counter(pred) & Counter(gold)).values())
    return 0.0 if same == 0 else 2 * same / (len(pred) + len(gold))


def korquad_f1(gold: Sequence[Sequence[str]], pred: Sequence[str]) -> float:
    """Mean over questions of the best character F1 against any of the question's answers."""
    _check(gold, pred)
    return sum(max(_char_f1(p, t) for t in answers) for answers, p in zip(gold, pred, strict=True)) / len(gold)


def exact_match(gold: Sequence[Sequence[str]], pred: Sequence[str]) -> float:
    """Share of questions whose normalised prediction equals one of their normalised answers."""
    _check(gold, pred)
    hits = sum(
        normalize_answer(p) in {normalize_answer(t) for t in answers} for answers, p in zip(gold, pred, strict=True)
    )
    return hits / len(gold)


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "spearman": spearman,
    "pearson": pearson,
    "entity_f1": entity_f1,
    "korquad_f1": korquad_f1,
}
