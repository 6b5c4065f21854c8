"""Downstream metrics with the libraries KoELECTRA's fine-tuning scored with: scikit-learn
(accuracy, macro F1, Matthews correlation), scipy (Pearson, Spearman), seqeval (entity F1); and
KorQuAD 1.0's official exact match and character F1, which no package has."""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

from koelectra_dist.errors import DataError


def _check(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred) or not gold:
        raise DataError(f"metric needs equally many gold and predicted values (got {len(gold)} and {len(pred)})")


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    _check(gold, pred)
    return float(accuracy_score(gold, pred))


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes in gold or predictions (a class with no
    true positives scores 0)."""
    from sklearn.metrics import f1_score

    _check(gold, pred)
    return float(f1_score(gold, pred, average="macro", zero_division=0))


def matthews(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Matthews correlation (CoLA's metric): 0 for constant predictions."""
    from sklearn.metrics import matthews_corrcoef

    _check(gold, pred)
    return float(matthews_corrcoef(gold, pred))


def _correlation(fn: Callable, x: Sequence[float], y: Sequence[float]) -> float:
    _check(x, y)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan  # undefined for a constant side (scipy warns and returns NaN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x, y)[0])


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant."""
    from scipy.stats import pearsonr

    return _correlation(pearsonr, x, y)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN when either side is constant."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, x, y)


def _seqeval_tag(tag: str) -> str:
    """A BIO tag in seqeval's spelling: Naver NER's "PER-B" becomes "B-PER"; "B-PER" and "O" stay."""
    if tag == "O" or tag[:2] in ("B-", "I-"):
        return tag
    kind, _, position = tag.rpartition("-")
    return f"{position}-{kind}" if position in ("B", "I") and kind else f"B-{tag}"


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """seqeval's f1_score (micro F1 of exactly matching entities, conlleval's reading: an I- tag that
    does not continue an entity of its type starts one); 0 when neither side has an entity."""
    from seqeval.metrics import f1_score

    _check(gold, pred)
    for number, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise DataError(f"sentence {number}: {len(g)} gold tags but {len(p)} predicted")
    convert = [[_seqeval_tag(t) for t in tags] for tags in gold], [[_seqeval_tag(t) for t in tags] for tags in pred]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns when a side has no entity
        return float(f1_score(*convert, zero_division=0))


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
    "matthews": matthews,
    "spearman": spearman,
    "pearson": pearson,
    "entity_f1": entity_f1,
    "korquad_f1": korquad_f1,
}
