"""Fine-tuning on a real Hugging Face ELECTRA folder (tiny ElectraForPreTraining + a WordPiece
vocabulary trained here), in process and as the pipeline stage on Ray with S3."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from helpers import SENTIMENT_SPEC, require_shared_data

from koelectra_dist import storage
from koelectra_dist.config import config_from_dict
from koelectra_dist.errors import DataError
from koelectra_dist.finetune import stage
from koelectra_dist.finetune.config import FinetuneConfig, resolve_tasks
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.heads import head_for, tag_names, word_tags
from koelectra_dist.finetune.trainer import finetune, load_model, lr_at, predict, total_steps

FILLERS = "영화 배우 연기 스토리 정말 너무 이 그 음악 감독 장면 결말".split()
SENTIMENT = {"좋다": "1", "최고": "1", "재밌다": "1", "싫다": "0", "최악": "0", "지루하다": "0"}
SCORES = {"하나": 1.0, "둘": 2.0, "셋": 3.0, "넷": 4.0, "다섯": 5.0}
ENTITIES = {"대한민국": ["LOC-B"], "국회 의장": ["ORG-B", "ORG-I"], "대통령": ["PER-B"]}


def _sentence(rng: random.Random, key: str) -> str:
    words = rng.choices(FILLERS, k=rng.randint(3, 6))
    words.insert(rng.randint(0, len(words)), key)
    return " ".join(words)


def write_tasks(folder, n_train: int = 400, n_dev: int = 200) -> None:
    """A sentiment task (NSMC layout) and a similarity-score task (KorSTS layout) a model can learn."""
    rng = random.Random(0)
    for split, n in [("train", n_train), ("dev", n_dev)]:
        rows = ["id\tdocument\tlabel"]
        for i in range(n):
            key = rng.choice(list(SENTIMENT))
            rows.append(f"{i}\t{_sentence(rng, key)}\t{SENTIMENT[key]}")
        (folder / "sentiment").mkdir(parents=True, exist_ok=True)
        (folder / "sentiment" / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
        rows = ["genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2"]
        for i in range(n):
            key = rng.choice(list(SCORES))
            rows.append(f"news\tf\t2017\t{i}\t{SCORES[key]:.3f}\t{_sentence(rng, key)}\t{_sentence(rng, '그리고')}")
        (folder / "korsts").mkdir(parents=True, exist_ok=True)
        (folder / "korsts" / f"sts-{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


CITIES = ["서울", "부산", "대구", "인천", "광주", "대전"]


def write_span_task(folder, n_train: int = 300, n_dev: int = 100) -> None:
    """KorQuAD-layout JSON whose answer (a city) a model can find; contexts run past one window at
    max length 32."""
    rng = random.Random(0)
    (folder / "korquad").mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("dev", n_dev)]:
        paragraphs = []
        for i in range(n):
            before, after = " ".join(rng.choices(FILLERS, k=rng.randint(2, 30))), " ".join(rng.choices(FILLERS, k=8))
            city = rng.choice(CITIES)
            context = f"{before} {city} {after}"
            qa = {
                "id": f"{split}-{i}",
                "question": "어디 ?",
                "answers": [{"text": city, "answer_start": len(before) + 1}],
            }
            paragraphs.append({"context": context, "qas": [qa]})
        document = {"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": paragraphs}]}
        (folder / "korquad" / f"KorQuAD_v1.0_{split}.json").write_text(json.dumps(document, ensure_ascii=False))


def write_tagging_task(folder, n_train: int = 300, n_dev: int = 100) -> None:
    """A Naver NER layout task (words<TAB>tags, no header) whose entities a model can learn."""
    rng = random.Random(0)
    (folder / "naver-ner").mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("test", n_dev)]:
        rows = []
        for _ in range(n):
            words, tags = [], []
            for _ in range(rng.randint(4, 8)):
                if rng.random() < 0.3:
                    entity = rng.choice(list(ENTITIES))
                    words += entity.split()
                    tags += ENTITIES[entity]
                else:
                    words.append(rng.choice(FILLERS))
                    tags.append("O")
            rows.append(f"{' '.join(words)}\t{' '.join(tags)}")
        (folder / "naver-ner" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A real HF ELECTRA discriminator folder: ElectraForPreTraining + WordPiece vocabulary."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import ElectraConfig, ElectraForPreTraining

    folder = tmp_path_factory.mktemp("hf") / "discriminator"
    folder.mkdir()
    text = storage.read_bytes("pkg://konlpy/data/corpus/kolaw/constitution.txt").decode("utf-8").splitlines()
    rng = random.Random(1)
    text += [_sentence(rng, k) for k in [*SENTIMENT, *SCORES, "그리고"] for _ in range(5)]
    tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    tokenizer.train_from_iterator(
        text, vocab_size=800, min_frequency=1, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tokenizer.save_model(str(folder))
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"do_lower_case": False, "model_max_length": 128, "tokenizer_class": "ElectraTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    electra = ElectraConfig(
        vocab_size=tokenizer.get_vocab_size(),
        embedding_size=32,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    ElectraForPreTraining(electra).save_pretrained(folder)
    return folder


def test_lr_schedule_and_steps():
    assert [lr_at(s, 4, 1.0) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert total_steps(100, 32, 1) == 4 and total_steps(100, 32, 0.5) == 2 and total_steps(1, 32, 0.01) == 1


def test_loads_discriminator_encoder_and_drops_pretraining_head(hf_folder):
    from transformers import ElectraForPreTraining, ElectraForSequenceClassification

    (korsts,) = resolve_tasks(FinetuneConfig(tasks=["korsts"]))
    tokenizer, model = load_model(str(hf_folder), head_for(korsts))
    pretrained = ElectraForPreTraining.from_pretrained(hf_folder)
    assert isinstance(model, ElectraForSequenceClassification) and model.config.num_labels == 1
    assert model.config.problem_type == "regression"
    torch.testing.assert_close(model.electra.state_dict(), pretrained.electra.state_dict())
    pieces = tokenizer.tokenize("대한민국 헌법 영화 좋다")
    assert "".join(p.removeprefix("##") for p in pieces) == "대한민국헌법영화좋다"  # Hangul not split into jamo


def test_finetune_learns_classification_and_regression(tmp_path, hf_folder):
    write_tasks(tmp_path)
    cfg = FinetuneConfig(
        tasks=["sentiment", "korsts"], task_specs=[SENTIMENT_SPEC], epochs=10, learning_rate=1e-3, max_length=32
    )
    results = []
    for spec in resolve_tasks(cfg):
        train, dev = read_split(str(tmp_path), spec, "train"), read_split(str(tmp_path), spec, "dev")
        results.append(finetune(str(hf_folder), spec, train, dev, seed=42))
    sentiment, sts = results
    assert sentiment["metric"] == "accuracy" and sentiment["score"] >= 90, sentiment
    assert sts["metric"] == "spearman" and sts["score"] >= 80, sts
    assert sentiment["steps"] == 10 * 13 and sentiment["device"] == "cpu" and sentiment["max_length"] == 32
    saved = tmp_path / "saved"
    again = finetune(str(hf_folder), spec, train, dev, seed=42, save_dir=str(saved))
    assert again["score"] == sts["score"]  # the seed fixes initialisation and data order
    # the scored model is saved as a Hugging Face folder that scores the same when loaded back
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in saved.iterdir()}
    head = head_for(spec)
    tokenizer, reloaded = load_model(str(saved), head)
    enc = head.encode(tokenizer, dev, again["max_length"])
    score, _ = head.score(dev, enc, predict(reloaded, head, enc, tokenizer.pad_token_id, torch.device("cpu")))
    assert 100 * score == pytest.approx(again["score"])
    # test scored once, with the epoch that scored best on dev
    selected = finetune(str(hf_folder), dataclasses.replace(spec, epochs=3), train, dev, seed=42, test=dev)
    assert selected["selection"]["on"] == dev.uri and 1 <= selected["selection"]["best_epoch"] <= 3
    assert selected["score"] == pytest.approx(selected["selection"]["dev_score"])  # same file: same score
    assert selected["precision"] == "fp32"
    longer = finetune(str(hf_folder), dataclasses.replace(spec, max_length=512, epochs=0.1), train, dev, seed=42)
    assert longer["max_length"] == 128  # cut to the model's positions


def test_finetune_learns_word_tagging(tmp_path, hf_folder):
    from transformers import ElectraForTokenClassification

    write_tagging_task(tmp_path)
    cfg = FinetuneConfig(tasks=["naver_ner"], eval_split="test", epochs=10, learning_rate=1e-3, max_length=32)
    (spec,) = resolve_tasks(cfg)
    _, model = load_model(str(hf_folder), head_for(spec))
    assert isinstance(model, ElectraForTokenClassification) and model.config.num_labels == 29
    train, test = read_split(str(tmp_path), spec, "train"), read_split(str(tmp_path), spec, "test")
    result = finetune(str(hf_folder), spec, train, test, seed=42)
    assert result["metric"] == "entity_f1" and result["score"] >= 90, result


def test_finetune_learns_span_extraction_over_windows(tmp_path, hf_folder):
    from transformers import ElectraForQuestionAnswering

    write_span_task(tmp_path)
    (spec,) = resolve_tasks(
        FinetuneConfig(tasks=["korquad"], epochs=10, batch_size=32, learning_rate=1e-3, max_length=32)
    )
    _, model = load_model(str(hf_folder), head_for(spec))
    assert isinstance(model, ElectraForQuestionAnswering)
    train, dev = read_split(str(tmp_path), spec, "train"), read_split(str(tmp_path), spec, "dev")
    result = finetune(str(hf_folder), spec, train, dev, seed=42)
    assert result["train_windows"] > len(train)  # long contexts were split into overlapping windows
    assert result["metric"] == "korquad_f1" and result["score"] >= 80 and result["exact_match"] >= 70, result


def test_long_questions_are_cut_and_answers_outside_a_window_point_at_cls(hf_folder):
    from transformers import AutoTokenizer

    from koelectra_dist.finetune.spans import Answer, encode_windows

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    context = " ".join(FILLERS * 3) + " 서울"
    windows = encode_windows(tokenizer, [" ".join(FILLERS * 5)], [context], [[Answer(len(context) - 2, "서울")]], 32)
    assert len(windows.input_ids) > 2 and all(len(ids) <= 32 for ids in windows.input_ids)
    *others, last = windows.labels
    assert all(label == [0, 0] for label in others)  # the answer is in the last window only
    start, end = last
    assert windows.offsets[-1][start] == (len(context) - 2, len(context)) and start == end


def test_tags_are_read_on_first_sub_words_and_unseen_words_are_outside():
    # tokens: [CLS] w0 w0 w1 [SEP] (padding after): w0 is read on its first piece, w1 on its only one
    assert word_tags([None, 0, 0, 1, None], [5, 1, 2, 3, 4, 4, 4]) == [1, 3]
    (spec,) = resolve_tasks(FinetuneConfig(tasks=["naver_ner"], eval_split="test"))
    gold, predicted = tag_names(spec, [[1, 2, 0, 9]], [[1, None]])  # word 1 had no piece; 2-3 cut off
    assert gold == [["PER-B", "PER-I", "O", "LOC-B"]] and predicted == [["PER-B", "O", "O", "O"]]


def test_stage_rejects_a_missing_model_folder(tmp_path):
    cfg = config_from_dict({"run": {"output_uri": str(tmp_path), "stages": ["finetune"]}})
    with pytest.raises(DataError, match=r"hf/discriminator: not a Hugging Face ELECTRA/BERT folder .*run the export"):
        stage.run(cfg)


@pytest.mark.slow
def test_launch_finetune_on_ray_with_s3(tmp_path, hf_folder, ray_local, s3_bucket):
    """`launch.py --config C finetune`: model on S3, four tasks (classification, regression, tagging,
    spans) and two seeds in parallel Ray tasks, results on S3."""
    from launch import main

    write_tasks(tmp_path, n_train=200, n_dev=100)
    write_tagging_task(tmp_path, n_train=200, n_dev=100)
    write_span_task(tmp_path, n_train=200, n_dev=100)
    storage.upload_dir(str(hf_folder), f"{s3_bucket}/hf/discriminator")
    config = {
        "run": {"output_uri": f"{s3_bucket}/run"},
        "export": {"output_uri": f"{s3_bucket}/hf"},
        "finetune": {
            "tasks": ["sentiment", "korsts", "naver_ner", "korquad"],
            "data_dir": str(tmp_path),
            "task_specs": [
                {k: v for k, v in vars(SENTIMENT_SPEC).items() if v is not None},
                {"name": "naver_ner", "dev_file": "test.tsv"},  # its layout has no dev split
            ],
            "repeats": 2,
            "max_train_examples": 100,
            "max_length": 32,
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["--config", str(path), "--set", "finetune.epochs=1", "finetune"]) == 0
    results = storage.read_json(f"{s3_bucket}/run/finetune/results.json")
    assert results["model"] == f"{s3_bucket}/hf/discriminator"
    assert list(results["tasks"]) == ["sentiment", "korsts", "naver_ner", "korquad"]
    for name, entry in results["tasks"].items():
        assert [r["seed"] for r in entry["runs"]] == [42, 43]
        assert all(r["train_examples"] == 100 and r["eval_examples"] == 100 for r in entry["runs"])
        steps = -(-entry["runs"][0]["train_windows"] // 32) if name == "korquad" else 4  # korquad: batch 32, windows
        assert all(r["steps"] == steps for r in entry["runs"])
        assert storage.exists(f"{s3_bucket}/run/finetune/models/{name}-seed43/model.safetensors")
    # a 64-wide model gets KoELECTRA's Small recipes (KorQuAD batch 32), and the run says why
    assert results["recipe"]["size"] == "small" and "hidden_size 64" in results["recipe"]["why"]
    table = storage.read_bytes(f"{s3_bucket}/run/finetune/results.md").decode("utf-8")
    assert "| korsts | spearman |" in table and "| 42, 43 | 100 / 100 | 1 / 32 / 5e-05 |" in table
    assert "| naver_ner | entity_f1 |" in table and "| korquad | korquad_f1 |" in table


@pytest.mark.slow
def test_nsmc_on_e9t_files_as_published_scores_test(tmp_path, hf_folder, ray_local):
    """e9t/nsmc publishes ratings_train.txt and ratings_test.txt, no dev file: the built-in task
    with eval_split test runs on those two files and reports test accuracy of the final epoch."""
    from launch import main

    (tmp_path / "nsmc").mkdir()
    for source, name in [("ratings_train.txt", "ratings_train.txt"), ("ratings_dev.txt", "ratings_test.txt")]:
        lines = require_shared_data("nsmc", source).read_text(encoding="utf-8").splitlines()[:201]
        (tmp_path / "nsmc" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "run": {"output_uri": str(tmp_path / "run"), "stages": ["finetune"]},
        "finetune": {"model_uri": str(hf_folder), "tasks": ["nsmc"], "data_dir": str(tmp_path), "eval_split": "test"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["--config", str(path), "--set", "finetune.epochs=1", "--set", "finetune.max_length=32"]) == 0
    results = storage.read_json(str(tmp_path / "run" / "finetune" / "results.json"))
    (run,) = results["tasks"]["nsmc"]["runs"]
    assert run["eval_split"] == "test" and run["eval_file"].endswith("nsmc/ratings_test.txt")
    assert run["eval_examples"] == 200 and run["scored_epoch"] == "final" and run["selection"] is None
    assert 0 <= run["score"] <= 100 and run["metric"] == "accuracy"
    table = (tmp_path / "run" / "finetune" / "results.md").read_text()
    assert "| nsmc | accuracy |" in table and "test (`ratings_test.txt`), final epoch (no dev file)" in table
