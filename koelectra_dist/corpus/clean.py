"""Line cleaning rules (KoELECTRA-style), each counted so the stage report says what it removed.

Rules run in this order on every line: NFC, control characters, URLs, e-mails, @mentions,
#hashtags, repeated characters, whitespace collapse, minimum length. Exact duplicates are dropped
by `Deduplicator` (raw lines, whole corpus, on the driver) and again after cleaning inside a block.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from koelectra_dist.config import CleaningConfig

# Cc/Cf characters that appear in scraped text (NUL..US except tab, DEL, C1, zero-width and bidi
# marks, soft hyphen, BOM); tabs become spaces so that words are not glued together.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MENTION = re.compile(r"(?<![\w.])@\w+")
_HASHTAG = re.compile(r"(?<![\w&])#\w+")
_SPACES = re.compile(r"\s+")

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


def _repeat_pattern(max_repeats: int) -> re.Pattern[str]:
    # Any non-space, non-digit character (digits carry meaning: 10000원 must stay).
    return re.compile(r"([^\s\d])\1{" + str(max_repeats) + ",}")


@dataclass
class Cleaner:
    """Applies the configured rules to lines; `counts` holds, per rule, the lines it changed or dropped."""

    cfg: CleaningConfig

    def __post_init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._repeats = _repeat_pattern(self.cfg.max_repeats) if self.cfg.max_repeats > 0 else None
        self._subs = [
            (name, pattern, "")
            for name, pattern, on in [
                ("urls_removed", _URL, self.cfg.remove_urls),
                ("emails_removed", _EMAIL, self.cfg.remove_emails),
                ("mentions_removed", _MENTION, self.cfg.remove_mentions),
                ("hashtags_removed", _HASHTAG, self.cfg.remove_hashtags),
            ]
            if on
        ]
        if self._repeats is not None:
            self._subs.append(("repeats_collapsed", self._repeats, r"\1" * self.cfg.max_repeats))

    def clean(self, line: str) -> str | None:
        """The cleaned line, or None when a rule drops it."""
        cfg = self.cfg
        if not cfg.enabled:
            line = line.strip()
            return line or None
        if cfg.normalize_nfc and not unicodedata.is_normalized("NFC", line):
            line = unicodedata.normalize("NFC", line)
            self.counts["nfc_normalized"] += 1
        if cfg.remove_control_chars:
            line, n = _CONTROL.subn("", line.replace("\t", " "))
            if n:
                self.counts["control_chars_removed"] += 1
        for name, pattern, repl in self._subs:
            line, n = pattern.subn(repl, line)
            if n:
                self.counts[name] += 1
        line = _SPACES.sub(" ", line).strip()
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


class Deduplicator:
    """Exact duplicate detection of raw lines across the whole corpus. It keeps one Python hash
    per distinct line (about 70 bytes each), so for billions of lines pre-deduplicate instead."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.duplicates = 0

    def is_duplicate(self, line: bytes) -> bool:
        key = hash(line)
        if key in self._seen:
            self.duplicates += 1
            return True
        self._seen.add(key)
        return False
