"""Line cleaning rules (KoELECTRA-style), each counted so the stage report says what it removed.

Rules run in this order on every line: NFC, control characters, URLs, e-mails, @mentions,
#hashtags, repeated characters, whitespace collapse, minimum length. Exact duplicates are dropped
as raw lines across the whole corpus (dedup.py) and again after cleaning inside a block.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from koelectra_dist.corpus.config import CleaningConfig

# Cc/Cf characters that appear in scraped text (NUL..US except tab, DEL, C1, zero-width and bidi
# marks, soft hyphen, BOM); tabs become spaces so that words are not glued together.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MENTION = re.compile(r"(?<![\w.])@\w+")
_HASHTAG = re.compile(r"(?<![\w&])#\w+")

# Every rule's name in the report, in the order they run.
RULES = (
    "nfc_normalized",
    "control_chars_removed",
    "urls_removed",
    "emails_removed",
    "mentions_removed",
    "hashtags_removed",
    "repeats_collapsed",
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


def _any_run(length: int) -> Callable[[str], object]:
    """A fast test for any character repeated `length` times in a row."""
    return re.compile(r"(.)" + r"\1" * (length - 1)).search


def _repeat_pattern(max_repeats: int) -> re.Pattern[str]:
    # Any non-space, non-digit character (digits carry meaning: 10000원 must stay).
    return re.compile(r"([^\s\d])\1{" + str(max_repeats) + ",}")


@dataclass
class Cleaner:
    """Applies the configured rules to lines; `counts` holds, per rule, the lines it changed or dropped."""

    cfg: CleaningConfig

    def __post_init__(self) -> None:
        self.counts: Counter[str] = Counter()
        cfg = self.cfg
        # (rule, pattern, replacement, cheap test that must pass before the regex runs): most lines
        # have no '@', '#', URL or run of 3 equal characters, and the substring tests are ~20x faster.
        self._subs = [
            (name, pattern, "", guard)
            for name, pattern, on, guard in [
                ("urls_removed", _URL, cfg.remove_urls, _maybe_url),
                ("emails_removed", _EMAIL, cfg.remove_emails, _has_at),
                ("mentions_removed", _MENTION, cfg.remove_mentions, _has_at),
                ("hashtags_removed", _HASHTAG, cfg.remove_hashtags, _has_hash),
            ]
            if on
        ]
        if cfg.max_repeats > 0:
            repeats = _repeat_pattern(cfg.max_repeats)
            guard = _any_run(cfg.max_repeats + 1)
            self._subs.append(("repeats_collapsed", repeats, r"\1" * cfg.max_repeats, guard))

    def clean(self, line: str) -> str | None:
        """The cleaned line, or None when a rule drops it."""
        cfg = self.cfg
        if not cfg.enabled:
            line = line.strip()
            return line or None
        if cfg.normalize_nfc and not unicodedata.is_normalized("NFC", line):
            line = unicodedata.normalize("NFC", line)
            self.counts["nfc_normalized"] += 1
        if cfg.remove_control_chars and ("\t" in line or _CONTROL.search(line)):
            line, n = _CONTROL.subn("", line.replace("\t", " "))
            if n:
                self.counts["control_chars_removed"] += 1
        for name, pattern, repl, guard in self._subs:
            if guard(line):
                line, n = pattern.subn(repl, line)
                if n:
                    self.counts[name] += 1
        line = " ".join(line.split())
        if not line:
            self.counts["emptied"] += 1
            return None
        if len(line) < cfg.min_chars:
            self.counts["too_short"] += 1
            return None
        return line

    def clean_documents(self, documents: list[list[str]]) -> list[list[str]]:
        """Clean every line, dropping lines repeated inside this batch of documents and documents
        left empty."""
        seen: set[str] = set()
        out = []
        for doc in documents:
            kept = []
            for raw in doc:
                line = self.clean(raw)
                if line is None:
                    continue
                if self.cfg.enabled and self.cfg.deduplicate:
                    if line in seen:
                        self.counts["duplicates_after_cleaning"] += 1
                        continue
                    seen.add(line)
                kept.append(line)
            if kept:
                out.append(kept)
        return out
