"""The corpus stage's config section: cleaning, vocabulary, packing, shards."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from koelectra_dist.configbase import non_negative, positive

CleaningPreset = Literal["koelectra_v3", "koelectra_v1", "kcelectra"]
CharacterSet = Literal["all", "hangul_ascii", "hangul_jamo_ascii"]


@dataclass(frozen=True)
class CleaningRules:
    """Every cleaning rule's resolved value: a preset's, or the config's where it sets one
    (fields documented on CleaningConfig)."""

    normalize_nfc: bool
    remove_control_chars: bool
    split_sentences: bool
    drop_news_boilerplate: bool
    remove_urls: bool
    remove_emails: bool
    remove_mentions: bool
    remove_hashtags: bool
    remove_bracketed: bool
    remove_masked: bool
    keep_emoji: bool
    keep_only: CharacterSet
    max_repeats: int
    repeat_normalize: int
    min_chars: int
    deduplicate: bool


PRESETS: dict[str, CleaningRules] = {
    # This project's rules before presets existed (KoELECTRA v3 kept hanja and symbols).
    "koelectra_v3": CleaningRules(
        normalize_nfc=True,
        remove_control_chars=True,
        split_sentences=False,
        drop_news_boilerplate=False,
        remove_urls=True,
        remove_emails=True,
        remove_mentions=True,
        remove_hashtags=True,
        remove_bracketed=False,
        remove_masked=False,
        keep_emoji=True,
        keep_only="all",
        max_repeats=2,
        repeat_normalize=0,
        min_chars=2,
        deduplicate=True,
    ),
    # KoELECTRA v1/v2's published preprocessing (docs/corpus.md, rule by rule).
    "koelectra_v1": CleaningRules(
        normalize_nfc=True,
        remove_control_chars=True,
        split_sentences=True,
        drop_news_boilerplate=True,
        remove_urls=True,
        remove_emails=True,
        remove_mentions=True,
        remove_hashtags=True,
        remove_bracketed=True,
        remove_masked=False,
        keep_emoji=False,
        keep_only="hangul_ascii",
        max_repeats=0,
        repeat_normalize=2,
        min_chars=10,
        deduplicate=True,
    ),
    # KcELECTRA's README clean(): news comments, jamo and emoji kept.
    "kcelectra": CleaningRules(
        normalize_nfc=True,
        remove_control_chars=True,
        split_sentences=False,
        drop_news_boilerplate=False,
        remove_urls=True,
        remove_emails=False,
        remove_mentions=False,
        remove_hashtags=False,
        remove_bracketed=False,
        remove_masked=True,
        keep_emoji=True,
        keep_only="hangul_jamo_ascii",
        max_repeats=0,
        repeat_normalize=2,
        min_chars=10,
        deduplicate=True,
    ),
}


@dataclass(frozen=True)
class CleaningConfig:
    """A preset and, per rule, an override (None: the preset's value). docs/corpus.md says what
    every rule does in every preset and where it comes from."""

    enabled: bool = True
    """Master switch; when false lines are only stripped of surrounding whitespace."""
    preset: CleaningPreset = "koelectra_v3"
    """The rules' defaults: 'koelectra_v3' (hanja and symbols kept), 'koelectra_v1' (KoELECTRA
    v1/v2: Hangul + ASCII only, sentences split, bracketed text and news boilerplate dropped) or
    'kcelectra' (KcELECTRA: Hangul, jamo, ASCII and emoji; portal-masked OOO removed)."""
    normalize_nfc: bool | None = None
    """Unicode NFC normalisation (never NFD: it splits Hangul into jamo)."""
    remove_control_chars: bool | None = None
    """Remove control and format characters (zero-width spaces, BOMs, ...)."""
    split_sentences: bool | None = None
    """Split lines into sentences at terminal punctuation (. ? ! followed by a space)."""
    drop_news_boilerplate: bool | None = None
    """Drop sentences with a copyright notice (무단전재, 재배포 금지, ⓒ...) or a news byline ((서울=뉴스1))."""
    remove_urls: bool | None = None
    """Remove http(s)/www URLs."""
    remove_emails: bool | None = None
    """Remove e-mail addresses."""
    remove_mentions: bool | None = None
    """Remove @user mentions."""
    remove_hashtags: bool | None = None
    """Remove #hashtags."""
    remove_bracketed: bool | None = None
    """Remove text inside [] {} 【】 <>, brackets included."""
    remove_masked: bool | None = None
    """Remove portal-masked words: runs of three or more capital O (OOO)."""
    keep_emoji: bool | None = None
    """Keep emoji (also outside keep_only's characters); false removes them."""
    keep_only: CharacterSet | None = None
    """Replace every character outside a set with a space: 'hangul_ascii' (KoELECTRA v1:
    [ .,?!/@$%~％·∼()\\x00-\\x7F가-힣], so hanja go) or 'hangul_jamo_ascii' (KcELECTRA: the same plus
    ㄱ-ㅣ); 'all' keeps every character (the koelectra_v3 preset)."""
    max_repeats: int | None = None
    """Collapse a character repeated more than this many times (ㅋㅋㅋㅋ -> ㅋㅋ; digits and spaces
    kept); 0 disables."""
    repeat_normalize: int | None = None
    """soynlp's repeat_normalize(num_repeats=N): a letter, digit or Hangul repeated 4 or more times
    becomes N copies (digits too: 10000 -> 100); 0 disables."""
    min_chars: int | None = None
    """Drop lines (sentences, with split_sentences) shorter than this after cleaning."""
    deduplicate: bool | None = None
    """Drop exact duplicate lines (across the whole corpus)."""

    def rules(self) -> CleaningRules:
        """The preset's rules with this config's overrides."""
        preset = PRESETS[self.preset]
        overrides = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(CleaningRules)
            if getattr(self, f.name) is not None
        }
        return dataclasses.replace(preset, **overrides)


@dataclass(frozen=True)
class VocabConfig:
    vocab_uri: str | None = None
    """Existing vocabulary folder or vocab.txt (local, s3:// or a Hub model hf://ORG/NAME) to use instead of
    training one."""
    pretokenizer: Literal["mecab", "whitespace"] = "mecab"
    """How words are split before WordPiece training: 'mecab' morphemes (KoELECTRA v3) or none."""
    sample_lines: int | None = None
    """Train the vocabulary on at most this many cleaned lines (None: all; must be > 0 when set)."""
    limit_alphabet: int = 6000
    """WordPiece trainer's initial alphabet limit (KoELECTRA: 6000; must be > 0)."""
    min_frequency: int = 2
    """Minimum pair frequency for a merge."""
    num_unused: int = 200
    """[unusedN] tokens reserved inside vocab_size (KoELECTRA v1: 200); with merge_with, the least
    number of them (they fill the vocabulary up to model.vocab_size)."""
    merge_with: str | None = None
    """A published vocabulary (vocab.txt, a folder holding one, or hf://ORG/NAME) whose tokens not in
    the trained one are appended to it, in order (KcELECTRA: 30,000 trained + KoELECTRA's); needs
    train_size."""
    train_size: int | None = None
    """With merge_with: tokens of the trained vocabulary, special tokens included (KcELECTRA: 30000)."""


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
    tokenizer_uri: str | None = None
    """A teacher's Hugging Face tokenizer folder (local, s3:// or hf://ORG/NAME; WordPiece or
    SentencePiece, any special-token ids; a KoBERT-style SentencePiece .model + vocab.txt is
    converted) to tokenize with instead of training a vocabulary: the corpus's vocab/ folder gets it
    as a standard fast tokenizer, and the manifest records it. model.vocab_size must equal its size;
    the vocab section is then unused (vocab_uri and merge_with must be unset)."""
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
    """About this many kept lines make one block, the unit the packing tasks work in (whole
    documents only; a document longer than 4x this, 1x with flush_documents false, is cut, closing
    an example there). Small blocks keep every CPU busy to the end."""
    chunk_bytes: int = 64 << 20
    """The largest byte range of a plain input file one task reads (cut at line starts; smaller
    when the corpus is small: about 4 per CPU, at least 1 MiB; a gzip file is read whole by one
    task). The output does not depend on it."""
    dedup_partitions: int | None = None
    """Hash ranges for exact deduplication, one task each (None: one per 128 MiB of input). A
    range's task holds ~24 bytes per line of its range. The output does not depend on it."""
    seed: int = 12345
    """Seed for packing and sampling."""
    validation_fraction: float = 0.002
    """Share of the packed rows set aside as held-out validation shards (`validation-*.parquet`),
    never trained on, spread over the whole corpus: the held-out set that recipes are compared on.
    0: none. Every 1/validation_fraction-th row in packing order, the same whatever the task count.
    Pre-training reports its held-out losses on them (train.heldout_rows)."""
    validation_max_rows: int = 20_000
    """At most this many held-out rows."""


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
    found += _merge_problems(c.vocab, m.vocab_size)
    found += _tokenizer_problems(c)
    rules = c.cleaning.rules()
    non_negative(
        found,
        [
            ("corpus.cleaning.max_repeats", rules.max_repeats),
            ("corpus.cleaning.repeat_normalize", rules.repeat_normalize),
            ("corpus.cleaning.min_chars", rules.min_chars),
        ],
    )
    found += _encoding_problems(c.encoding)
    if not c.tokenizer_uri and 0 < m.vocab_size <= c.vocab.num_unused + 5:
        found.append(
            f"model.vocab_size ({m.vocab_size}) leaves no room beyond 5 special tokens and "
            f"corpus.vocab.num_unused ({c.vocab.num_unused}) [unused] tokens"
        )
    if not 0 <= c.validation_fraction < 1:
        found.append(f"corpus.validation_fraction: a fraction in [0, 1), got {c.validation_fraction}")
    non_negative(found, [("corpus.validation_max_rows", c.validation_max_rows)])
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


def _tokenizer_problems(c: CorpusConfig) -> list[str]:
    """corpus.tokenizer_uri against the vocab section, and its form (no network: a local folder
    must exist; hf:// must name ORG/NAME)."""
    uri = c.tokenizer_uri
    if uri is None:
        return []
    found = [
        f"corpus.{key}: set with corpus.tokenizer_uri, which tokenizes with that tokenizer as it is; drop one"
        for key, value in (("vocab.vocab_uri", c.vocab.vocab_uri), ("vocab.merge_with", c.vocab.merge_with))
        if value
    ]
    if uri.startswith("hf://"):
        parts = uri[len("hf://") :].strip("/").split("/")
        if len(parts) < 2 or not all(parts[:2]):
            found.append(
                f"corpus.tokenizer_uri={uri}: a Hugging Face Hub URI is hf://ORG/NAME (e.g. hf://monologg/kobert)"
            )
    elif "://" not in uri and not os.path.isdir(uri):
        found.append(
            f"corpus.tokenizer_uri={uri}: no such folder; name a Hugging Face tokenizer folder (local, s3:// or "
            "hf://ORG/NAME) holding tokenizer.json or vocab.txt, or a KoBERT-style SentencePiece .model + vocab.txt"
        )
    return found


def _merge_problems(v: VocabConfig, vocab_size: int) -> list[str]:
    if v.merge_with is None:
        return [] if v.train_size is None else ["corpus.vocab.train_size: set only with corpus.vocab.merge_with"]
    if v.vocab_uri:
        return ["corpus.vocab.merge_with: set with corpus.vocab.vocab_uri, which uses a vocabulary as it is; drop one"]
    if v.train_size is None:
        return [
            "corpus.vocab.merge_with needs corpus.vocab.train_size: the size of the trained part (KcELECTRA: 30000)"
        ]
    if not 5 < v.train_size <= vocab_size - v.num_unused:
        return [
            f"corpus.vocab.train_size: {v.train_size} must be above the 5 special tokens and at most model.vocab_size "
            f"({vocab_size}) minus corpus.vocab.num_unused ({v.num_unused})"
        ]
    return []
