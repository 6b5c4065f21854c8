"""A teacher with its own tokenizer, end to end: a KoBERT-style SentencePiece tokenizer ([UNK]=0,
[PAD]=1, trained here) and a tiny BertForMaskedLM teacher on its vocabulary; the corpus stage builds
shards with that tokenizer (recorded in the manifest), the distill stage distils the teacher into a
student that exports, loads with transformers' Auto classes and fine-tunes."""

from __future__ import annotations

import random
import shutil

import pytest
from helpers import SENTIMENT_SPEC, korean_lines, tiny_config, write_kobert_folder
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM

from koelectra_dist import hf_tokenizer
from koelectra_dist.corpus import stage as corpus
from koelectra_dist.corpus.shards import check_vocab, read_manifest
from koelectra_dist.distill import stage as distill
from koelectra_dist.finetune.config import FinetuneConfig, resolve_tasks
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.trainer import finetune
from koelectra_dist.pretrain.data import open_shards, read_shard
from koelectra_dist.tokens import SpecialIds

pytest.importorskip("sentencepiece", reason="sentencepiece trains the test's KoBERT-style model")

KOBERT_IDS = SpecialIds(pad=1, unk=0, cls=2, sep=3, mask=4)


@pytest.fixture(scope="module")
def teacher_run(ray_local, tmp_path_factory):
    """A KoBERT-style teacher folder (tiny BertForMaskedLM, pad_token_id=1, with KoBERT's tokenizer
    files) and the corpus stage run with its tokenizer."""
    root = tmp_path_factory.mktemp("teacher")
    tokenizer = write_kobert_folder(root / "tokenizer")
    size = len((tokenizer / "vocab.txt").read_text().splitlines())
    teacher = root / "teacher"
    config = BertConfig(
        vocab_size=size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=KOBERT_IDS.pad,
    )
    BertForMaskedLM(config).save_pretrained(teacher)
    for f in tokenizer.iterdir():
        shutil.copy(f, teacher / f.name)
    cfg = tiny_config(
        str(root / "run"),
        f"corpus.tokenizer_uri={teacher}",
        f"model.vocab_size={size}",
        f"distill.teacher_uri={teacher}",
        "distill.layers=[0,2]",
        "distill.steps=4",
        "distill.warmup_steps=0",
        "distill.learning_rate=0.003",
        "checkpoint.interval_steps=4",
    )
    return root, teacher, cfg, corpus.run(cfg)


def sentiment_task(folder):
    """A small sentiment task (NSMC layout) in `folder`: its resolved spec, train and dev data."""
    rng = random.Random(0)
    words = ["대한민국", "국민", "법률", "헌법", "국회", "정부"]
    for split, n in [("train", 48), ("dev", 16)]:
        lines = ["id\tdocument\tlabel"]
        for i in range(n):
            label = rng.choice("01")
            key = "좋다" if label == "1" else "싫다"
            lines.append(f"{i}\t{' '.join(rng.choices(words, k=4))} {key}\t{label}")
        (folder / "sentiment").mkdir(exist_ok=True)
        (folder / "sentiment" / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (spec,) = resolve_tasks(
        FinetuneConfig(tasks=["sentiment"], task_specs=[SENTIMENT_SPEC], epochs=1, learning_rate=1e-3, max_length=32)
    )
    return spec, read_split(str(folder), spec, "train"), read_split(str(folder), spec, "dev")


def test_corpus_builds_shards_with_the_teachers_tokenizer(teacher_run):
    root, teacher, cfg, report = teacher_run
    assert not report["skipped"]
    manifest = read_manifest(cfg.paths.corpus_shards)
    recorded = manifest.tokenizer
    assert recorded["uri"] == str(teacher) and recorded["sha256"] == hf_tokenizer.files_sha256(str(teacher))
    assert recorded["special_ids"] == {"pad": 1, "unk": 0, "cls": 2, "sep": 3, "mask": 4}
    assert recorded["vocab_size"] == manifest.vocab_size == cfg.model.vocab_size and recorded["model"] == "Unigram"
    assert manifest.special_ids == KOBERT_IDS
    # vocab/ is the tokenizer as a standard folder, its vocab.txt KoBERT's order
    check_vocab(manifest, cfg.paths.vocab)
    assert (root / "run" / "corpus" / "vocab" / "vocab.txt").read_text() == (teacher / "vocab.txt").read_text()
    loaded = AutoTokenizer.from_pretrained(cfg.paths.vocab)
    # rows: [CLS]=2 ... [SEP]=3, no [PAD]=1 inside; the first row starts with the corpus's first line
    shards = open_shards(cfg)
    shard = read_shard(shards.uris[0])
    rows = [shard.row(r)[0].tolist() for r in range(len(shard.offsets) - 1)]
    assert all(r[0] == KOBERT_IDS.cls and r[-1] == KOBERT_IDS.sep and KOBERT_IDS.pad not in r for r in rows)
    first = loaded(korean_lines()[0], add_special_tokens=False)["input_ids"]
    assert rows[0][1 : 1 + len(first)] == first
    assert manifest.packing["unk_tokens"] < manifest.packing["tokens"] // 100
    # a rerun with the same tokenizer and inputs skips
    assert corpus.run(cfg)["skipped"]


def test_kobert_teacher_distils_exports_loads_and_fine_tunes(teacher_run, tmp_path):
    _, teacher, cfg, _ = teacher_run
    report = distill.run(cfg)
    assert report["steps"] == 4 and report["layers"] == [0, 2]
    model_dir = report["model"]
    model = AutoModel.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2 and model.config.pad_token_id == KOBERT_IDS.pad
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # converted: no KoBertTokenizer, no remote code
    assert SpecialIds.from_tokenizer(tokenizer) == KOBERT_IDS
    text = korean_lines()[5]
    teacher_tok = hf_tokenizer.load_tokenizer(str(teacher), "test")
    assert tokenizer(text)["input_ids"] == teacher_tok(text)["input_ids"]

    # fine-tunes a few steps on a sentiment task, through the finetune stage's trainer
    spec, train, dev = sentiment_task(tmp_path)
    saved = tmp_path / "saved"
    result = finetune(model_dir, spec, train, dev, seed=1, save_dir=str(saved))
    assert result["steps"] > 0 and 0 <= result["score"] <= 100
    assert AutoTokenizer.from_pretrained(str(saved)).pad_token_id == KOBERT_IDS.pad


def test_kobert_teacher_distils_into_a_distilbert_student(teacher_run, tmp_path):
    """DistilKoBERT's shape: a DistilBertForMaskedLM student of the [PAD]=1 teacher, loadable by
    DistilBertModel and AutoTokenizer with the teacher's ids."""
    from transformers import DistilBertModel

    root, teacher, cfg, _ = teacher_run
    cfg = tiny_config(
        str(root / "run"),
        f"corpus.tokenizer_uri={teacher}",
        f"model.vocab_size={cfg.model.vocab_size}",
        f"distill.teacher_uri={teacher}",
        "distill.student=distilbert",
        "distill.layers=[0,2]",
        "distill.steps=2",
        "distill.warmup_steps=0",
        f"distill.output_uri={tmp_path / 'distill'}",
    )
    report = distill.run(cfg)
    model = DistilBertModel.from_pretrained(report["model"])
    assert model.config.n_layers == 2 and model.config.pad_token_id == KOBERT_IDS.pad
    tokenizer = AutoTokenizer.from_pretrained(report["model"])
    assert SpecialIds.from_tokenizer(tokenizer) == KOBERT_IDS
    text = korean_lines()[9]
    assert tokenizer(text)["input_ids"] == hf_tokenizer.load_tokenizer(str(teacher), "test")(text)["input_ids"]


def test_a_kobert_folder_fine_tunes_as_published(teacher_run, tmp_path):
    """The teacher folder itself (KoBertTokenizer's files, no tokenizer.json): fine-tuning loads it
    without code from the Hub (scored as a baseline) and saves a folder AutoTokenizer loads."""
    _, teacher, _, _ = teacher_run
    spec, train, dev = sentiment_task(tmp_path)
    saved = tmp_path / "saved"
    result = finetune(str(teacher), spec, train, dev, seed=1, save_dir=str(saved))
    assert result["steps"] > 0
    text = korean_lines()[11]
    reloaded = AutoTokenizer.from_pretrained(str(saved))
    assert reloaded(text)["input_ids"] == hf_tokenizer.load_tokenizer(str(teacher), "test")(text)["input_ids"]
