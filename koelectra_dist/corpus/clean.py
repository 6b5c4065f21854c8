"""Line cleaning rules, each counted so the stage report says what it changed or removed.

`corpus.cleaning.preset` chooses the rules (KoELECTRA v3, KoELECTRA v1/v2, KcELECTRA; see
docs/corpus.md for where each comes from); every rule can be switched on its own. They run in
this order on every line: NFC, control characters, sentence split; then on every sentence: news
boilerplate, URLs, e-mails, @mentions, #hashtags, bracketed text, masked OOO, emoji, the character
set, repeats (this project's rule and soynlp's), whitespace collapse, minimum length. Exact
duplicates are dropped as raw lines across the whole corpus (dedup.py) and again after cleaning
inside a block.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import emoji

from koelectra_dist.corpus.config import CleaningConfig, CleaningRules

# Cc/Cf characters that appear in scraped text (NUL..US except tab, DEL, C1, zero-width and bidi
# marks, soft hyphen, BOM); tabs become spaces so that words are not glued together.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MENTION = re.compile(r"(?<![\w.])@\w+")
_HASHTAG = re.compile(r"(?<![\w&])#\w+")
_BRACKETED = re.compile(r"\[[^\[\]]*\]|\{[^{}]*\}|【[^【】]*】|<[^<>]*>")
# Naver masks profanity in comments as OOO; a Latin word (OOOPS, ZOOOM) is not a mask.
_MASKED = re.compile(r"(?<![A-Za-z])O{3,}(?![A-Za-z])")
# KoELECTRA v1's and KcELECTRA's published character classes (the latter adds the jamo ㄱ-ㅣ).
_OUTSIDE = {
    "hangul_ascii": re.compile(r"[^ .,?!/@$%~％·∼()\x00-\x7F가-힣]+"),
    "hangul_jamo_ascii": re.compile(r"[^ .,?!/@$%~％·∼()\x00-\x7Fㄱ-ㅣ가-힣]+"),
}
# soynlp.normalizer.repeat_normalize's pattern: a word character repeated 4 or more times.
_SOYNLP_REPEATS = re.compile(r"(\w)\1{3,}")
# Copyright notices and news bylines such as "(서울=뉴스1)" or "(세종=연합뉴스)".
# A copyright sign counts when a year or a name follows it (ⓒⓞⓞⓛ is decoration, not a notice).
_BOILERPLATE = re.compile(
    r"무단\s*전재|재배포\s*금지|저작권자|[ⓒ©]\s*[(\[]?\s*[0-9가-힣A-Za-z]|copyright|\([가-힣]{1,10}\s*=\s*[^()=]{1,20}\)",
    re.IGNORECASE,
)
# A sentence ends after . ? ! (a run of them, then closing quotes or brackets) before whitespace,
# unless the word before is a single Latin letter or a number (U.S. , 1. , 3.5.).
_SENTENCE_END = re.compile(r"(?<![\s.?!])[.?!]+[\"'”’)\]]*(?=\s)")
_NOT_AN_END = re.compile(r"(?:^|[\s.])(?:[A-Za-z]|\d+)$")
# The first character of every emoji the `emoji` package knows: a cheap test before its matcher.
_EMOJI_STARTS = frozenset(e[0] for e in emoji.EMOJI_DATA)

SPACED = ("bracketed_removed", "masked_removed")
# Every rule's name in the report, in the order they run.
RULES = (
    "nfc_normalized",
    "control_chars_removed",
    "sentences_split",
    "boilerplate_dropped",
    "urls_removed",
    "emails_removed",
    "mentions_removed",
    "hashtags_removed",
    "bracketed_removed",
    "masked_removed",
    "emoji_removed",
    "chars_filtered",
    "repeats_collapsed",
    "repeats_normalized",
    "emptied",
    "too_short",
    "duplicates_after_cleaning",
)


def _maybe_url(line: str) -> bool:
    return "://" in line or "ww" in line.lower()


def _has_at(line: str) -> bool:
    return "@" in line


def _has_hash(line: str) -> bool:
    return "#" in line


def _has_bracket(line: str) -> bool:
    return any(c in line for c in "[{【<")


def _has_ooo(line: str) -> bool:
    return "OOO" in line


def _has_emoji(line: str) -> bool:
    return not _EMOJI_STARTS.isdisjoint(line)


def _any_run(length: int) -> Callable[[str], object]:
    """A fast test for any character repeated `length` times in a row."""
    return re.compile(r"(.)" + r"\1" * (length - 1)).search


def _repeat_pattern(max_repeats: int) -> re.Pattern[str]:
    # Any non-space, non-digit character (digits carry meaning: 10000원 must stay).
    return re.compile(r"([^\s\d])\1{" + str(max_repeats) + ",}")


def split_sentences(line: str) -> list[str]:
    """`line` cut after each sentence end (see _SENTENCE_END); the pieces keep their punctuation."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(line):
        if _NOT_AN_END.search(line, start, m.start()):
            continue
        pieces.append(line[start : m.end()].strip())
        start = m.end()
    pieces.append(line[start:].strip())
    return [p for p in pieces if p]


def _drop_emoji(text: str) -> str:
    return emoji.replace_emoji(text, " ")


def _filter_chars(text: str, outside: re.Pattern[str], keep_emoji: bool) -> str:
    """Characters matched by `outside` become a space; emoji stay when `keep_emoji`."""
    if not keep_emoji or not _has_emoji(text):
        return outside.sub(" ", text)
    out, pos = [], 0
    for match in emoji.emoji_list(text):
        out += [outside.sub(" ", text[pos : match["match_start"]]), match["emoji"]]
        pos = match["match_end"]
    out.append(outside.sub(" ", text[pos:]))
    return "".join(out)


@dataclass
class Cleaner:
    """Applies the configured rules to lines; `counts` holds, per rule, the lines (sentences) it
    changed or dropped."""

    cfg: CleaningConfig

    def __post_init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rules: CleaningRules = self.cfg.rules()
        r = self.rules
        # (rule, function changing the text, cheap test that must pass before it runs): most lines
        # have no '@', '#', URL or run of 3 equal characters, and the substring tests are ~20x faster.
        subs: list[tuple[str, Callable[[str], str], Callable[[str], object]]] = []
        for name, pattern, on, guard in [
            ("urls_removed", _URL, r.remove_urls, _maybe_url),
            ("emails_removed", _EMAIL, r.remove_emails, _has_at),
            ("mentions_removed", _MENTION, r.remove_mentions, _has_at),
            ("hashtags_removed", _HASHTAG, r.remove_hashtags, _has_hash),
            ("bracketed_removed", _BRACKETED, r.remove_bracketed, _has_bracket),
            ("masked_removed", _MASKED, r.remove_masked, _has_ooo),
        ]:
            if on:
                # bracketed text and masks become a space (KcELECTRA: "OOO ... 공백으로 제거")
                subs.append((name, _replacer(pattern, " " if name in SPACED else ""), guard))
        if not r.keep_emoji:
            subs.append(("emoji_removed", _drop_emoji, _has_emoji))
        if r.keep_only != "all":
            outside = _OUTSIDE[r.keep_only]
            subs.append(("chars_filtered", lambda t: _filter_chars(t, outside, r.keep_emoji), outside.search))
        if r.max_repeats > 0:
            repeats = _repeat_pattern(r.max_repeats)
            subs.append(("repeats_collapsed", _replacer(repeats, r"\1" * r.max_repeats), _any_run(r.max_repeats + 1)))
        if r.repeat_normalize > 0:
            subs.append(("repeats_normalized", _replacer(_SOYNLP_REPEATS, r"\1" * r.repeat_normalize), _any_run(4)))
        self._subs = subs
        self._boilerplate, self._min_chars = r.drop_news_boilerplate, r.min_chars

    def clean(self, line: str) -> list[str]:
        """The cleaned line as a list: its sentences with split_sentences, else the line or nothing."""
        if not self.cfg.enabled:
            line = line.strip()
            return [line] if line else []
        r = self.rules
        if r.normalize_nfc and not unicodedata.is_normalized("NFC", line):
            line = unicodedata.normalize("NFC", line)
            self.counts["nfc_normalized"] += 1
        if r.remove_control_chars and ("\t" in line or _CONTROL.search(line)):
            line, n = _CONTROL.subn("", line.replace("\t", " "))
            if n:
                self.counts["control_chars_removed"] += 1
        if not r.split_sentences:
            text = self._clean_sentence(line)
            return [] if text is None else [text]
        sentences = split_sentences(line)
        if len(sentences) > 1:
            self.counts["sentences_split"] += 1
        return [s for s in map(self._clean_sentence, sentences) if s is not None]

    def _clean_sentence(self, text: str) -> str | None:
        counts = self.counts
        if self._boilerplate and _BOILERPLATE.search(text):
            counts["boilerplate_dropped"] += 1
            return None
        for name, fn, guard in self._subs:
            if guard(text):
                changed = fn(text)
                if changed != text:
                    counts[name] += 1
                    text = changed
        text = " ".join(text.split())
        if not text:
            counts["emptied"] += 1
            return None
        if len(text) < self._min_chars:
            counts["too_short"] += 1
            return None
        return text

    def clean_documents(self, documents: list[list[str]]) -> list[list[str]]:
        """Clean every line, dropping lines repeated inside this batch of documents and documents
        left empty."""
        seen: set[str] = set()
        dedup = self.cfg.enabled and self.rules.deduplicate
        out = []
        for doc in documents:
            kept = []
            for raw in doc:
                for line in self.clean(raw):
                    if dedup:
                        if line in seen:
                            self.counts["duplicates_after_cleaning"] += 1
                            continue
                        seen.add(line)
                    kept.append(line)
            if kept:
                out.append(kept)
        return out


def _replacer(pattern: re.Pattern[str], repl: str) -> Callable[[str], str]:
    return functools.partial(pattern.sub, repl)
