"""Fail-fast checks that need no cluster: bad config values, damaged vocabularies and shard sets,
non-finite labels, storage errors that name their cause, foreign export targets, an unreachable Hub."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
from helpers import ROOT, TINY_CONFIG, write_shard_set

from koelectra_dist import storage
from koelectra_dist.config import config_warnings, load_config
from koelectra_dist.corpus.shards import read_manifest, shard_problems
from koelectra_dist.corpus.vocab import load_vocab
from koelectra_dist.errors import (
    ConfigError,
    DataError,
    StorageError,
    StorageUnavailable,
    error_in,
    user_error_in,
)
from koelectra_dist.export.stage import check_target, relative_files, remove_file
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.task_specs import BUILTIN_TASKS


def test_generator_width_must_split_into_its_heads():
    # 1000 x 0.2 = 200 wide, 200 // 64 = 3 heads, which do not divide 200
    with pytest.raises(ConfigError, match=r"model.generator_size \(0.2\) gives a generator of width 200"):
        load_config(TINY_CONFIG, ["model.hidden_size=1000", "model.num_attention_heads=8", "model.generator_size=0.2"])


def test_warmup_longer_than_the_run_is_warned_by_check():
    cfg = load_config(TINY_CONFIG, ["train.steps=100", "train.warmup_steps=5000"])
    (warning,) = config_warnings(cfg)
    assert "train.warmup_steps (5000) >= train.steps (100)" in warning and "peaks at 0%" in warning
    done = subprocess.run(
        [sys.executable, "launch.py", "--config", "configs/tiny.json", "--set", "train.warmup_steps=100000", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "koelectra_dist warning: train.warmup_steps (100000)" in done.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xef\xbb\xbf[PAD]\n[UNK]\n", "byte order mark"), (b"[PAD]\r\n[UNK]\r\n", "CRLF"), (b"[PAD]\n\xff\n", "UTF-8")],
)
def test_vocabulary_encoding_mistakes_are_named(tmp_path, content, message):
    (tmp_path / "vocab.txt").write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_vocab(str(tmp_path))


def test_shard_set_damage_is_found(tmp_path):
    out = str(tmp_path / "corpus")
    write_shard_set(out, 300, 16, [7, 5, 9])
    shards = f"{out}/shards"
    manifest = read_manifest(shards)
    assert shard_problems(shards, manifest, hashes=True) == []
    (tmp_path / "corpus" / "shards" / "part-00001.parquet").unlink()
    part2 = tmp_path / "corpus" / "shards" / "part-00002.parquet"
    data = bytearray(part2.read_bytes())
    data[len(data) // 3] ^= 0x10  # one flipped bit: same size, same footer
    part2.write_bytes(bytes(data))
    problems = shard_problems(shards, manifest, hashes=True)
    assert problems == [
        "part-00001.parquet: missing",
        "part-00002.parquet: sha256 differs from the manifest's (the file is damaged)",
    ]
    assert shard_problems(shards, manifest) == ["part-00001.parquet: missing"]  # sizes and footers only
    edited = json.loads((tmp_path / "corpus" / "shards" / "manifest.json").read_text())
    edited["shards"][0]["rows"] = 70
    (tmp_path / "corpus" / "shards" / "manifest.json").write_text(json.dumps(edited))
    assert "part-00000.parquet: 7 rows, the manifest says 70" in shard_problems(shards, read_manifest(shards))


def test_non_finite_scores_are_refused_with_file_and_line(tmp_path):
    header = "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n"
    (tmp_path / "korsts").mkdir()
    (tmp_path / "korsts" / "sts-train.tsv").write_text(
        header + "news\tf\t2012\t1\t4.5\ta\tb\nnews\tf\t2012\t2\tnan\tc\td\n"
    )
    with pytest.raises(DataError, match=r"sts-train.tsv line 3: score 'nan' is not a finite number"):
        read_split(str(tmp_path), BUILTIN_TASKS["korsts"], "train")


@pytest.mark.parametrize(
    ("uri", "exc", "message"),
    [
        ("/data/out", PermissionError(13, "Permission denied"), "not writable"),
        ("/data/out", OSError(errno.EROFS, "Read-only file system"), "not writable"),
        ("/data/out", OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
        ("s3://b/x", FileNotFoundError("NoSuchBucket: The specified bucket does not exist"), "bucket b does not exist"),
        ("s3://b/x", PermissionError("Forbidden"), "access denied"),
        ("s3://b/x", OSError("InvalidAccessKeyId: The AWS Access Key Id you provided does not exist"), "access denied"),
    ],
)
def test_storage_errors_name_the_likely_cause(uri, exc, message):
    assert message in str(storage._wrap(uri, exc))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (FileNotFoundError("NoSuchBucket: The specified bucket does not exist"), False),
        (PermissionError("Forbidden"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),
        (FileNotFoundError("s3://b/500/x"), False),  # a number in a path is not a status
        (ConnectionRefusedError(111, "Connection refused"), True),
        (OSError('Could not connect to the endpoint URL: "http://minio:9000/b/x"'), True),
        (TimeoutError("read timed out"), True),
        (OSError("An error occurred (SlowDown) when calling the PutObject operation: Please reduce your rate"), True),
        (OSError("An error occurred (503) when calling the HeadObject operation: Service Unavailable"), True),
        (OSError("An error occurred (InternalError) when calling the GetObject operation"), True),
    ],
)
def test_storage_faults_that_are_not_the_users_are_transient(exc, transient):
    """The store's faults are retried by the pre-training driver; the user's stop the run at once."""
    wrapped = storage._wrap("s3://b/x", exc)
    assert isinstance(wrapped, StorageError) and wrapped.transient is transient
    crossed = RuntimeError("worker group failed")
    crossed.__cause__ = wrapped
    assert (user_error_in(crossed) is None) is transient and error_in(crossed).transient is transient


def test_waiting_for_the_store_gives_up_only_after_its_limit(monkeypatch):
    waits, calls = [], iter([StorageUnavailable("down"), StorageUnavailable("down"), "answer"])

    def call():
        result = next(calls)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(storage.time, "sleep", waits.append)
    assert storage.when_available(call, "test") == "answer" and waits == [1.0, 2.0]
    with pytest.raises(StorageUnavailable):
        storage.when_available(lambda: (_ for _ in ()).throw(StorageUnavailable("down")), "test", limit_s=0)
    with pytest.raises(StorageError, match="denied"):  # the user's: never waited for
        storage.when_available(lambda: (_ for _ in ()).throw(StorageError("denied")), "test")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_export_refuses_a_folder_it_did_not_write(tmp_path, where, request):
    """Foreign files are found at any depth, also inside an earlier export's model folders, and
    never deleted: export.overwrite exports beside them."""
    out = str(tmp_path / "hf") if where == "local" else request.getfixturevalue("s3_bucket") + "/hf"
    assert check_target(out, overwrite=False) == []  # absent: fine
    ours = ["export_info.json", "discriminator/config.json", "discriminator/vocab.txt", "pretraining/model.safetensors"]
    for name in ours:  # an earlier export, or what an interrupted one leaves
        storage.write_bytes(storage.join(out, *name.split("/")), b"{}")
    assert check_target(out, overwrite=False) == []
    for name in ["discriminator/notes.txt", "generator/runs/mine.bin"]:
        storage.write_bytes(storage.join(out, *name.split("/")), b"mine")
        with pytest.raises(ConfigError, match=f"already holds {name}, which no export wrote"):
            check_target(out, overwrite=False)
        assert check_target(out, overwrite=True) == [name]
        storage.remove(storage.join(out, *name.split("/")))
    storage.write_bytes(storage.join(out, "notes.txt"), b"mine")
    with pytest.raises(ConfigError, match="already holds notes.txt"):
        check_target(out, overwrite=False)
    storage.write_bytes(storage.join(out, "generator", "config.json", "mine.txt"), b"mine")  # a folder by that name
    for name in [*ours, "generator/config.json"]:
        remove_file(storage.join(out, *name.split("/")))
    assert relative_files(out) == ["generator/config.json/mine.txt", "notes.txt"]
