"""Fine-tuning task specs, task file parsing (every built-in format), bad input, metrics, results table."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math

import pytest
from helpers import SHARED_DATA, require_shared_data

from koelectra_dist import storage
from koelectra_dist.config import load_config
from koelectra_dist.errors import ConfigError, DataError
from koelectra_dist.finetune.config import FinetuneConfig, config_problems, resolve_tasks
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.metrics import (
    METRICS,
    accuracy,
    entity_f1,
    exact_match,
    korquad_f1,
    macro_f1,
    matthews,
    normalize_answer,
    pearson,
    spearman,
)
from koelectra_dist.finetune.report import markdown, summarize
from koelectra_dist.finetune.stage import task_files
from koelectra_dist.finetune.task_specs import BUILTIN_TASKS, FinetuneTaskConfig, recipe_size

# Small files in each task's original layout (header first), as the tests write them.
SAMPLES = {
    "kornli": (
        "multinli.train.ko.tsv",
        "sentence1\tsentence2\tgold_label\n"
        "개념적으로 크림 스키밍은 두 가지 기본 차원을 가지고 있다.\t제품과 지리학은 크림 스키밍을 작동시키는 것이다.\tneutral\n"
        "시즌 중에 알고 있는 거 알아?\t사람들이 다시 한번 말해줄게.\tentailment\n"
        "우리 번호 중 하나가 당신의 지시를 세밀하게 수행할 것이다.\t우리 팀의 일원이 당신의 명령을 엄청나게 정확하게 실행할 것이다.\tcontradiction\n",
        ["개념적으로 크림 스키밍은 두 가지 기본 차원을 가지고 있다.", "시즌 중에 알고 있는 거 알아?"],
        [2, 1, 0],
    ),
    "paws": (
        "translated_train.tsv",
        "id\tsentence1\tsentence2\tlabel\n"
        "1\t1975년부터 76년까지 NBA 시즌은 전미 농구 협회의 30번째 시즌이었다.\t1975-76 시즌은 NBA의 30번째 시즌이었다.\t1\n"
        '2\t그는 "조용한" 사람이었다.\t그는 조용하지 않았다.\t0\n',
        ["1975년부터 76년까지 NBA 시즌은 전미 농구 협회의 30번째 시즌이었다.", '그는 "조용한" 사람이었다.'],
        [1, 0],
    ),
    "question_pair": (  # songys' CSV: comma-separated, quoted where a field holds a comma, quote or line break
        "kor_pair_train.csv",
        "id,qid1,qid2,question1,question2,is_duplicate\n"
        '1,1,2,"1000일 만난 여자친구와 이별, 어떻게",10년 연애 이별,1\n'
        '2,3,4,"라디오처럼 ""사랑""을\n끄고 싶어",오늘 날씨 어때,0\n',
        ["1000일 만난 여자친구와 이별, 어떻게", '라디오처럼 "사랑"을\n끄고 싶어'],
        [1, 0],
    ),
    "nsmc": (  # e9t/nsmc
        "ratings_train.txt",
        'id\tdocument\tlabel\n9976970\t아 더빙.. 진짜 짜증나네요 목소리\t0\n3819312\t"흠...포스터보고 초딩영화줄....\t1\n',
        ["아 더빙.. 진짜 짜증나네요 목소리", '"흠...포스터보고 초딩영화줄....'],
        [0, 1],
    ),
    "korsts": (  # kakaobrain/kor-nlu-datasets, KorSTS
        "sts-train.tsv",
        "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n"
        "main-captions\tMSRvid\t2012test\t0001\t5.000\t비행기가 이륙하고 있다.\t비행기가 이륙하고 있다.\n",
        ["비행기가 이륙하고 있다."],
        [5.0],
    ),
    "hate_speech": (
        "train.tsv",
        "comments\tcontain_gender_bias\tbias\thate\n"
        "송중기 시대극은 믿고본다. 첫회 신선하고 좋았다.\tFalse\tnone\tnone\n"
        "지현우 나쁜놈\tFalse\tnone\toffensive\n"
        "알바쓰고많이만들면되지\tFalse\tnone\thate\n",
        ["송중기 시대극은 믿고본다. 첫회 신선하고 좋았다.", "지현우 나쁜놈", "알바쓰고많이만들면되지"],
        [0, 1, 2],
    ),
    "naver_ner": (  # KoELECTRA's layout: words, a tab, one tag per word; no header
        "train.tsv",
        "비토리오 양일 만에 영사관 감호 용퇴, 항룡 압력설 의심만 가율\tPER-B DAT-B DAT-I ORG-B CVL-B O O O O O\n"
        "이 음경동맥의 직경이 8 19mm입니다 .\tO O O NUM-B NUM-I O\n",
        ["비토리오 양일 만에 영사관 감호 용퇴, 항룡 압력설 의심만 가율", "이 음경동맥의 직경이 8 19mm입니다 ."],
        [[1, 13, 14, 7, 11, 0, 0, 0, 0, 0], [0, 0, 0, 17, 18, 0]],
    ),
}


def _spec(name: str) -> FinetuneTaskConfig:
    no_dev = name in ("question_pair", "naver_ner")
    return resolve_tasks(FinetuneConfig(tasks=[name], eval_split="test" if no_dev else "dev"))[0]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_builtin_formats_parse(tmp_path, name):
    file, text, first_texts, labels = SAMPLES[name]
    spec = _spec(name)
    folder = tmp_path / (spec.folder or name)
    folder.mkdir()
    (folder / file).write_text(text, encoding="utf-8")
    data = read_split(str(tmp_path), spec, "train")
    assert data.text_a[: len(first_texts)] == first_texts
    assert data.labels == labels
    assert (data.text_b is None) == (len(spec.text_columns) == 1)


def test_question_pair_reads_koelectra_tsv_and_songys_test_csv(tmp_path):
    """KoELECTRA's TSV re-split (train/dev/test.tsv, tab-separated, no quoting) and songys' test CSV
    (test_id first, a trailing empty column) read with the same built-in task: the header tells."""
    folder = tmp_path / "question-pair"
    folder.mkdir()
    (folder / "dev.tsv").write_text('question1\tquestion2\tis_duplicate\n"따옴표, 쉼표\t질문\t0\n', encoding="utf-8")
    (folder / "kor_pair_test.csv").write_text(
        "test_id,question1,question2,is_duplicate,\n0,잠 와,졸려,0,\n", encoding="utf-8"
    )
    spec = dataclasses.replace(_spec("question_pair"), dev_file="dev.tsv")
    dev = read_split(str(tmp_path), spec, "dev")
    assert (dev.text_a, dev.text_b, dev.labels) == (['"따옴표, 쉼표'], ["질문"], [0])
    test = read_split(str(tmp_path), spec, "test")
    assert (test.text_a, test.text_b, test.labels) == (["잠 와"], ["졸려"], [0])


def test_recipes_by_model_size():
    """KoELECTRA's Small configs differ from Base in three batch sizes; overrides still win."""
    small = {s.name: s for s in resolve_tasks(FinetuneConfig(tasks=["kornli", "paws", "korquad", "nsmc"]), "small")}
    base = {s.name: s for s in resolve_tasks(FinetuneConfig(tasks=["kornli", "paws", "korquad", "nsmc"]))}
    assert [small[t].batch_size for t in ("kornli", "paws", "korquad", "nsmc")] == [128, 64, 32, 32]
    assert [base[t].batch_size for t in ("kornli", "paws", "korquad", "nsmc")] == [64, 32, 8, 32]
    (kornli,) = resolve_tasks(FinetuneConfig(tasks=["kornli"], batch_size=16), "small")
    assert kornli.batch_size == 16
    assert [recipe_size(h) for h in (64, 256, 768)] == ["small", "small", "base"]


def test_distilled_students_get_distilkoberts_recipes(tmp_path):
    """768 wide with fewer layers than Base (DistilKoBERT's shape, DistilBERT's config.json names):
    KoELECTRA's distilkobert.json batches."""
    from koelectra_dist.finetune.stage import pick_recipe

    assert [recipe_size(768, n) for n in (3, 6, 12)] == ["distilkobert", "distilkobert", "base"]
    assert recipe_size(256, 3) == "small"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert", "dim": 768, "n_layers": 3}))
    picked = pick_recipe(FinetuneConfig(), str(tmp_path))
    assert picked["size"] == "distilkobert" and "3 layers" in picked["why"]
    tasks = ["kornli", "paws", "korquad", "nsmc"]
    distil = {s.name: s for s in resolve_tasks(FinetuneConfig(tasks=tasks), "distilkobert")}
    assert [distil[t].batch_size for t in tasks] == [128, 32, 32, 32]


def test_same_file_for_training_and_evaluation_is_refused(caplog):
    same = FinetuneTaskConfig(name="nsmc", dev_file="ratings_train.txt")
    cfg = FinetuneConfig(tasks=["nsmc"], task_specs=[same], data_dir="/data")
    (spec,) = resolve_tasks(cfg)
    with pytest.raises(ConfigError, match=r"same file /data/nsmc/ratings_train.txt .*allow_same_files"):
        task_files(cfg, spec)
    allowed = dataclasses.replace(cfg, allow_same_files=True)
    assert task_files(allowed, spec) == {"train": "/data/nsmc/ratings_train.txt", "dev": "/data/nsmc/ratings_train.txt"}
    assert "memorisation" in caplog.text


@pytest.mark.parametrize(
    ("dev_file", "how"),
    [("./ratings_train.txt", "the same file"), ("../nsmc/ratings_train.txt", "the same file"),
     ("link.txt", "the same file"), ("copy.txt", "identical copies of")],
)  # fmt: skip
def test_the_train_eval_guard_compares_resolved_files_and_content(tmp_path, dev_file, how):
    folder = tmp_path / "nsmc"
    folder.mkdir()
    (folder / "ratings_train.txt").write_text("id\tdocument\tlabel\n1\t좋다\t1\n")
    (folder / "copy.txt").write_text("id\tdocument\tlabel\n1\t좋다\t1\n")
    (folder / "other.txt").write_text("id\tdocument\tlabel\n1\t싫다\t0\n")  # same size, other content
    (folder / "link.txt").symlink_to(folder / "ratings_train.txt")
    cfg = FinetuneConfig(
        tasks=["nsmc"], task_specs=[FinetuneTaskConfig(name="nsmc", dev_file=dev_file)], data_dir=str(tmp_path)
    )
    (spec,) = resolve_tasks(cfg)
    with pytest.raises(ConfigError, match=f"trains and evaluates on {how} .*ratings_train.txt"):
        task_files(cfg, spec)
    other = FinetuneConfig(
        tasks=["nsmc"], task_specs=[FinetuneTaskConfig(name="nsmc", dev_file="other.txt")], data_dir=str(tmp_path)
    )
    (spec,) = resolve_tasks(other)
    assert task_files(other, spec)["dev"] == str(folder / "other.txt")


def test_per_task_split_and_files_in_other_folders(tmp_path):
    """A task scored on test selects its epoch on dev; its files may each be a full path."""
    elsewhere = FinetuneTaskConfig(name="korsts", eval_split="test", test_file="s3://other/sts/sts-test.tsv")
    cfg = FinetuneConfig(tasks=["nsmc", "korsts"], task_specs=[elsewhere], data_dir=str(tmp_path))
    nsmc, korsts = resolve_tasks(cfg)
    assert (nsmc.eval_split, korsts.eval_split) == ("dev", "test")
    files = {"train": f"{tmp_path}/korsts/sts-train.tsv", "test": "s3://other/sts/sts-test.tsv"}
    assert task_files(cfg, korsts) == files  # no dev file: the final epoch is scored
    (tmp_path / "korsts").mkdir()
    (tmp_path / "korsts" / "sts-dev.tsv").write_text("x\n")
    assert task_files(cfg, korsts) == {**files, "dev": f"{tmp_path}/korsts/sts-dev.tsv"}  # it chooses the epoch
    with pytest.raises(DataError) as e:
        read_split(str(tmp_path), nsmc, "dev")
    for setting in ("finetune.data_dir", "folder=nsmc", "dev_file=ratings_dev.txt", "full path or URI"):
        assert setting in str(e.value)


def test_shared_nsmc_and_korsts_parse():
    require_shared_data("korsts", "sts-dev.tsv")
    data_dir = str(SHARED_DATA)
    sts = read_split(data_dir, BUILTIN_TASKS["korsts"], "dev")
    assert len(sts) == 1500 and 0 <= min(sts.labels) and max(sts.labels) <= 5
    assert sts.text_b is not None and sts.text_a[0] and sts.text_b[0]
    nsmc = read_split(data_dir, BUILTIN_TASKS["nsmc"], "train", limit=500)
    assert len(nsmc) == 500 and set(nsmc.labels) == {0, 1} and nsmc.text_b is None


def test_new_tsv_task_from_config_only(tmp_path):
    """A header-less, comma-separated regression task defined entirely by a spec, read from gzip."""
    (tmp_path / "mine").mkdir()
    with gzip.open(tmp_path / "mine" / "train.csv.gz", "wt", encoding="utf-8") as f:
        f.write("좋은 영화,0.5,x\r\n\n나쁜 영화,4,y\r\n")
    cfg = FinetuneConfig(
        tasks=["mine"],
        task_specs=[
            FinetuneTaskConfig(
                name="mine",
                train_file="train.csv.gz",
                dev_file="train.csv.gz",
                delimiter=",",
                columns=["text", "score", "other"],
                text_columns=["text"],
                label_column="score",
                metric="pearson",
            )
        ],
    )
    (spec,) = resolve_tasks(cfg)
    assert (spec.epochs, spec.batch_size, spec.learning_rate) == (10, 32, 5e-5)  # the common recipe
    data = read_split(str(tmp_path), spec, "dev")
    assert data.text_a == ["좋은 영화", "나쁜 영화"] and data.labels == [0.5, 4.0]


def test_spec_resolution_order_and_problems():
    cfg = FinetuneConfig(
        tasks=["nsmc", "korsts"],
        epochs=2,
        task_specs=[FinetuneTaskConfig(name="nsmc", epochs=1, learning_rate=1e-4)],
    )
    nsmc, korsts = resolve_tasks(cfg)
    assert (nsmc.epochs, nsmc.batch_size, nsmc.learning_rate) == (1, 32, 1e-4)  # task entry beats global
    assert (korsts.epochs, korsts.labels, korsts.metric) == (2, None, "spearman")
    new = FinetuneTaskConfig(
        name="new", train_file="t", dev_file="d", text_columns=["a"], label_column="b", metric="pearson"
    )
    (spec,) = resolve_tasks(FinetuneConfig(tasks=["new"], task_specs=[new], epochs=2, batch_size=8))
    assert (spec.epochs, spec.batch_size, spec.learning_rate) == (2, 8, 5e-5)  # global overrides, then defaults
    bad = FinetuneConfig(
        tasks=["nsmc", "nope", "half", "question_pair"],
        task_specs=[FinetuneTaskConfig(name="half", train_file="t.tsv", labels=["a", "b"], metric="spearman")],
    )
    problems = "\n".join(config_problems(bad))
    assert "unknown task 'nope'" in problems
    assert "'half': dev_file" not in problems and "'half': has no dev_file" in problems
    assert "'half': text_columns is not set" in problems and "metric 'spearman' does not fit" in problems
    assert "'question_pair':" not in problems  # no dev file: scored on the split it has


def test_default_split_never_fails_check_for_a_built_in_and_null_means_no_file():
    builtins = ["nsmc", "korsts", "kornli", "paws", "question_pair", "question_pair_koelectra", "hate_speech"]
    builtins += ["naver_ner", "korquad"]
    for split in ("dev", "test"):
        assert config_problems(FinetuneConfig(tasks=builtins, eval_split=split)) == [], split
    splits = {s.name: s.eval_split for s in resolve_tasks(FinetuneConfig(tasks=builtins))}
    assert splits["naver_ner"] == splits["question_pair"] == "test" and splits["nsmc"] == "dev"
    splits = {s.name: s.eval_split for s in resolve_tasks(FinetuneConfig(tasks=builtins, eval_split="test"))}
    assert splits["hate_speech"] == splits["korquad"] == "dev" and splits["nsmc"] == "test"
    # null: no such file (was ignored); "" the same; unset: the built-in's
    (nsmc,) = resolve_tasks(FinetuneConfig(tasks=["nsmc"], task_specs=[FinetuneTaskConfig(name="nsmc", dev_file=None)]))
    assert nsmc.dev_file is None and nsmc.eval_split == "test" and nsmc.test_file == "ratings_test.txt"
    (nsmc,) = resolve_tasks(FinetuneConfig(tasks=["nsmc"], task_specs=[FinetuneTaskConfig(name="nsmc", dev_file="")]))
    assert nsmc.dev_file is None
    (nsmc,) = resolve_tasks(FinetuneConfig(tasks=["nsmc"], task_specs=[FinetuneTaskConfig(name="nsmc", epochs=1)]))
    assert nsmc.dev_file == "ratings_dev.txt"
    cfg = load_config("configs/tiny.json", ['finetune.task_specs=[{"name": "nsmc", "dev_file": null}]'])
    assert cfg.finetune.task_specs[0].dev_file is None
    # KoELECTRA's Question Pair split is one task name away
    (qp,) = resolve_tasks(FinetuneConfig(tasks=["question_pair_koelectra"]))
    assert (qp.folder, qp.train_file, qp.dev_file, qp.test_file) == (
        "question-pair",
        "train.tsv",
        "dev.tsv",
        "test.tsv",
    )


def test_max_length_comes_from_the_recipe_unless_overridden():
    lengths = {s.name: s.max_length for s in resolve_tasks(FinetuneConfig(tasks=["nsmc", "korquad"]))}
    assert lengths == {"nsmc": 128, "korquad": 512}  # KoELECTRA's
    cfg = FinetuneConfig(
        tasks=["nsmc", "korquad"], max_length=64, task_specs=[FinetuneTaskConfig(name="korquad", max_length=256)]
    )
    assert [s.max_length for s in resolve_tasks(cfg)] == [64, 256]  # a task_specs entry wins over the override
    assert "max_length must be > 0" in "".join(config_problems(FinetuneConfig(tasks=["nsmc"], max_length=0)))


def test_bad_finetune_config_fails_at_load(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"run": {"stages": ["finetune"]}, "finetune": {"tasks": ["nsmc", "korean_sts"]}}))
    with pytest.raises(ConfigError, match=r"finetune.tasks\[1\]: unknown task 'korean_sts'"):
        load_config(path)
    cfg = load_config(path, ['finetune.tasks=["nsmc"]', "finetune.epochs=0.5", "finetune.repeats=2"])
    assert cfg.finetune.epochs == 0.5 and cfg.finetune.repeats == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"train.tsv: empty file \(no header line\)"),
        ("comments\tcontain_gender_bias\tbias\thate\n", r"train.tsv: no data rows after the header"),
        (
            "text\tbias\thate\nabc\tnone\tnone\n",
            r"train.tsv line 1 \(header\): no column 'comments' for task 'hate_speech' \(columns: text, bias, hate\)",
        ),
        (
            "comments\tcontain_gender_bias\tbias\thate\nabc\tFalse\tnone\tnone\nxyz\tFalse\tnone\n",
            r"train.tsv line 3: 3 fields, expected 4 \(missing column 'hate'\)",
        ),
        (
            "comments\tcontain_gender_bias\tbias\thate\nabc\tFalse\tnone\tnone\n\nxyz\tFalse\tnone\tmean\n",
            r"train.tsv line 4: unknown label 'mean' in column 'hate' for task 'hate_speech' \(labels: none, offensive, hate\)",
        ),
    ],
)
def test_bad_task_files_name_file_and_line(tmp_path, text, message):
    (tmp_path / "hate-speech").mkdir()
    (tmp_path / "hate-speech" / "train.tsv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_split(str(tmp_path), BUILTIN_TASKS["hate_speech"], "train")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("철수 는 서울 에\tPER-B O LOC-B\n", r"train.tsv line 2: 4 words in column 'sentence' but 3 tags in 'tags'"),
        ("철수 는\tPER-B B-LOC\n", r"train.tsv line 2: unknown tag 'B-LOC' in column 'tags' for task 'naver_ner'"),
    ],
)
def test_bad_tagging_rows_name_file_and_line(tmp_path, row, message):
    (tmp_path / "naver-ner").mkdir()
    (tmp_path / "naver-ner" / "train.tsv").write_text("영희 가\tPER-B O\n" + row, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_split(str(tmp_path), BUILTIN_TASKS["naver_ner"], "train")


def test_tagging_specs_need_an_outside_tag_and_one_text_column():
    spec = FinetuneTaskConfig(
        name="tags",
        train_file="t.tsv",
        dev_file="d.tsv",
        text_columns=["a", "b"],
        label_column="tags",
        labels=["B-X", "I-X"],
        metric="entity_f1",
    )
    problems = "\n".join(config_problems(FinetuneConfig(tasks=["tags"], task_specs=[spec])))
    assert 'needs the outside tag "O"' in problems and "tags one text column" in problems
    assert config_problems(FinetuneConfig(tasks=["naver_ner"], eval_split="test")) == []
    assert config_problems(FinetuneConfig(tasks=["korquad"])) == []  # SQuAD JSON: no columns needed


KORQUAD = {
    "version": "KorQuAD_v1.0",
    "data": [
        {
            "title": "교향곡",
            "paragraphs": [
                {
                    "context": "1839년 한 작곡가가 오래된 희곡을 읽고 그 이야기로 교향곡을 쓰기로 했다.",
                    "qas": [
                        {
                            "id": "q-0",
                            "question": "작곡가는 무엇을 쓰기로 했는가?",
                            "answers": [{"text": "교향곡", "answer_start": 31}],
                        },
                        {
                            "id": "q-1",
                            "question": "작곡가가 희곡을 읽은 해는?",
                            "answers": [{"text": "1839년", "answer_start": 0}, {"text": "1839", "answer_start": 0}],
                        },
                    ],
                }
            ],
        }
    ],
}


def test_korquad_json_parses_with_every_answer(tmp_path):
    (tmp_path / "korquad").mkdir()
    (tmp_path / "korquad" / "KorQuAD_v1.0_train.json").write_text(json.dumps(KORQUAD, ensure_ascii=False))
    (spec,) = resolve_tasks(FinetuneConfig(tasks=["korquad"]))
    data = read_split(str(tmp_path), spec, "train")
    assert data.text_a[1] == "작곡가가 희곡을 읽은 해는?" and data.text_b[0].startswith("1839년 한 작곡가가")
    assert [[a.text for a in answers] for answers in data.labels] == [["교향곡"], ["1839년", "1839"]]
    assert len(read_split(str(tmp_path), spec, "train", limit=1)) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"KorQuAD_v1.0_train.json line 1: not SQuAD JSON"),
        ('{"version": 1}', r'KorQuAD_v1.0_train.json: no "data" list'),
        ('{"data": [["a list"]]}', r"KorQuAD_v1.0_train.json: not SQuAD v1.1 JSON"),
        ('{"data": []}', r"KorQuAD_v1.0_train.json: no questions"),
        (
            json.dumps(KORQUAD).replace('"answer_start": 31', '"answer_start": 20'),
            r"KorQuAD_v1.0_train.json data\[0\].paragraphs\[0\].qas\[0\] \(id 'q-0'\): answer '교향곡' is not "
            r"at answer_start 20",
        ),
    ],
)
def test_bad_korquad_files_name_file_and_entry(tmp_path, text, message):
    (tmp_path / "korquad").mkdir()
    (tmp_path / "korquad" / "KorQuAD_v1.0_train.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_split(str(tmp_path), BUILTIN_TASKS["korquad"], "train")


def test_bad_score_and_missing_file(tmp_path):
    (tmp_path / "korsts").mkdir()
    (tmp_path / "korsts" / "sts-train.tsv").write_text(
        "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\nnews\tf\t2012\t1\tfive\ta\tb\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"sts-train.tsv line 2: score 'five' is not a number"):
        read_split(str(tmp_path), BUILTIN_TASKS["korsts"], "train")
    with pytest.raises(DataError, match=r"sts-dev.tsv: not found; task 'korsts' expects its dev file there"):
        read_split(str(tmp_path), BUILTIN_TASKS["korsts"], "dev")


@pytest.mark.slow  # a moto S3 server
def test_reads_from_s3(s3_bucket):
    file, text, first_texts, labels = SAMPLES["kornli"]
    storage.write_bytes(f"{s3_bucket}/tasks/kornli/{file}", text.encode("utf-8"))
    data = read_split(f"{s3_bucket}/tasks", BUILTIN_TASKS["kornli"], "train", limit=2)
    assert data.text_a == first_texts and data.labels == labels[:2]


def test_metrics_exact():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    # Per class F1: class 0: tp2 fp1 fn0 -> 0.8; class 1: tp1 fp0 fn2 -> 0.5; class 2 only predicted -> 0.
    assert macro_f1([0, 0, 1, 1, 1], [0, 0, 0, 1, 2]) == pytest.approx((0.8 + 0.5 + 0) / 3)
    # Matthews correlation (CoLA): (tp*tn - fp*fn) / sqrt(...) = (2*1 - 1*0) / sqrt(3*2*2*1); constant predictions: 0
    assert matthews([1, 1, 0, 0], [1, 1, 1, 0]) == pytest.approx(2 / math.sqrt(12))
    assert matthews([1, 0, 1], [1, 1, 1]) == 0.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # With ties: ranks x = [1.5, 1.5, 3, 4], y = [1, 2, 3, 4]; Pearson of those = 0.9486832980505138 (scipy).
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    with pytest.raises(DataError):
        accuracy([], [])


def test_each_task_is_scored_by_its_papers_metric():
    """Which function makes the number: KorSTS's score is Spearman's rank correlation (a monotone but
    curved prediction scores 1.0; Pearson would give 0.94), classification is accuracy."""
    from koelectra_dist.finetune.data import TaskData
    from koelectra_dist.finetune.heads import head_for

    specs = {s.name: s for s in resolve_tasks(FinetuneConfig(tasks=["korsts", "nsmc", "kornli"]))}
    gold, curved = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 8.0, 27.0, 64.0, 125.0]
    sts = head_for(specs["korsts"])
    score, _ = sts.score(TaskData("sts-dev.tsv", ["a"] * 6, ["b"] * 6, gold), None, curved)
    assert score == pytest.approx(1.0) and pearson(gold, curved) < 0.95
    for name in ("nsmc", "kornli"):
        head = head_for(specs[name])
        score, _ = head.score(TaskData("dev", ["a"] * 4, None, [0, 1, 1, 0]), None, [0, 1, 0, 0])
        assert score == 0.75, name


def test_fine_tuning_decays_linearly_to_zero_without_warmup():
    """KoELECTRA's fine-tuning schedule, the pure function the trainer sets each step's lr from."""
    from koelectra_dist.finetune.trainer import lr_at, total_steps

    assert [lr_at(s, 4, 1.0) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_at(0, 1000, 5e-5) == 5e-5 and lr_at(999, 1000, 5e-5) == pytest.approx(5e-8)
    assert lr_at(1200, 1000, 5e-5) == 0.0  # never negative
    assert total_steps(100, 32, 3) == 12 and total_steps(100, 32, 0.5) == 2 and total_steps(1, 32, 0.01) == 1


def test_korquad_metrics_follow_the_official_script():
    assert normalize_answer(' "대한민국"의  (수도), Seoul! ') == "대한민국 의 수도 seoul"
    # character F1 without spaces: "서울" vs "서울 특별시" -> 2 common of 2 and 5 characters
    assert korquad_f1([["서울 특별시"]], ["서울"]) == pytest.approx(2 * 2 / (2 + 5))
    assert korquad_f1([["서울 특별시", "서울"]], ["서울"]) == 1.0  # the best answer counts
    assert exact_match([["1839년", "1839"]], ["1839"]) == 1.0 and exact_match([["교향곡"]], ["교향"]) == 0.0
    assert korquad_f1([["교향곡"]], [""]) == 0.0


def test_entity_f1_reads_bio_spans_like_seqeval():
    # Naver NER's "TYPE-B" spelling and the usual "B-TYPE" score alike; an I- tag after O or after
    # another type starts an entity (conlleval's reading, seqeval's default mode).
    naver = [["PER-B", "PER-I", "O", "LOC-B", "ORG-B", "ORG-I"]]
    usual = [["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG"]]
    assert entity_f1(naver, usual) == 1.0
    assert entity_f1([["O", "I-PER", "I-PER", "I-LOC"]], [["O", "B-PER", "I-PER", "B-LOC"]]) == 1.0
    gold = [["PER-B", "PER-I", "O", "LOC-B"], ["ORG-B", "ORG-I", "O"]]
    pred = [["PER-B", "O", "O", "LOC-B"], ["ORG-B", "ORG-I", "ORG-I"]]
    assert entity_f1(gold, pred) == pytest.approx(2 * 1 / (3 + 3))  # only LOC matches span and type
    assert entity_f1(gold, gold) == 1.0 and entity_f1([["O"]], [["O"]]) == 0.0
    with pytest.raises(DataError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_f1([["O", "O"]], [["O"]])


def test_results_table():
    run = {"metric": "accuracy", "train_examples": 1000, "eval_examples": 500, "epochs": 1.0, "batch_size": 32}
    run |= {"eval_split": "dev", "eval_file": "s3://b/tasks/nsmc/ratings_dev.txt", "selection": None}
    runs = [
        {**run, "task": "nsmc", "seed": 42, "score": 80.0, "learning_rate": 5e-5},
        {**run, "task": "nsmc", "seed": 43, "score": 82.0, "learning_rate": 5e-5},
        {**run, "task": "korsts", "seed": 42, "score": math.nan, "metric": "spearman", "learning_rate": 5e-5},
    ]
    tasks = summarize(runs)
    assert tasks["nsmc"]["mean"] == 81.0 and tasks["nsmc"]["std"] == pytest.approx(math.sqrt(2))
    assert tasks["korsts"]["mean"] is None and tasks["korsts"]["runs"][0]["score"] is None
    table = markdown(tasks, "hf/discriminator")
    assert (
        "| nsmc | accuracy | 81.00 ± 1.41 | dev (`ratings_dev.txt`) | 42, 43 | 1,000 / 500 | 1 / 32 / 5e-05 |" in table
    )
    assert "| korsts | spearman | undefined |" in table
    json.dumps(tasks, allow_nan=False)


def test_a_cola_style_task_is_one_spec_away(tmp_path):
    """Korean CoLA-style acceptability: a sentence, a 0/1 label, Matthews correlation."""
    spec = FinetuneTaskConfig(
        name="kocola",
        train_file="train.tsv",
        dev_file="dev.tsv",
        text_columns=["sentence"],
        label_column="label",
        labels=["0", "1"],
        metric="matthews",
    )
    cfg = FinetuneConfig(tasks=["kocola"], task_specs=[spec], data_dir=str(tmp_path))
    assert config_problems(cfg) == []
    (task,) = resolve_tasks(cfg)
    (tmp_path / "kocola").mkdir()
    (tmp_path / "kocola" / "dev.tsv").write_text("sentence\tlabel\n철수가 밥을 먹었다.\t1\n밥을 철수가 먹었다를.\t0\n")
    data = read_split(str(tmp_path), task, "dev")
    assert data.labels == [1, 0] and METRICS[task.metric](data.labels, [1, 1]) == 0.0
    assert METRICS[task.metric](data.labels, [1, 0]) == 1.0
