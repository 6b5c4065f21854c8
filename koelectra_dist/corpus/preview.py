"""`--preview-cleaning N`: what the configured cleaning does to the first N lines of the corpus,
with the rules that fired on each, before a long run. Reads the inputs directly (no Ray)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import TextIO

from koelectra_dist.corpus.clean import RULES, Cleaner
from koelectra_dist.corpus.config import CorpusConfig
from koelectra_dist.corpus.read import Chunk, ReadOptions, iter_chunk_lines, resolve_inputs


def _lines(corpus: CorpusConfig) -> Iterator[str]:
    options = ReadOptions(corpus.encoding, corpus.text_field)
    for index, f in enumerate(resolve_inputs(corpus.inputs)):
        for raw in iter_chunk_lines(Chunk(index, f.uri, 0, None, True), options, Counter()):
            if raw:
                yield raw.decode("utf-8", errors="replace")


def preview(corpus: CorpusConfig, n: int, out: TextIO) -> Counter[str]:
    """Print the first `n` non-blank input lines, each with what cleaning makes of it and the rules
    that fired; return the rule counts over them. Duplicates are not dropped here (that needs the
    whole corpus)."""
    cleaner = Cleaner(corpus.cleaning)
    rules = cleaner.rules
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(rules).items())
    print(f"cleaning preset {corpus.cleaning.preset}: {settings}", file=out)
    shown = 0
    for shown, line in enumerate(_lines(corpus), 1):
        before = Counter(cleaner.counts)
        cleaned = cleaner.clean(line)
        fired = [rule for rule in RULES if cleaner.counts[rule] > before[rule]]
        print(f"\n{shown:>5}  {line}", file=out)
        if cleaned == [line]:
            print("       = unchanged", file=out)
        elif not cleaned:
            print("       x dropped", file=out)
        for sentence in cleaned if cleaned != [line] else []:
            print(f"       > {sentence}", file=out)
        if fired:
            print(f"       rules: {', '.join(fired)}", file=out)
        if shown == n:
            break
    counts = Counter({rule: cleaner.counts[rule] for rule in RULES if cleaner.counts[rule]})
    print(f"\n{shown} lines; rules fired on: {dict(counts) or 'none'}", file=out)
    return counts
