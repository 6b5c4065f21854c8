"""WordPiece vocabulary: Mecab marking, KoELECTRA settings, loading with the slow and fast ElectraTokenizer."""

from __future__ import annotations

import dataclasses
import gzip
import unicodedata
from collections import Counter

import pytest
from helpers import require_shared_data, tiny_config
from tokenizers import pre_tokenizers
from transformers import ElectraTokenizer, ElectraTokenizerFast

from koelectra_dist import storage
from koelectra_dist.corpus.config import VocabConfig
from koelectra_dist.corpus.vocab import (
    Pretokenizer,
    bert_normalizer,
    build_tokenizer,
    check_vocab_tokens,
    load_vocab,
    merge_vocab,
    train_vocab,
    write_vocab_dir,
)
from koelectra_dist.errors import ConfigError, DataError
from koelectra_dist.tokens import SPECIAL_TOKENS, UNK

SENTENCES = [
    "한국어 ELECTRA를 공유합니다.",
    "이 영화 정말 재밌어요 배우들 연기도 최고",
    "스토리가 너무 지루해서 중간에 잠들었다",
    "감독의 전작보다 훨씬 감동적이었습니다!",
    "시간 가는 줄 모르고 봤네요 ㅋㅋ 10점 드립니다",
]


def test_mecab_marks_non_initial_morphemes():
    assert Pretokenizer("mecab")("한국어 ELECTRA를 공유합니다.") == "한국어 ELECTRA ##를 공유 ##합니다 ."
    assert Pretokenizer("whitespace")("한국어 ELECTRA를") == "한국어 ELECTRA를"


@pytest.fixture(scope="module")
def nsmc_vocab_dir(tmp_path_factory):
    path = require_shared_data("nsmc", "corpus.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for _, line in zip(range(12_000), f, strict=False) if line.strip()]
    split = Pretokenizer("mecab")
    vocab = train_vocab([split(line) for line in lines], VocabConfig(num_unused=20), 3000)
    out = tmp_path_factory.mktemp("vocab")
    write_vocab_dir(vocab, str(out), 128)
    return out, vocab


def test_vocab_layout(nsmc_vocab_dir):
    _, vocab = nsmc_vocab_dir
    assert len(vocab) == 3000
    assert tuple(vocab[:5]) == SPECIAL_TOKENS
    assert vocab[-20:] == [f"[unused{i}]" for i in range(20)]
    # No decomposed jamo (what NFD / strip_accents would create).
    assert not [t for t in vocab if any("\u1100" <= ch <= "\u11ff" for ch in t)]
    assert any(t.startswith("##") and len(t) > 3 for t in vocab)


def test_slow_and_fast_tokenizers_agree_without_unk(nsmc_vocab_dir):
    out, _ = nsmc_vocab_dir
    slow = ElectraTokenizer.from_pretrained(str(out))
    fast = ElectraTokenizerFast.from_pretrained(str(out))
    assert slow.model_max_length == 128
    for sentence in SENTENCES:
        ids = slow(sentence)["input_ids"]
        assert ids == fast(sentence)["input_ids"]
        assert ids[0] == 2 and ids[-1] == 3
        tokens = slow.convert_ids_to_tokens(ids)
        assert UNK not in tokens, (sentence, tokens)
        assert unicodedata.is_normalized("NFC", "".join(tokens))
    pieces = [t.removeprefix("##") for t in fast.tokenize("한국어")]
    assert "".join(pieces) == "한국어" and all("\uac00" <= ch <= "\ud7a3" for p in pieces for ch in p)


def test_vocab_txt_alone_gives_the_same_ids(nsmc_vocab_dir, tmp_path):
    out, _ = nsmc_vocab_dir
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    from_txt = ElectraTokenizer.from_pretrained(str(tmp_path))
    full = ElectraTokenizerFast.from_pretrained(str(out))
    for sentence in SENTENCES:
        assert from_txt(sentence)["input_ids"] == full(sentence)["input_ids"]


def test_existing_vocab_checks(nsmc_vocab_dir):
    out, vocab = nsmc_vocab_dir
    assert load_vocab(str(out)) == vocab == load_vocab(str(out / "vocab.txt"))
    check_vocab_tokens(vocab, 3000, "v")
    with pytest.raises(DataError, match="model.vocab_size is 4000"):
        check_vocab_tokens(vocab, 4000, "v")
    with pytest.raises(DataError, match="ids 0-4"):
        check_vocab_tokens(vocab[1:] + ["x"], 3000, "v")
    with pytest.raises(DataError, match="not found"):
        load_vocab(str(out / "missing"))


def test_too_small_corpus_for_the_vocab_is_a_clear_error():
    with pytest.raises(DataError, match="supports only .* WordPiece tokens.*model.vocab_size <="):
        train_vocab(["영화 정말 좋아요", "정말 좋은 영화"], VocabConfig(pretokenizer="whitespace", num_unused=0), 500)


def test_alphabet_larger_than_the_vocab_is_a_clear_error():
    # Many distinct syllables: WordPiece keeps them all (and their ## forms) beyond the asked size,
    # which would give ids past model.vocab_size.
    syllables = [chr(0xAC00 + i) for i in range(0, 11172, 7)]
    lines = ["".join(syllables[i : i + 3]) + " " + "".join(syllables[i + 1 : i + 4]) for i in range(len(syllables) - 4)]
    with pytest.raises(DataError, match="alphabet alone takes .* set model.vocab_size >= "):
        train_vocab(lines, VocabConfig(pretokenizer="whitespace", num_unused=0, min_frequency=1), 1000)


def test_the_same_lines_give_the_same_vocabulary():
    """tokenizers' WordPiece trainer alone returns a different vocabulary nearly every call on this
    text (hash-map order decides its alphabet cut and the ids that break ties between merges)."""
    text = storage.read_bytes("pkg://konlpy/data/corpus/kolaw/constitution.txt").decode("utf-8").splitlines()
    cfg = VocabConfig(pretokenizer="whitespace", num_unused=0, limit_alphabet=200)
    first = train_vocab(text, cfg, 600)
    assert all(train_vocab(text, cfg, 600) == first for _ in range(3))
    # The alphabet cut keeps the most frequent characters (ties by code point), and a `##` form
    # exists exactly for those of them that occur inside a word: nothing added that training
    # would not have made.
    split, normalizer = pre_tokenizers.BertPreTokenizer(), bert_normalizer()
    words = [w for line in text for w, _ in split.pre_tokenize_str(normalizer.normalize_str(line))]
    counts = Counter("".join(words))
    alphabet = set(sorted(counts, key=lambda c: (-counts[c], c))[:200])
    assert {t for t in first if len(t) == 1} == alphabet
    inner = {c for w in words for c in w[1:]} & alphabet
    assert {t[2:] for t in first if t.startswith("##") and len(t) == 3} == inner


def test_merge_appends_the_published_tokens_not_trained_in_order():
    trained = [*SPECIAL_TOKENS, "영화", "##는", "좋다", "[unused0]"]
    published = [*SPECIAL_TOKENS, "[unused0]", "[unused1]", "좋다", "배우", "##는", "연기", "배우", "[BOS]"]
    merged = merge_vocab(trained, published, 12, 1, "published")
    # KcELECTRA's arithmetic: n trained (its [unused] left out) + the published tokens not among
    # them (specials and [unused] left out, each once) + [unused] filling up to the size
    assert merged == [*SPECIAL_TOKENS, "영화", "##는", "좋다", "배우", "연기", "[BOS]", "[unused0]"]
    assert merge_vocab(trained, published, 14, 1, "p")[-3:] == ["[unused0]", "[unused1]", "[unused2]"]
    with pytest.raises(DataError, match=r"has 11 tokens \(8 trained.*\+ 3 of published.*model.vocab_size >= 13"):
        merge_vocab(trained, published, 12, 2, "published")


def test_merge_of_a_trained_vocabulary_with_a_published_one():
    """KcELECTRA's recipe on a small case: WordPiece trained on one Korean text, then merged with a
    vocabulary trained on another; the result is n + the other's tokens not among the n, and a
    word only the other knows tokenizes to its appended id."""
    constitution = storage.read_bytes("pkg://konlpy/data/corpus/kolaw/constitution.txt").decode().splitlines()
    bill = storage.read_bytes("pkg://konlpy/data/corpus/kobill/1809890.txt").decode().splitlines()
    cfg = VocabConfig(pretokenizer="whitespace", num_unused=0, min_frequency=1, limit_alphabet=150)
    trained = train_vocab(constitution, cfg, 600)
    published = train_vocab(bill, dataclasses.replace(cfg, num_unused=10), 400)
    new = [t for t in published if t not in set(trained) and not t.startswith("[unused")]
    merged = merge_vocab(trained, published, 600 + len(new) + 4, 4, "bill")
    assert merged[:600] == trained and merged[600:-4] == new and len(new) > 50
    check_vocab_tokens(merged, 600 + len(new) + 4, "merged")
    word = next(t for t in new if len(t) > 1 and not t.startswith("##"))
    assert build_tokenizer(merged).encode(word, add_special_tokens=False).ids == [merged.index(word)]


@pytest.mark.parametrize(
    "overrides,problem",
    [
        (["corpus.vocab.merge_with=v.txt"], "merge_with needs corpus.vocab.train_size"),
        (["corpus.vocab.train_size=500"], "train_size: set only with corpus.vocab.merge_with"),
        (["corpus.vocab.merge_with=v.txt", "corpus.vocab.train_size=995"], "at most model.vocab_size \\(1000\\) minus"),
        (["corpus.vocab.merge_with=v.txt", "corpus.vocab.train_size=5"], "above the 5 special tokens"),
        (["corpus.vocab.merge_with=v.txt", "corpus.vocab.train_size=500", "corpus.vocab.vocab_uri=w"], "drop one"),
    ],
)
def test_merge_settings_are_checked_before_anything_runs(tmp_path, overrides, problem):
    with pytest.raises(ConfigError, match=problem):
        tiny_config(str(tmp_path), *overrides)
