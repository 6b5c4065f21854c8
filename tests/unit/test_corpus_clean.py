"""Each cleaning rule on real Korean text, and the counts it reports; each preset on lines of the
NSMC corpus in ../shared/data and on lines written for the test."""

from __future__ import annotations

import dataclasses
import gzip
import unicodedata

import pytest
from helpers import require_shared_data

from koelectra_dist import cli
from koelectra_dist.corpus.clean import RULES, Cleaner
from koelectra_dist.corpus.config import PRESETS, CleaningConfig


def clean(line: str, **overrides) -> tuple[str | None, dict[str, int]]:
    """The line koelectra_v3 (the default preset, which never splits) makes, or None."""
    cleaner = Cleaner(dataclasses.replace(CleaningConfig(), **overrides))
    out = cleaner.clean(line)
    assert len(out) <= 1
    return (out[0] if out else None), dict(cleaner.counts)


def preset(name: str, line: str, **overrides) -> tuple[list[str], dict[str, int]]:
    cleaner = Cleaner(CleaningConfig(preset=name, **overrides))
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


# Lines of ../shared/data/nsmc/corpus.txt.gz (0-based line numbers), each showing a rule.
NSMC_LINES = {
    170: "말이 필요없다.꿀잼乃강추",
    1143: "이 모든 아이러니는 뛰쳐나간 OOO로부터 비롯되었다.ㅜ",
    1228: "포스터봐ㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋ 타워가훨낫네",
    1245: "<포세이돈 어드벤쳐>와 함께 재난 영화의 교과서...",
    1822: "[9점] 1편보다는 확실히 더 깔끔해진 스토리 그리고 사랑의 힘으로",
    3599: "극단적인 자본주의, 전쟁광(狂)국이 만든 극단적인 공산주의. 그 잔혹함",
    8732: "백화점에서 무단으로 포장된 낙지를 꺼내먹는 그 장면!",
    11518: "어릴때 아무것도 없던 시절에 100000만번은 돌려봤던 낢은녹화 비디오 속 그 영화. "
    "모험과 환타지를 좋아하시는분이라면 꼭 보시길 강추합니다.",
    43678: "상상과현실사이☞ ⓒⓞⓞⓛ",
}


@pytest.fixture(scope="module")
def nsmc():
    path = require_shared_data("nsmc", "corpus.txt.gz")
    found = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i in NSMC_LINES:
                found[i] = line.rstrip("\n")
            if i >= max(NSMC_LINES):
                break
    assert found == NSMC_LINES, "the NSMC corpus changed; pick the lines again"
    return found


# (line number, {preset: (cleaned sentences, rules that fired)})
NSMC_CASES = [
    (  # hanja: kept by v3, replaced by a space where only Hangul + ASCII stay
        170,
        {
            "koelectra_v3": (["말이 필요없다.꿀잼乃강추"], {}),
            "koelectra_v1": (["말이 필요없다.꿀잼 강추"], {"chars_filtered": 1}),
            "kcelectra": (["말이 필요없다.꿀잼 강추"], {"chars_filtered": 1}),
        },
    ),
    (  # portal-masked OOO: v3 shortens it as a repeat, v1 keeps it (ASCII), KcELECTRA removes it
        1143,
        {
            "koelectra_v3": (["이 모든 아이러니는 뛰쳐나간 OO로부터 비롯되었다.ㅜ"], {"repeats_collapsed": 1}),
            "koelectra_v1": (["이 모든 아이러니는 뛰쳐나간 OOO로부터 비롯되었다."], {"chars_filtered": 1}),
            "kcelectra": (["이 모든 아이러니는 뛰쳐나간 로부터 비롯되었다.ㅜ"], {"masked_removed": 1}),
        },
    ),
    (  # jamo repeats: v3 keeps two, v1 drops jamo, KcELECTRA keeps jamo and soynlp makes two
        1228,
        {
            "koelectra_v3": (["포스터봐ㅋㅋ 타워가훨낫네"], {"repeats_collapsed": 1}),
            "koelectra_v1": (["포스터봐 타워가훨낫네"], {"chars_filtered": 1}),
            "kcelectra": (["포스터봐ㅋㅋ 타워가훨낫네"], {"repeats_normalized": 1}),
        },
    ),
    (  # bracketed words go in v1 only; soynlp leaves '...' alone (not a word character)
        1245,
        {
            "koelectra_v3": (["<포세이돈 어드벤쳐>와 함께 재난 영화의 교과서.."], {"repeats_collapsed": 1}),
            "koelectra_v1": (["와 함께 재난 영화의 교과서..."], {"bracketed_removed": 1}),
            "kcelectra": (["<포세이돈 어드벤쳐>와 함께 재난 영화의 교과서..."], {}),
        },
    ),
    (
        1822,
        {
            "koelectra_v3": (["[9점] 1편보다는 확실히 더 깔끔해진 스토리 그리고 사랑의 힘으로"], {}),
            "koelectra_v1": (["1편보다는 확실히 더 깔끔해진 스토리 그리고 사랑의 힘으로"], {"bracketed_removed": 1}),
            "kcelectra": (["[9점] 1편보다는 확실히 더 깔끔해진 스토리 그리고 사랑의 힘으로"], {}),
        },
    ),
    (  # sentence split in v1: the second sentence is under 10 characters
        3599,
        {
            "koelectra_v3": (["극단적인 자본주의, 전쟁광(狂)국이 만든 극단적인 공산주의. 그 잔혹함"], {}),
            "koelectra_v1": (
                ["극단적인 자본주의, 전쟁광( )국이 만든 극단적인 공산주의."],
                {"sentences_split": 1, "chars_filtered": 1, "too_short": 1},
            ),
            "kcelectra": (
                ["극단적인 자본주의, 전쟁광( )국이 만든 극단적인 공산주의. 그 잔혹함"],
                {"chars_filtered": 1},
            ),
        },
    ),
    (  # '무단으로' is not a copyright notice
        8732,
        {p: (["백화점에서 무단으로 포장된 낙지를 꺼내먹는 그 장면!"], {}) for p in PRESETS},
    ),
    (  # soynlp's repeat_normalize shortens digit runs too (100000 -> 100), as KcELECTRA's text had it
        11518,
        {
            "koelectra_v3": ([NSMC_LINES[11518]], {}),
            "koelectra_v1": (
                [
                    "어릴때 아무것도 없던 시절에 100만번은 돌려봤던 낢은녹화 비디오 속 그 영화.",
                    "모험과 환타지를 좋아하시는분이라면 꼭 보시길 강추합니다.",
                ],
                {"sentences_split": 1, "repeats_normalized": 1},
            ),
            "kcelectra": ([NSMC_LINES[11518].replace("100000", "100")], {"repeats_normalized": 1}),
        },
    ),
    (  # a copyright sign before circled letters is decoration, not boilerplate; the line is then too short
        43678,
        {
            "koelectra_v3": (["상상과현실사이☞ ⓒⓞⓞⓛ"], {}),
            "koelectra_v1": ([], {"chars_filtered": 1, "too_short": 1}),
            "kcelectra": ([], {"chars_filtered": 1, "too_short": 1}),
        },
    ),
]


@pytest.mark.parametrize("number,expected", NSMC_CASES, ids=[str(n) for n, _ in NSMC_CASES])
def test_presets_on_nsmc_lines(nsmc, number, expected):
    for name, want in expected.items():
        assert preset(name, nsmc[number]) == want, name


NEWS = "(서울=뉴스1) 홍길동 기자 = 정부가 내년 예산을 3.5% 늘린다고 밝혔다. 【사진】 U.S. 국무부는 환영했다!! 1. 예산"


def test_koelectra_v1_on_news():
    out, counts = preset("koelectra_v1", NEWS)
    # the byline's sentence dropped; split after '밝혔다.' and '환영했다!!', not after 'U.S.' or '1.'
    assert out == ["U.S. 국무부는 환영했다!!"]
    assert counts == {"sentences_split": 1, "boilerplate_dropped": 1, "bracketed_removed": 1, "too_short": 1}
    for notice in ["무단전재 및 재배포 금지", "<저작권자(c) 연합뉴스, 무단 전재-재배포 금지>", "ⓒ 2020 한국일보"]:
        assert preset("koelectra_v1", notice) == ([], {"boilerplate_dropped": 1}), notice
    # each rule switchable: with boilerplate kept the byline's sentence stays
    out, _ = preset("koelectra_v1", NEWS, drop_news_boilerplate=False)
    assert out[0] == "(서울=뉴스1) 홍길동 기자 = 정부가 내년 예산을 3.5% 늘린다고 밝혔다."
    assert preset("koelectra_v1", NEWS, split_sentences=False)[0] == []  # one sentence, with a byline


def test_koelectra_v1_drops_hashtags_mentions_emails_and_emoji():
    out, counts = preset("koelectra_v1", "@영화광 #명작 문의는 fan@naver.com 으로 주세요 😀 漢字 좋네요")
    assert out == ["문의는 으로 주세요 좋네요"]
    assert counts == {
        "emails_removed": 1,
        "mentions_removed": 1,
        "hashtags_removed": 1,
        "emoji_removed": 1,
        "chars_filtered": 1,
    }


COMMENT = "ㅋㅋㅋㅋㅋ 이게 뉴스냐 OOO들아 😡👍🏻 https://n.news.naver.com/x 漢字 @기자님 #속보"


def test_kcelectra_on_a_comment():
    out, counts = preset("kcelectra", COMMENT)
    # jamo, emoji (with skin tone), @ and # kept; hanja, URLs and the mask go; ㅋ x5 -> ㅋㅋ (soynlp)
    assert out == ["ㅋㅋ 이게 뉴스냐 들아 😡👍🏻 @기자님 #속보"]
    assert counts == {"urls_removed": 1, "masked_removed": 1, "chars_filtered": 1, "repeats_normalized": 1}
    out, counts = preset("kcelectra", COMMENT, keep_emoji=False)
    assert out == ["ㅋㅋ 이게 뉴스냐 들아 @기자님 #속보"]
    assert counts["emoji_removed"] == 1
    assert preset("kcelectra", COMMENT, remove_masked=False)[0] == ["ㅋㅋ 이게 뉴스냐 OOO들아 😡👍🏻 @기자님 #속보"]
    # soynlp's rule: three repeats stay, four or more become two; OOOPS is a word, not a mask
    assert preset("kcelectra", "ㅋㅋㅋ 대박 OOOPS ㅎㅎㅎㅎ")[0] == ["ㅋㅋㅋ 대박 OOOPS ㅎㅎ"]
    assert preset("kcelectra", "짧은 댓글 ㅋ") == ([], {"too_short": 1})


def test_koelectra_v3_keeps_hanja_emoji_and_brackets():
    line = "【단독】 漢字 [앵커] 😀 <제목> 무단전재"
    assert preset("koelectra_v3", line) == ([line], {})
    out, counts = preset("koelectra_v3", line, keep_emoji=False, keep_only="hangul_ascii")
    assert out == ["단독 [앵커] <제목> 무단전재"]  # 【】 are outside the set, the word inside stays
    assert counts == {"emoji_removed": 1, "chars_filtered": 1}


def test_every_rule_is_counted_in_the_report():
    assert set(RULES) >= {
        "sentences_split",
        "boilerplate_dropped",
        "bracketed_removed",
        "masked_removed",
        "emoji_removed",
        "chars_filtered",
        "repeats_normalized",
    }
    for name, rules in PRESETS.items():
        assert CleaningConfig(preset=name).rules() == rules
    assert CleaningConfig(preset="kcelectra", min_chars=2).rules().min_chars == 2


def test_preview_prints_each_line_with_the_rules_that_fired(tmp_path, capsys):
    corpus = tmp_path / "comments.txt"
    corpus.write_text(
        "좋은 영화였어요 정말로\n\nㅋㅋㅋㅋㅋ 이게 뉴스냐 OOO들아\n짧다\n세번째 줄은 안 보임\n", encoding="utf-8"
    )
    argv = ["--config", "configs/tiny.json", "--set", f'corpus.inputs=["{corpus}"]']
    assert cli.main([*argv, "--set", "corpus.cleaning.preset=kcelectra", "--preview-cleaning", "3"]) == 0
    out = capsys.readouterr().out
    assert "cleaning preset kcelectra:" in out and "keep_only=hangul_jamo_ascii" in out
    assert "좋은 영화였어요 정말로\n       = unchanged" in out
    assert "> ㅋㅋ 이게 뉴스냐 들아\n       rules: masked_removed, repeats_normalized" in out
    assert "짧다\n       x dropped\n       rules: too_short" in out
    assert "세번째" not in out
    assert "3 lines; rules fired on: {'masked_removed': 1, 'repeats_normalized': 1, 'too_short': 1}" in out
