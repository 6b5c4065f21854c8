import dataclasses
import json
import pickle
import subprocess
import sys
import typing

import pytest
from helpers import ROOT

from koelectra_dist.config import (
    LOCATION_FIELDS,
    Config,
    config_from_dict,
    load_config,
    placeholder_problems,
    portable,
    portable_config,
    resolved_json,
)
from koelectra_dist.corpus.config import PRESETS
from koelectra_dist.errors import CheckpointError, ConfigError, DataError, StorageError

CONFIGS = sorted((ROOT / "configs").glob("*.json"))


def launch(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` from the project root, output captured."""
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, check=check)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_file_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    json.loads(resolved_json(cfg))


def test_config_files_mirror_koelectra():
    expected = {  # vocab, batch, steps, lr, generator hidden (KoELECTRA's published recipes)
        "base_v3": (35000, 256, 1_500_000, 2e-4, 256),
        "small_v3": (35000, 512, 800_000, 5e-4, 256),
        "base_v2": (32200, 256, 700_000, 2e-4, 256),
        "small_v2": (32200, 512, 300_000, 5e-4, 256),
        "base_v1": (32200, 256, 700_000, 2e-4, 256),
        "small_v1": (32200, 512, 300_000, 5e-4, 256),
    }
    for name, (vocab, batch, steps, lr, gen_hidden) in expected.items():
        cfg = load_config(ROOT / "configs" / f"{name}.json")
        assert (cfg.model.vocab_size, cfg.train.global_batch_size, cfg.train.steps, cfg.train.learning_rate) == (
            vocab,
            batch,
            steps,
            lr,
        ), name
        assert cfg.model.max_length == 512
        assert cfg.model.generator_hidden_size() == gen_hidden, name
        assert cfg.model.generator_num_attention_heads() == 4
        assert cfg.model.generator_intermediate_size() == 1024
        assert cfg.model.num_hidden_layers == 12
        # KoELECTRA packed across documents (--blanks-separate-docs false), blank lines skipped
        assert cfg.corpus.flush_documents is False, name
        # v2's defining change is EnlipleAI's vocabulary: the config asks for it, it does not train one
        assert (cfg.corpus.vocab.vocab_uri is not None) == name.endswith("v2"), name


def test_config_files_mirror_the_family():
    kc = load_config(ROOT / "configs" / "kcelectra_base.json")
    assert (kc.model.vocab_size, kc.train.steps, kc.model.hidden_size, kc.model.generator_hidden_size()) == (
        50135,
        848_000,
        768,
        256,
    )
    v = kc.corpus.vocab
    assert (v.train_size, v.merge_with, v.pretokenizer) == (
        30000,
        "hf://monologg/koelectra-base-v3-discriminator",
        "whitespace",
    )
    assert kc.corpus.cleaning.rules() == PRESETS["kcelectra"] and kc.corpus.flush_documents  # threads are documents
    assert any("ELECTRA-Base" in note for note in kc.notes)
    for model, vocab in [(1, 32000), (2, 32000), (3, 64000), (4, 128000)]:
        cfg = load_config(ROOT / "configs" / f"kosentelectra_base_v{model}.json")
        assert (cfg.model.vocab_size, cfg.train.global_batch_size, cfg.train.learning_rate, cfg.train.steps) == (
            vocab,
            256,
            1.5e-4,
            1_300_000,
        )
        assert cfg.corpus.vocab.limit_alphabet >= 10_000 and cfg.corpus.vocab.pretokenizer == "whitespace"
        assert (cfg.checkpoint.interval_steps, cfg.checkpoint.keep_last) == (20_000, 10)
        assert any("4.5e-4" in note for note in cfg.notes)  # the sources' conflict is stated


def test_v2_configs_stop_without_their_vocabulary():
    check = launch("--config", "configs/small_v2.json", "--check")
    assert check.returncode == 0 and '"flush_documents": false' in check.stdout
    assert "corpus.vocab.vocab_uri: s3://YOUR-BUCKET/vocab/koelectra-v2/vocab.txt is a placeholder" in check.stderr
    assert "monologg/koelectra-base-v2-discriminator" in check.stderr
    cfg = load_config(ROOT / "configs" / "base_v2.json")
    assert any(p.startswith("corpus.vocab.vocab_uri:") for p in placeholder_problems(cfg))


def test_relative_outputs_under_a_ray_job_are_named_with_where_they_went(tmp_path, monkeypatch, caplog):
    job_dir = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    cfg = load_config(ROOT / "configs" / "demo.json", ["checkpoint.storage_uri=s3://b/ckpt"])
    (warning,) = [r.getMessage() for r in caplog.records if "Ray job" in r.getMessage()]
    assert warning.startswith(f"run.output_uri is a relative path, resolved to {job_dir}/outputs/demo")
    assert "s3://" in warning and cfg.run.output_uri == str(job_dir / "outputs" / "demo")
    caplog.clear()
    monkeypatch.chdir(tmp_path)  # outside a Ray job: nothing to say
    load_config(ROOT / "configs" / "demo.json")
    assert not [r for r in caplog.records if "Ray job" in r.getMessage()]


def test_portable_config_names_no_machine_folders():
    cfg = load_config(ROOT / "configs" / "demo.json", ["run.output_uri=/home/me/runs/demo", "finetune.data_dir=/data"])
    data = portable_config(cfg.to_dict())
    assert data["run"]["output_uri"] == "demo"
    assert data["finetune"]["data_dir"] == "data"
    assert data["corpus"]["inputs"] == ["pkg://konlpy/data/corpus/kolaw", "pkg://konlpy/data/corpus/kobill"]
    assert portable("/home/me/runs/demo/checkpoints/step-00000200", "/home/me/runs/demo") == "checkpoints/step-00000200"
    assert portable("s3://b/x", "/home/me/runs/demo") == "s3://b/x"
    assert "/home/me" not in json.dumps(data)


def test_check_prints_base_v3_resolved():
    out = launch("--config", "configs/base_v3.json", "--check", check=True).stdout
    resolved = json.loads(out)
    assert resolved["model"]["vocab_size"] == 35000
    assert resolved["train"]["global_batch_size"] == 256
    assert resolved["train"]["steps"] == 1_500_000
    assert resolved["train"]["learning_rate"] == 2e-4
    assert resolved["model"]["max_length"] == 512
    assert resolved["derived"]["generator"] == {
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "num_hidden_layers": 12,
        "embedding_size": 768,
    }


def test_check_names_a_misspelled_key_and_does_not_start_ray():
    proc = launch("--config", "configs/base_v3.json", "--set", "model.hiden_size=1", "--check")
    assert proc.returncode != 0
    assert "model.hiden_size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_overrides_parse_json_values_and_strings():
    cfg = load_config(
        ROOT / "configs/tiny.json",
        [
            "train.steps=20",
            "checkpoint.storage_uri=s3://bucket/ckpt",
            'corpus.inputs=["s3://b/a", "s3://b/b"]',
            "distributed.precision=bf16",
        ],
    )
    assert cfg.train.steps == 20
    assert cfg.checkpoint.storage_uri == "s3://bucket/ckpt"
    assert cfg.corpus.inputs == ["s3://b/a", "s3://b/b"]
    assert cfg.distributed.precision == "bf16"


def test_unknown_keys_name_their_dotted_path():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"stpes": 3}, "corpus": {"cleaning": {"dedup": True}}, "bogus": 1})
    msg = str(e.value)
    assert "train.stpes" in msg and "corpus.cleaning.dedup" in msg and "bogus" in msg


def test_type_errors_are_reported():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"steps": "many"}, "distributed": {"precision": "fp8"}, "corpus": {"inputs": "x"}})
    msg = str(e.value)
    assert "train.steps: expected int" in msg
    assert "distributed.precision" in msg and "fp8" in msg
    assert "corpus.inputs: expected a list" in msg


def test_cross_field_problems_are_collected_together():
    with pytest.raises(ConfigError) as e:
        config_from_dict(
            {
                "run": {"stages": ["pretrain"]},
                "train": {"global_batch_size": 100, "micro_batch_size": 8, "steps": 0},
                "distributed": {"num_workers": 2, "gpus_per_worker": 0, "zero_stage": 4, "precision": "fp16"},
                "model": {"hidden_size": 100, "num_attention_heads": 12},
            }
        )
    msg = str(e.value)
    for expected in [
        "train.global_batch_size (100) must be divisible",
        "train.steps: must be > 0",
        "distributed.zero_stage",
        "fp16 needs GPUs",
        "model.hidden_size (100) must be divisible",
    ]:
        assert expected in msg, expected


def test_corpus_section_problems_are_named():
    with pytest.raises(ConfigError) as e:
        config_from_dict(
            {
                "run": {"stages": ["corpus"]},
                "corpus": {
                    "inputs": ["x.txt"],
                    "lines_per_block": 0,
                    "chunk_bytes": -1,
                    "dedup_partitions": 0,
                    "encoding": "utf-16",
                    "vocab": {"num_unused": -1, "sample_lines": 0, "limit_alphabet": 0},
                },
            }
        )
    msg = str(e.value)
    for expected in [
        "corpus.lines_per_block: must be > 0, got 0",
        "corpus.chunk_bytes: must be > 0",
        "corpus.dedup_partitions: must be > 0",
        "corpus.vocab.num_unused: must be >= 0, got -1",
        "corpus.encoding: 'utf-16' is not ASCII-compatible",
        "corpus.vocab.sample_lines: must be > 0, got 0; set it to null to train the vocabulary on all lines",
        "corpus.vocab.limit_alphabet: must be > 0, got 0",
    ]:
        assert expected in msg, expected
    with pytest.raises(ConfigError, match="corpus.encoding: unknown encoding 'klingon'"):
        config_from_dict({"corpus": {"encoding": "klingon"}})


def test_corpus_stage_needs_inputs():
    with pytest.raises(ConfigError, match="corpus.inputs"):
        config_from_dict({"run": {"stages": ["corpus"]}})
    config_from_dict({"run": {"stages": ["pretrain"]}})


def test_named_stages_replace_configured_ones_for_validation():
    proc = launch("--config", "configs/tiny.json", "--set", "corpus.inputs=[]", "pretrain", "--check")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run"]["stages"] == ["pretrain"]
    proc = launch("--config", "configs/tiny.json", "bogus", "--check")
    assert proc.returncode == 2 and "unknown stage" in proc.stderr


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_derived_values_are_methods():
    cfg = load_config(ROOT / "configs/base_v3.json")
    assert cfg.gradient_accumulation_steps() == 256 // (32 * 8)
    assert cfg.paths.checkpoints.endswith("/checkpoints")


@pytest.mark.parametrize("cls", [ConfigError, DataError, StorageError, CheckpointError])
def test_errors_survive_pickling(cls):
    err = pickle.loads(pickle.dumps(cls("what is wrong; how to fix it")))
    assert type(err) is cls and str(err) == "what is wrong; how to fix it"


def test_relative_local_locations_become_absolute(tmp_path, monkeypatch):
    # Ray workers run in other directories than the driver: paths are fixed where the config loads.
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        ROOT / "configs" / "tiny.json",
        ["run.output_uri=out", 'corpus.inputs=["a.txt", "s3://b/c", "pkg://konlpy/data"]', "train.init_from=/abs/x"],
    )
    assert cfg.run.output_uri == str(tmp_path / "out")
    assert cfg.corpus.inputs == [str(tmp_path / "a.txt"), "s3://b/c", "pkg://konlpy/data"]
    assert cfg.train.init_from == "/abs/x" and cfg.export.output_uri is None
    assert cfg.paths.checkpoints == str(tmp_path / "out" / "checkpoints")


def test_every_location_field_is_listed():
    def dotted_fields(tp, prefix=""):
        for name, field_type in typing.get_type_hints(tp).items():
            if dataclasses.is_dataclass(field_type):
                yield from dotted_fields(field_type, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    every = set(dotted_fields(Config))
    assert set(LOCATION_FIELDS) <= every
    assert {f for f in every if f.endswith(("_uri", "_dir", "inputs", "init_from"))} <= set(LOCATION_FIELDS)


def test_placeholders_pass_check_but_stop_a_run_before_ray_starts():
    check = launch("--config", "configs/base_v3.json", "--check")
    assert (
        check.returncode == 0 and "run.output_uri: s3://YOUR-BUCKET/koelectra/base-v3 is a placeholder" in check.stderr
    )
    run = launch("--config", "configs/base_v3.json", "corpus")
    assert run.returncode == 2, run.stderr
    assert "koelectra_dist config error: the config still has placeholders" in run.stderr
    assert "corpus.inputs: s3://YOUR-BUCKET/corpora/koelectra-v3/ is a placeholder" in run.stderr
    assert "Started a local Ray instance" not in run.stderr


def test_outputs_on_read_only_schemes_are_refused():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"export": {"output_uri": "hf://me/model"}, "distill": {"output_uri": "pkg://x/y"}})
    assert "export.output_uri: hf://me/model is read-only" in str(e.value)
    assert "distill.output_uri: pkg://x/y is read-only" in str(e.value)


def test_num_workers_is_a_count_or_a_range_with_its_allowed_counts():
    from koelectra_dist.pretrain.config import allowed_worker_counts, is_elastic, worker_range

    train = {"global_batch_size": 256, "micro_batch_size": 32}
    fixed = config_from_dict({"run": {"stages": ["pretrain"]}, "train": train, "distributed": {"num_workers": 8}})
    assert not is_elastic(fixed.distributed) and worker_range(fixed.distributed) == (8, 8)
    ranged = config_from_dict({"run": {"stages": ["pretrain"]}, "train": train, "distributed": {"num_workers": [2, 8]}})
    assert is_elastic(ranged.distributed) and worker_range(ranged.distributed) == (2, 8)
    # only the counts that keep the global batch of 256 in micro-batches of 32
    assert allowed_worker_counts(ranged.train, ranged.distributed) == [2, 4, 8]
    assert ranged.gradient_accumulation_steps(4) == 2 and ranged.gradient_accumulation_steps(8) == 1
    assert ranged.derived()["gradient_accumulation_steps"] == {2: 4, 4: 2, 8: 1}
    from koelectra_dist.config import config_warnings

    assert any("only 2, 4, 8 workers keep the global batch" in w for w in config_warnings(ranged))


@pytest.mark.parametrize(
    ("num_workers", "message"),
    [
        ("two", 'distributed.num_workers: expected int or list[int], got "two"'),
        ([1, "x"], 'distributed.num_workers: expected int or list[int], got [1, "x"]'),
        ([4, 2], "distributed.num_workers: a count, or [min, max] with 1 <= min <= max; got [4, 2]"),
        ([1, 2, 3], "distributed.num_workers: a count, or [min, max]"),
        ([0, 2], "distributed.num_workers: a count, or [min, max]"),
        (0, "distributed.num_workers: must be > 0, got 0"),
        ([3, 3], "distributed.num_workers: no count in [3, 3] keeps train.global_batch_size (8)"),
        (3, "train.global_batch_size (8) must be divisible by train.micro_batch_size x distributed.num_workers"),
    ],
)
def test_a_bad_worker_count_or_range_is_refused_naming_the_key(num_workers, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(
            {
                "run": {"stages": ["pretrain"]},
                "train": {"global_batch_size": 8, "micro_batch_size": 2},
                "distributed": {"num_workers": num_workers},
            }
        )
    assert message in str(e.value)
    if isinstance(num_workers, list) and num_workers == [3, 3]:
        assert "counts that do: 1, 2, 4" in str(e.value)


def test_koelectra_downstream_protocol_is_shipped():
    from koelectra_dist.finetune.config import resolve_tasks

    cfg = load_config(ROOT / "configs" / "koelectra_downstream.json")
    specs = {s.name: s for s in resolve_tasks(cfg.finetune)}
    tested = {"nsmc", "naver_ner", "paws", "kornli", "korsts", "question_pair_koelectra"}
    assert set(specs) == tested | {"korquad", "hate_speech"}
    assert {name for name, s in specs.items() if s.eval_split == "test"} == tested
    assert all(specs[name].dev_file is None for name in tested)  # KoELECTRA: no dev selection
    assert specs["korquad"].eval_split == specs["hate_speech"].eval_split == "dev"
    assert cfg.finetune.model_uri == "hf://monologg/koelectra-base-v3" and cfg.run.stages == ["finetune"]
    for name in ("base_v3", "small_v3"):
        assert (
            dataclasses.replace(cfg.finetune, model_uri=None) == load_config(ROOT / "configs" / f"{name}.json").finetune
        )
