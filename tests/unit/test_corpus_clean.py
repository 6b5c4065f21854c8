"""Each cleaning rule on real Korean text, and the counts it reports."""

from __future__ import annotations

import dataclasses
import unicodedata

import pytest

from koelectra_dist.corpus.clean import Cleaner
from koelectra_dist.corpus.config import CleaningConfig


def clean(line: str, **overrides) -> tuple[str | None, dict[str, int]]:
    cleaner = Cleaner(dataclasses.replace(CleaningConfig(), **overrides))
    return cleaner.clean(line), dict(cleaner.counts)


def test_nfc_composes_decomposed_hangul():
    decomposed = unicodedata.normalize("NFD", "한국어 영화 최고")
    assert len(decomposed) > len("한국어 영화 최고")  # jamo sequence
    out, counts = clean(decomposed)
    assert out == "한국어 영화 최고"
    assert counts == {"nfc_normalized": 1}
    out, _ = clean(decomposed, normalize_nfc=False)
    assert out == decomposed


def test_control_and_zero_width_characters_removed():
    out, counts = clean("\ufeff정말\u200b 재밌는\x07 영화\t강추")
    assert out == "정말 재밌는 영화 강추"
    assert counts == {"control_chars_removed": 1}


def test_urls_removed():
    out, counts = clean(
        "예고편은 https://movie.naver.com/movie/bi/mi/basic.nhn?code=10001 에서 보세요 www.example.co.kr"
    )
    assert out == "예고편은 에서 보세요"
    assert counts == {"urls_removed": 1}


def test_emails_removed_before_mentions():
    out, counts = clean("문의는 movie.fan+kr@naver.com 으로 주세요")
    assert out == "문의는 으로 주세요"
    assert counts == {"emails_removed": 1}


def test_mentions_removed():
    out, counts = clean("@영화광 님 말씀대로 @cine_21 리뷰가 맞네요")
    assert out == "님 말씀대로 리뷰가 맞네요"
    assert counts == {"mentions_removed": 1}


def test_hashtags_removed_but_not_inside_words():
    out, counts = clean("인생영화 #명작 #눈물주의 C# 개발자도 울었다")
    assert out == "인생영화 C# 개발자도 울었다"
    assert counts == {"hashtags_removed": 1}


def test_repeated_characters_collapsed_digits_kept():
    out, counts = clean("ㅋㅋㅋㅋㅋㅋ 진짜 웃기다!!!!!! 10000원 아깝지 않음ㅠㅠㅠㅠ")
    assert out == "ㅋㅋ 진짜 웃기다!! 10000원 아깝지 않음ㅠㅠ"
    assert counts == {"repeats_collapsed": 1}
    out, _ = clean("ㅋㅋㅋㅋ", max_repeats=0)
    assert out == "ㅋㅋㅋㅋ"


def test_too_short_and_emptied_lines_dropped():
    assert clean("굿") == (None, {"too_short": 1})
    assert clean("https://m.movie.naver.com #추천") == (None, {"urls_removed": 1, "hashtags_removed": 1, "emptied": 1})
    assert clean("굿", min_chars=1)[0] == "굿"


def test_disabled_cleaning_only_strips():
    out, counts = clean("  ㅋㅋㅋㅋ https://x.kr  ", enabled=False)
    assert out == "ㅋㅋㅋㅋ https://x.kr"
    assert counts == {}


def test_duplicates_after_cleaning_dropped_within_a_block():
    cleaner = Cleaner(CleaningConfig())
    docs = cleaner.clean_documents([["재밌어요ㅋㅋㅋㅋ", "재밌어요ㅋㅋㅋ", "감동"], ["재밌어요ㅋㅋ", "굿"]])
    assert docs == [["재밌어요ㅋㅋ", "감동"]]
    assert cleaner.counts["duplicates_after_cleaning"] == 2
    assert cleaner.counts["too_short"] == 1


@pytest.mark.parametrize("line", ["영화 정말 재밌어요", "배우들의 연기가 훌륭하다. 10점 만점에 10점!"])
def test_clean_korean_is_unchanged(line):
    assert clean(line) == (line, {})
