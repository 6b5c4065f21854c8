"""The corpus stage's config section: cleaning, vocabulary, packing, shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from koelectra_dist.configbase import non_negative, positive


@dataclass(frozen=True)
class CleaningConfig:
    enabled: bool = True
    """Master switch; when false lines are only stripped of surrounding whitespace."""
    normalize_nfc: bool = True
    """Unicode NFC normalisation (never NFD: it splits Hangul into jamo)."""
    remove_control_chars: bool = True
    """Remove control and format characters (zero-width spaces, BOMs, ...)."""
    max_repeats: int = 2
    """Collapse a character repeated more than this many times (ㅋㅋㅋㅋ -> ㅋㅋ); 0 disables."""
    remove_urls: bool = True
    """Remove http(s)/www URLs."""
    remove_emails: bool = True
    """Remove e-mail addresses."""
    remove_mentions: bool = True
    """Remove @user mentions."""
    remove_hashtags: bool = True
    """Remove #hashtags."""
    min_chars: int = 2
    """Drop lines shorter than this after cleaning."""
    deduplicate: bool = True
    """Drop exact duplicate lines (across the whole corpus)."""


@dataclass(frozen=True)
class VocabConfig:
    vocab_uri: str | None = None
    """Existing vocabulary folder or vocab.txt to use instead of training one."""
    pretokenizer: Literal["mecab", "whitespace"] = "mecab"
    """How words are split before WordPiece training: 'mecab' morphemes (KoELECTRA v3) or none."""
    sample_lines: int | None = None
    """Train the vocabulary on at most this many cleaned lines (None: all; must be > 0 when set)."""
    limit_alphabet: int = 6000
    """WordPiece trainer's initial alphabet limit (KoELECTRA: 6000; must be > 0)."""
    min_frequency: int = 2
    """Minimum pair frequency for a merge."""
    num_unused: int = 200
    """[unusedN] tokens reserved inside vocab_size (KoELECTRA v1: 200)."""


@dataclass(frozen=True)
class CorpusConfig:
    inputs: list[str] = field(default_factory=list)
    """Text files or folders of them (local or s3://, .gz allowed); one sentence per line, a blank
    line between documents; or JSON lines (see text_field)."""
    encoding: str = "utf-8"
    """Encoding of the text files (an ASCII-compatible one, e.g. "cp949" for older Korean text);
    lines are converted to UTF-8 as they are read."""
    text_field: str | None = None
    """For JSON-lines inputs (a file whose first line is a JSON object): the field of each object
    that holds a document's text. Without it such a file is refused."""
    output_uri: str | None = None
    """Where vocab/ and shards/ go; None: <run.output_uri>/corpus."""
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    """Text cleaning rules."""
    vocab: VocabConfig = field(default_factory=VocabConfig)
    """Vocabulary training."""
    examples_per_shard: int = 100_000
    """Packed examples per Parquet shard file."""
    single_segment_prob: float = 0.1
    """Probability that an example has one segment only (ELECTRA: 0.1)."""
    short_seq_prob: float = 0.05
    """Probability that the next example targets a random shorter length (ELECTRA: 0.05)."""
    flush_documents: bool = True
    """A document end closes the current example (ELECTRA); false packs across documents."""
    several_examples_per_row: bool = False
    """Fill each row of max_length tokens with several whole examples, kept apart: each has its own
    [CLS]/[SEP], position ids from 0, and attends only to itself in pre-training. For corpora whose
    documents must not be merged (with flush_documents true) yet whose rows should not be padding."""
    lines_per_block: int = 5_000
    """About this many lines go to one Ray Data task (whole documents only; a document longer than
    4x this is cut, closing an example there). Small blocks keep every CPU busy to the end."""
    chunk_bytes: int = 64 << 20
    """The largest byte range of a plain input file one task reads (cut at line starts; smaller
    when the corpus is small: about 4 per CPU, at least 1 MiB; a gzip file is read whole by one
    task). The output does not depend on it."""
    dedup_partitions: int | None = None
    """Hash ranges for exact deduplication, one task each (None: one per 128 MiB of input). A
    range's task holds ~24 bytes per line of its range. The output does not depend on it."""
    seed: int = 12345
    """Seed for packing and sampling."""


def problems(cfg: Any) -> list[str]:
    """What is wrong with the corpus section (`cfg` is the root config)."""
    c, m = cfg.corpus, cfg.model
    found: list[str] = []
    positive(
        found,
        [
            ("corpus.examples_per_shard", c.examples_per_shard),
            ("corpus.lines_per_block", c.lines_per_block),
            ("corpus.chunk_bytes", c.chunk_bytes),
        ],
    )
    if c.dedup_partitions is not None:
        positive(found, [("corpus.dedup_partitions", c.dedup_partitions)])
    non_negative(found, [("corpus.vocab.num_unused", c.vocab.num_unused)])
    v = c.vocab
    if v.sample_lines is not None and v.sample_lines <= 0:
        found.append(
            f"corpus.vocab.sample_lines: must be > 0, got {v.sample_lines}; set it to null to train the vocabulary "
            "on all lines"
        )
    if v.limit_alphabet <= 0:
        found.append(
            f"corpus.vocab.limit_alphabet: must be > 0, got {v.limit_alphabet} (the WordPiece trainer's alphabet, "
            "from which every token is built; KoELECTRA uses 6000)"
        )
    found += _encoding_problems(c.encoding)
    if m.vocab_size > 0 and m.vocab_size <= c.vocab.num_unused + 5:
        found.append(
            f"model.vocab_size ({m.vocab_size}) leaves no room beyond 5 special tokens and "
            f"corpus.vocab.num_unused ({c.vocab.num_unused}) [unused] tokens"
        )
    for name, p in [("corpus.single_segment_prob", c.single_segment_prob), ("corpus.short_seq_prob", c.short_seq_prob)]:
        if not 0 <= p <= 1:
            found.append(f"{name}: a probability in [0, 1], got {p}")
    if "corpus" in cfg.run.stages and not c.inputs:
        found.append(
            "corpus.inputs: empty; list text files or folders (local or s3://), or drop 'corpus' from run.stages"
        )
    return found


def _encoding_problems(encoding: str) -> list[str]:
    try:
        ascii_compatible = "a\n".encode(encoding) == b"a\n"
    except LookupError:
        return [f"corpus.encoding: unknown encoding {encoding!r}; use a Python codec name such as 'utf-8' or 'cp949'"]
    if not ascii_compatible:
        return [
            f"corpus.encoding: {encoding!r} is not ASCII-compatible (lines are split at b'\\n'); convert the files to UTF-8"
        ]
    return []
