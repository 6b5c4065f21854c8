"""WordPiece vocabulary: Mecab-aware training with `tokenizers`, loading an existing vocab.txt, and
writing a folder that `ElectraTokenizer(Fast).from_pretrained` loads without Mecab.

KoELECTRA's settings: cased, strip_accents=False (accent stripping is NFD, which splits Hangul into
jamo), clean_text, handle_chinese_chars, `##` continuation prefix, limit_alphabet, the special
tokens [PAD] [UNK] [CLS] [SEP] [MASK] as ids 0-4, and [unusedN] tokens appended at the end.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from koelectra_dist import storage
from koelectra_dist.corpus.config import VocabConfig
from koelectra_dist.errors import DataError
from koelectra_dist.tokens import CLS, CLS_ID, MASK, PAD, SEP, SEP_ID, SPECIAL_TOKENS, UNK

MAX_INPUT_CHARS_PER_WORD = 100


def bert_normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)


@functools.lru_cache(maxsize=1)
def _mecab_tagger():  # one per worker process: loading the dictionary takes a while
    import mecab

    return mecab.MeCab()._tagger


def _morpheme_cuts(text: str) -> set[int]:
    """Character offsets where Mecab puts a morpheme boundary."""
    from mecab.utils import create_lattice

    lattice = create_lattice(text)
    _mecab_tagger().parse(lattice)
    cuts: set[int] = set()
    pos = 0
    # to_string() is several times faster than walking the lattice's nodes from Python.
    for row in lattice.to_string().split("\n"):
        if row == "EOS":
            break
        surface = row.split("\t", 1)[0]
        start = text.find(surface, pos)
        if start < 0 or not surface:
            continue
        pos = start + len(surface)
        cuts.update((start, pos))
    return cuts


class Pretokenizer:
    """Turns a cleaned line into the words the WordPiece trainer sees. 'mecab': every runtime word
    (BERT's whitespace+punctuation split) is cut at morpheme boundaries and the non-initial pieces
    are marked `##`, so pieces follow morphemes while the runtime tokenizer stays plain WordPiece.
    'whitespace': the line unchanged (the trainer applies BERT's own pre-tokenizer)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._normalizer = bert_normalizer()
        self._words = pre_tokenizers.BertPreTokenizer()

    def __call__(self, line: str) -> str:
        if self.kind != "mecab":
            return line
        text = self._normalizer.normalize_str(line)
        cuts = sorted(_morpheme_cuts(text))
        out = []
        for _, (start, end) in self._words.pre_tokenize_str(text):
            bounds = [start, *cuts[bisect.bisect_right(cuts, start) : bisect.bisect_left(cuts, end)], end]
            pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
            out.append(pieces[0])
            out.extend("##" + p for p in pieces[1:])
        return " ".join(out)


def _pre_tokenizer(cfg: VocabConfig) -> pre_tokenizers.PreTokenizer:
    # Mecab lines are already normalised and split; `##` marks must survive as part of the words.
    return pre_tokenizers.WhitespaceSplit() if cfg.pretokenizer == "mecab" else pre_tokenizers.BertPreTokenizer()


def _alphabet(lines: list[str], cfg: VocabConfig) -> tuple[list[str], list[str]]:
    """The characters the WordPiece trainer starts from (the `limit_alphabet` most frequent, ties
    by code point) and those of them that occur inside a word (their `##` forms become tokens too).

    The trainer of tokenizers 0.23 picks these itself, but nondeterministically (huggingface/tokenizers
    #1794): it cuts the alphabet at `limit_alphabet` with an unstable sort over a hash map, and gives
    the `##` forms ids in hash-map order, and those ids break ties between equally frequent merges.
    So they are computed here, from the words the trainer will see, and handed to it fixed."""
    split = _pre_tokenizer(cfg)
    normalize = None if cfg.pretokenizer == "mecab" else bert_normalizer().normalize_str
    counts: Counter[str] = Counter()
    inner: set[str] = set()
    kinds: dict[str, str] = {}  # each character as the trainer's pre-tokenizer treats it
    for lo in range(0, len(lines), 10_000):
        text = "\n".join(lines[lo : lo + 10_000])
        text = normalize(text) if normalize else text  # the normaliser works character by character
        counts.update(text)
        for c in counts.keys() - kinds.keys():
            words = [w for w, _ in split.pre_tokenize_str(f"a{c}a")]
            kinds[c] = " " if words == ["a", "a"] else f" {c} " if len(words) == 3 else c
        # Word boundaries as spaces, then each word's characters after its first.
        words = text.translate({ord(c): k for c, k in kinds.items() if k != c}).split()
        inner.update(*(w[1:] for w in words if len(w) > 1))
    alphabet = {c: n for c, n in counts.items() if kinds[c] != " "}
    kept = sorted(alphabet, key=lambda c: (-alphabet[c], c))[: cfg.limit_alphabet]
    return sorted(kept), sorted(inner.intersection(kept))


def train_vocab(
    lines: Iterable[str], cfg: VocabConfig, vocab_size: int, size_name: str = "model.vocab_size"
) -> list[str]:
    """Train WordPiece on pre-tokenized lines; return exactly `vocab_size` tokens (specials first,
    then the alphabet, its `##` forms, the learned pieces, and [unusedN] last).
    The same lines give the same vocabulary. DataError when the corpus cannot fill it (naming
    `size_name`, the setting that asked for `vocab_size`)."""
    lines = list(lines)
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tokenizer.pre_tokenizer = _pre_tokenizer(cfg)
    if cfg.pretokenizer != "mecab":
        tokenizer.normalizer = bert_normalizer()
    alphabet, inner = _alphabet(lines, cfg)
    learned = vocab_size - cfg.num_unused
    trainer = trainers.WordPieceTrainer(
        vocab_size=learned,
        min_frequency=cfg.min_frequency,
        # The alphabet given as the initial one and the limit set to its size: the trainer keeps
        # exactly it. Alphabet and `##` forms numbered before training, in this fixed order (listed
        # as special tokens; the trainer treats them as ordinary tokens otherwise). Ids break ties
        # between equally frequent merges, lower first: the alphabet before the `##` forms, as the
        # trainer itself numbers them, so ties favour word-initial pieces (`고등` before `##등교육`);
        # the `##` forms first made a demo model learn measurably worse.
        limit_alphabet=len(alphabet),
        initial_alphabet=alphabet,
        special_tokens=[*SPECIAL_TOKENS, *alphabet, *("##" + c for c in inner)],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    if len(vocab) < learned:
        raise DataError(
            f"the corpus supports only {len(vocab)} WordPiece tokens, but {size_name} "
            f"{vocab_size} minus corpus.vocab.num_unused {cfg.num_unused} asks for {learned}: use more "
            f"text, lower corpus.vocab.min_frequency, or set {size_name} <= {len(vocab) + cfg.num_unused}"
        )
    if len(vocab) > learned:
        # WordPiece keeps its whole initial alphabet (each character also as a ## continuation),
        # even beyond the requested size; ids past model.vocab_size would crash the model later.
        raise DataError(
            f"the corpus's alphabet alone takes {len(vocab)} WordPiece tokens (characters and their ## "
            f"forms, up to corpus.vocab.limit_alphabet={cfg.limit_alphabet} characters), more than the "
            f"{learned} that {size_name} {vocab_size} minus corpus.vocab.num_unused {cfg.num_unused} "
            f"leaves: set {size_name} >= {len(vocab) + cfg.num_unused} or lower corpus.vocab.limit_alphabet"
        )
    return vocab + [f"[unused{i}]" for i in range(cfg.num_unused)]


def build_tokenizer(vocab: list[str]) -> Tokenizer:
    """The runtime tokenizer: BERT normaliser (cased, no accent stripping) + BERT pre-tokenizer +
    WordPiece over `vocab`, with `[CLS] A [SEP] B [SEP]` post-processing."""
    tokenizer = Tokenizer(
        models.WordPiece(
            {t: i for i, t in enumerate(vocab)}, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
        )
    )
    tokenizer.normalizer = bert_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, CLS_ID), (SEP, SEP_ID)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def check_vocab_tokens(vocab: list[str], vocab_size: int, where: str, ours: bool = True) -> None:
    """DataError unless `vocab` has `vocab_size` distinct tokens, the five special ones first in our
    order when `ours` (a teacher's tokenizer, corpus.tokenizer_uri, has them anywhere)."""
    if ours and list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
        raise DataError(
            f"{where}: the first tokens must be {' '.join(SPECIAL_TOKENS)} (ids 0-4), got {' '.join(vocab[:5])}"
        )
    if len(vocab) != vocab_size:
        raise DataError(f"{where} has {len(vocab)} tokens but model.vocab_size is {vocab_size}; make them equal")
    if len(set(vocab)) != len(vocab):
        raise DataError(f"{where} has duplicate tokens")


def vocab_txt_uri(uri: str) -> str:
    """vocab.txt inside a vocabulary folder, or `uri` itself when it names a file."""
    return uri if uri.rstrip("/").endswith(".txt") else storage.join(uri, "vocab.txt")


def load_vocab(uri: str, key: str = "corpus.vocab.vocab_uri") -> list[str]:
    """Tokens of an existing vocab.txt (or a folder holding one), one per line; `key` is the
    setting that named it."""
    txt = vocab_txt_uri(uri)
    if not storage.exists(txt):
        raise DataError(f"vocabulary {txt} not found; fix {key}")
    data = storage.read_bytes(txt)
    # Each of these would turn every token into another string (`[PAD]\r`, a BOM before `[PAD]`)
    # that still looks right when printed.
    if data.startswith(b"\xef\xbb\xbf"):
        raise DataError(f"{txt} starts with a UTF-8 byte order mark; save it as UTF-8 without BOM")
    if b"\r" in data:
        raise DataError(f"{txt} has Windows line ends (CRLF); convert it to LF line ends (e.g. dos2unix)")
    try:
        return data.decode("utf-8").rstrip("\n").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{txt} is not UTF-8 ({e}); a vocabulary is one UTF-8 token per line") from None


def vocab_text(vocab: list[str]) -> bytes:
    """vocab.txt's bytes: one token per line."""
    return ("\n".join(vocab) + "\n").encode("utf-8")


def write_vocab_dir(vocab: list[str], uri: str, max_length: int) -> Tokenizer:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json to `uri`."""
    tokenizer = build_tokenizer(vocab)
    specials = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}
    config = {
        "tokenizer_class": "ElectraTokenizer",
        "do_lower_case": False,
        "strip_accents": False,
        "tokenize_chinese_chars": True,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.txt"), "wb") as f:
            f.write(vocab_text(vocab))
        tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        for name, obj in [("tokenizer_config.json", config), ("special_tokens_map.json", specials)]:
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2, ensure_ascii=False)
        storage.upload_dir(tmp, uri)
    return tokenizer


def is_unused(token: str) -> bool:
    return token.startswith("[unused") and token.endswith("]") and token[7:-1].isdigit()


def merge_vocab(trained: list[str], published: list[str], vocab_size: int, num_unused: int, source: str) -> list[str]:
    """KcELECTRA's merge: the trained tokens, then `published`'s tokens that are not among them,
    in their order (its special and [unusedN] tokens left out), then [unusedN] tokens up to
    `vocab_size`. DataError when that leaves fewer than `num_unused` of them."""
    base = [t for t in trained if not is_unused(t)]
    have = set(base) | set(SPECIAL_TOKENS)
    extra = [t for t in dict.fromkeys(published) if t not in have and not is_unused(t)]
    merged = base + extra
    room = vocab_size - len(merged)
    if room < num_unused:
        raise DataError(
            f"the merged vocabulary has {len(merged)} tokens ({len(base)} trained, corpus.vocab.train_size, + "
            f"{len(extra)} of {source} not among them) and corpus.vocab.num_unused asks for {num_unused} [unused] "
            f"tokens: set model.vocab_size >= {len(merged) + num_unused}"
        )
    return merged + [f"[unused{i}]" for i in range(room)]
