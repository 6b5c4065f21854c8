"""The corpus stage end to end on a local Ray: launch.py, manifest, skip/rebuild, S3, bad inputs."""

from __future__ import annotations

import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT

import launch
from koelectra_dist import storage
from koelectra_dist.config import Config, config_from_dict
from koelectra_dist.corpus import stage
from koelectra_dist.corpus.shards import check_vocab, read_manifest, vocab_sha256
from koelectra_dist.errors import DataError
from koelectra_dist.tokens import CLS_ID, SEP_ID

pytestmark = pytest.mark.slow

KOLAW = "pkg://konlpy/data/corpus/kolaw"


def make_cfg(output_uri: str, **corpus) -> Config:
    data = json.loads((ROOT / "configs" / "tiny.json").read_text())
    data["run"]["output_uri"] = output_uri
    data["corpus"].update(corpus)
    return config_from_dict(data)


def read_rows(shards_uri: str) -> pa.Table:
    manifest = read_manifest(shards_uri)
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(storage.join(shards_uri, s.path)))) for s in manifest.shards]
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def tiny_run(ray_local, tmp_path_factory):
    """`python launch.py --config configs/tiny.json corpus` into a temporary output."""
    out = tmp_path_factory.mktemp("tiny")
    assert launch.main(["--config", str(ROOT / "configs/tiny.json"), "--set", f"run.output_uri={out}", "corpus"]) == 0
    return out / "corpus"


def test_launch_writes_vocab_and_shards(tiny_run):
    from transformers import ElectraTokenizerFast

    manifest = read_manifest(str(tiny_run / "shards"))
    assert manifest.vocab_size == 1000 and manifest.id_dtype == "uint16" and manifest.max_length == 64
    assert manifest.vocab_sha256 == vocab_sha256(str(tiny_run / "vocab"))
    assert manifest.cleaning["lines_kept"] > 300 and manifest.cleaning["files"] == 1
    table = read_rows(str(tiny_run / "shards"))
    assert table.schema.field("input_ids").type == pa.list_(pa.uint16())
    assert table.schema.field("token_type_ids").type == pa.list_(pa.uint8())
    assert table.num_rows == manifest.total_rows == sum(s.rows for s in manifest.shards)
    rows = table.column("input_ids").to_pylist()
    assert sum(map(len, rows)) == manifest.total_tokens
    assert all(r[0] == CLS_ID and r[-1] == SEP_ID and len(r) <= 64 for r in rows)
    assert all(s.rows == 100 for s in manifest.shards[:-1])
    tokenizer = ElectraTokenizerFast.from_pretrained(str(tiny_run / "vocab"))
    assert "대한민국" in tokenizer.decode(rows[0]).replace(" ", "")


def test_rerun_skips_and_partial_output_is_rebuilt(tiny_run):
    cfg = make_cfg(str(tiny_run.parent))
    before = read_rows(str(tiny_run / "shards"))
    assert stage.run(cfg)["skipped"] is True
    (tiny_run / "shards" / "manifest.json").unlink()  # as if the stage died before finishing
    (tiny_run / "shards" / "part-00099.parquet").write_bytes(b"junk")
    with pytest.raises(DataError, match="has not finished"):
        read_manifest(str(tiny_run / "shards"))
    report = stage.run(cfg)
    assert report["skipped"] is False
    assert not (tiny_run / "shards" / "part-00099.parquet").exists()
    assert read_rows(str(tiny_run / "shards")).equals(before)  # the same vocabulary and packing
    assert stage.run(make_cfg(str(tiny_run.parent), seed=7))["skipped"] is False  # config changed


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_runs_are_byte_identical_across_task_counts(ray_local, tmp_path, monkeypatch):
    """vocab/, shards and manifest: the same bytes whatever the number of tasks the work is cut in."""
    stage.run(make_cfg(str(tmp_path / "a")))
    monkeypatch.setattr(stage, "MIN_CHUNK_BYTES", 4096)  # the 46 kB input in several chunks
    monkeypatch.setattr(stage, "TASKS_PER_CPU", 3)
    stage.run(make_cfg(str(tmp_path / "b")))
    a, b = tmp_path / "a" / "corpus", tmp_path / "b" / "corpus"
    for sub in ("vocab", "shards"):
        assert _files(a / sub) == _files(b / sub)
    assert len(_files(a / "shards")) > 2


def test_a_rerun_never_replaces_a_vocabulary_checkpoints_need(ray_local, tmp_path):
    cfg = make_cfg(str(tmp_path / "run"))
    stage.run(cfg)
    corpus = tmp_path / "run" / "corpus"
    vocab, before = _files(corpus / "vocab"), read_rows(str(corpus / "shards"))
    step = tmp_path / "run" / "checkpoints" / "step-00000008"
    step.mkdir(parents=True)
    (step / "meta.json").write_text(json.dumps({"vocab_sha256": vocab_sha256(str(corpus / "vocab"))}))
    # A lost shard: the rebuild keeps the vocabulary the checkpoint was trained with.
    (corpus / "shards" / "part-00001.parquet").unlink()
    assert stage.run(cfg)["skipped"] is False
    assert _files(corpus / "vocab") == vocab and read_rows(str(corpus / "shards")).equals(before)
    # A config that trains another vocabulary is refused before anything is written or deleted.
    shards = _files(corpus / "shards")
    with pytest.raises(DataError, match=r"1 checkpoint\(s\) were trained with it \(.*step-00000008\).*vocab_uri="):
        stage.run(make_cfg(str(tmp_path / "run"), vocab={"pretokenizer": "whitespace", "num_unused": 20}))
    assert _files(corpus / "vocab") == vocab and _files(corpus / "shards") == shards
    # Keeping the vocabulary, as the error says, rebuilds the shards with it.
    keep = {"vocab_uri": str(corpus / "vocab")}
    assert stage.run(make_cfg(str(tmp_path / "run"), vocab=keep, seed=7))["skipped"] is False
    assert _files(corpus / "vocab") == vocab
    # Without checkpoints that need it, a new vocabulary replaces the old one as before.
    step.joinpath("meta.json").unlink()
    stage.run(make_cfg(str(tmp_path / "run"), vocab={"pretokenizer": "whitespace", "num_unused": 20}))
    assert _files(corpus / "vocab") != vocab


def test_packing_is_deterministic_given_the_vocabulary(tiny_run, tmp_path):
    vocab = {"vocab_uri": str(tiny_run / "vocab")}
    a = stage.run(make_cfg(str(tmp_path / "a"), vocab=vocab, lines_per_block=40))
    b = stage.run(make_cfg(str(tmp_path / "b"), vocab=vocab, lines_per_block=40))
    assert a["skipped"] is b["skipped"] is False
    rows_a = read_rows(str(tmp_path / "a" / "corpus" / "shards"))
    assert rows_a.equals(read_rows(str(tmp_path / "b" / "corpus" / "shards")))
    assert a["packing"]["examples"] == rows_a.num_rows
    real = sum(len(ids) for ids in rows_a.column("input_ids").to_pylist())
    assert a["packing"]["fill_rate"] == round(real / (rows_a.num_rows * 64), 4)


def test_vocab_mismatch_is_refused(tiny_run, tmp_path):
    manifest = read_manifest(str(tiny_run / "shards"))
    check_vocab(manifest, str(tiny_run / "vocab"))
    other = tmp_path / "vocab.txt"
    other.write_bytes((tiny_run / "vocab" / "vocab.txt").read_bytes().replace(b"[unused0]", b"[unused_x]"))
    with pytest.raises(DataError, match="different vocabulary"):
        check_vocab(manifest, str(other))


def test_s3_round_trip(tiny_run, s3_bucket, tmp_path):
    text = storage.read_bytes(f"{KOLAW}/constitution.txt")
    storage.write_bytes(f"{s3_bucket}/in/constitution.txt.gz", gzip.compress(text))
    vocab = str(tiny_run / "vocab")
    report = stage.run(make_cfg(f"{s3_bucket}/run", inputs=[f"{s3_bucket}/in/"], vocab={"vocab_uri": vocab}))
    shards = f"{s3_bucket}/run/corpus/shards"
    manifest = read_manifest(shards)
    check_vocab(manifest, f"{s3_bucket}/run/corpus/vocab")
    assert report["total_tokens"] == manifest.total_tokens
    stage.run(make_cfg(str(tmp_path / "local"), vocab={"vocab_uri": vocab}))
    local = read_rows(str(tmp_path / "local" / "corpus" / "shards"))
    assert read_rows(shards).equals(local)  # the same text and vocabulary give the same shards
    assert stage.run(make_cfg(f"{s3_bucket}/run", inputs=[f"{s3_bucket}/in/"], vocab={"vocab_uri": vocab}))["skipped"]


def test_bad_lines_and_binary_files_are_counted_skips(tiny_run, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(
        "대한민국은 민주공화국이다.\n".encode() + b"\xff\xfe\xc3 broken\n" + "국민은 법 앞에 평등하다.\n".encode()
    )
    (corpus / "b.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    report = stage.run(
        make_cfg(str(tmp_path / "run"), inputs=[str(corpus)], vocab={"vocab_uri": str(tiny_run / "vocab")})
    )
    assert report["cleaning"]["invalid_utf8_lines"] == 1
    assert report["cleaning"]["skipped_binary_files"] == [str(corpus / "b.bin")]
    assert report["cleaning"]["lines_kept"] == 2 and report["total_rows"] == 1


def test_empty_corpus_and_missing_paths_are_clear_errors(tiny_run, tmp_path, s3_bucket):
    vocab = {"vocab_uri": str(tiny_run / "vocab")}
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\nㅋ\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no text left after cleaning"):
        stage.run(make_cfg(str(tmp_path / "r1"), inputs=[str(empty)], vocab=vocab))
    with pytest.raises(DataError, match="no text left after cleaning"):  # also when training a vocabulary
        stage.run(make_cfg(str(tmp_path / "r2"), inputs=[str(empty)]))
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=f"{missing} does not exist"):
        stage.run(make_cfg(str(tmp_path / "r3"), inputs=[missing], vocab=vocab))
    with pytest.raises(DataError, match="s3://.*/missing/x.txt does not exist"):
        stage.run(make_cfg(str(tmp_path / "r4"), inputs=[f"{s3_bucket}/missing/x.txt"], vocab=vocab))


def test_unreadable_s3_object_is_a_clear_error(tiny_run, s3_bucket, tmp_path):
    storage.write_bytes(f"{s3_bucket}/bad/part.txt.gz", b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    cfg = make_cfg(str(tmp_path / "run"), inputs=[f"{s3_bucket}/bad/"], vocab={"vocab_uri": str(tiny_run / "vocab")})
    with pytest.raises(DataError, match=r"s3://.*/bad/part.txt.gz is a damaged gzip file"):
        stage.run(cfg)
    assert (
        launch.main(["--config", str(ROOT / "configs/tiny.json"), "--set", 'corpus.inputs=["/no/such/dir"]', "corpus"])
        == 2
    )


def test_errors_raised_in_read_tasks_reach_the_user_as_they_were(tiny_run, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "대한민국은 민주공화국이다."}\n', encoding="utf-8")
    cfg = make_cfg(
        str(tmp_path / "run"), inputs=[str(tmp_path / "a.jsonl")], vocab={"vocab_uri": str(tiny_run / "vocab")}
    )
    with pytest.raises(DataError) as info:
        stage.run(cfg)
    assert str(info.value).startswith(f"corpus input {tmp_path / 'a.jsonl'} is JSON lines")


def test_a_preset_splits_sentences_and_counts_its_rules_in_the_report(tiny_run, tmp_path):
    corpus = tmp_path / "news.txt"
    corpus.write_text(
        "(서울=뉴스1) 정부가 예산을 늘렸다. 국회는 내일 예산안을 심의한다. 【사진】 야당은 이에 강하게 반대했다.\n"
        "무단전재 및 재배포 금지\n\n漢字 ㅋㅋㅋㅋ 대통령이 담화를 발표했다 😀\n",
        encoding="utf-8",
    )
    cleaning = {"preset": "koelectra_v1"}
    cfg = make_cfg(
        str(tmp_path / "run"), inputs=[str(corpus)], cleaning=cleaning, vocab={"vocab_uri": str(tiny_run / "vocab")}
    )
    report = stage.run(cfg)
    counts = report["cleaning"]
    assert counts["sentences_split"] == 1 and counts["boilerplate_dropped"] == 2
    assert counts["bracketed_removed"] == 1 and counts["chars_filtered"] == 1 and counts["emoji_removed"] == 1
    # kept: two sentences of the first line and the third line's text
    assert counts["lines_kept"] == 3
    cfg = make_cfg(str(tmp_path / "v3"), inputs=[str(corpus)], vocab={"vocab_uri": str(tiny_run / "vocab")})
    assert stage.run(cfg)["cleaning"]["lines_kept"] == 3  # the three raw lines, nothing split or dropped


def test_sampled_vocabulary_and_packing_across_documents(ray_local, tmp_path):
    cfg = make_cfg(
        str(tmp_path / "run"),
        flush_documents=False,
        vocab={"pretokenizer": "mecab", "sample_lines": 300, "num_unused": 10, "min_frequency": 1},
    )
    report = stage.run(cfg)
    shards = str(tmp_path / "run" / "corpus" / "shards")
    lengths = [len(r) for r in read_rows(shards).column("input_ids").to_pylist()]
    # Across documents, only the 5% short targets and the corpus end leave examples short.
    assert sum(n >= 60 for n in lengths) / len(lengths) > 0.85
    assert report["vocab_size"] == 1000 and read_manifest(shards).config["corpus"]["vocab"]["sample_lines"] == 300


def test_other_encodings_json_lines_and_overlong_lines_through_the_stage(tiny_run, tmp_path):
    from tokenizers import Tokenizer

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    old = ["대한민국은 민주공화국이다.", "대한민국의 주권은 국민에게 있다."]
    (corpus / "a.txt").write_bytes("\n".join(old).encode("cp949") + b"\n")
    long = " ".join(f"대한민국 헌법 제{i}조" for i in range(40))
    rows = [{"text": "국민은 법 앞에 평등하다."}, {"text": long}, {"title": "no text"}]
    (corpus / "b.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    vocab = {"vocab_uri": str(tiny_run / "vocab")}
    with pytest.raises(DataError, match="a.txt is not utf-8 text.*corpus.encoding"):
        stage.run(make_cfg(str(tmp_path / "r1"), inputs=[str(corpus)], vocab=vocab, text_field="text"))
    cfg = make_cfg(str(tmp_path / "r2"), inputs=[str(corpus)], vocab=vocab, text_field="text", encoding="cp949")
    report = stage.run(cfg)
    assert report["cleaning"]["lines_kept"] == 4 and report["cleaning"]["invalid_json_lines"] == 1
    assert report["cleaning"]["documents_read"] == 3  # one for a.txt, one per JSON object
    tokens = Tokenizer.from_file(str(tiny_run / "vocab" / "tokenizer.json")).encode(long, add_special_tokens=False)
    assert report["packing"]["truncated_tokens"] == len(tokens.ids) - (64 - 2)  # alone in its document


def test_a_damaged_shard_set_is_rebuilt_on_rerun(ray_local, tiny_run, tmp_path):
    """The rerun of a finished corpus stage checks the files, not only the manifest."""
    cfg = make_cfg(str(tmp_path / "run"), vocab={"vocab_uri": str(tiny_run / "vocab")})
    assert stage.run(cfg)["skipped"] is False
    shards = cfg.paths.corpus_shards
    before = read_rows(shards)
    assert stage.run(cfg)["skipped"] is True
    os.remove(os.path.join(shards, "part-00000.parquet"))
    report = stage.run(cfg)
    assert report["skipped"] is False and read_rows(shards).equals(before)


def test_a_merged_vocabulary_trains_exports_and_loads_in_transformers(ray_local, tmp_path):
    """KcELECTRA's recipe in small: 800 tokens trained on the constitution + a vocabulary trained on
    a bill (its tokens not among the 800 appended), then pre-training and export with it."""
    from transformers import ElectraForPreTraining, ElectraTokenizerFast

    from koelectra_dist.corpus.config import VocabConfig
    from koelectra_dist.corpus.vocab import load_vocab, train_vocab, write_vocab_dir

    bill = storage.read_bytes("pkg://konlpy/data/corpus/kobill/1809890.txt").decode().splitlines()
    vocab_cfg = VocabConfig(pretokenizer="whitespace", num_unused=10, min_frequency=1, limit_alphabet=150)
    published = train_vocab(bill, vocab_cfg, 400)
    write_vocab_dir(published, str(tmp_path / "published"), 64)
    out = tmp_path / "run"
    args = ["--config", str(ROOT / "configs/tiny.json"), "--set", f"run.output_uri={out}"]
    args += ["--set", f"corpus.vocab.merge_with={tmp_path / 'published'}", "--set", "corpus.vocab.train_size=800"]
    args += ["--set", "model.vocab_size=1200", "--set", "train.steps=2", "--set", "checkpoint.interval_steps=2"]
    args += ["--set", "distributed.num_workers=1"]
    assert launch.main(args) == 0

    merged = load_vocab(str(out / "corpus" / "vocab"))
    extra = [t for t in published if t not in set(merged[:800]) and not t.startswith("[unused")]
    assert len(merged) == 1200 and merged[800 : 800 + len(extra)] == extra
    assert all(t.startswith("[unused") for t in merged[800 + len(extra) :]) and 1200 - 800 - len(extra) >= 10

    disc = out / "hf" / "discriminator"
    tokenizer = ElectraTokenizerFast.from_pretrained(disc)
    model = ElectraForPreTraining.from_pretrained(disc).eval()
    assert model.config.vocab_size == 1200 and len(tokenizer) == 1200
    word = next(t for t in extra if len(t) > 1 and not t.startswith("##"))
    batch = tokenizer(f"법률 {word}", return_tensors="pt")
    assert merged.index(word) in batch["input_ids"][0].tolist()
    assert model(**batch).logits.shape == batch["input_ids"].shape
