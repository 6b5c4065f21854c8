"""Pre-training end to end on the local Ray instance: 2 workers, real DeepSpeed engines (gloo),
ZeRO 1/2/3, fp32 and bf16, checkpoints on a moto S3 endpoint. A resumed run ends with exactly the
weights of the uninterrupted one; a killed worker is restarted by Ray and the run still does."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_CONFIG, SwitchableProxy, write_shard_set
from safetensors.torch import save_file

import launch
from koelectra_dist import storage
from koelectra_dist.config import load_config
from koelectra_dist.errors import CheckpointError, ConfigError, DataError
from koelectra_dist.pipeline import run_stages
from koelectra_dist.pretrain import stage as train
from koelectra_dist.pretrain.checkpoint import restore, store
from koelectra_dist.pretrain.init_from import PRETRAINING_FORMAT
from koelectra_dist.pretrain.preflight import check_resources

STEPS, INTERVAL = 6, 3
ROWS = [20, 17]  # 6 steps x 8 examples cross an epoch boundary


def tensorboard_files(root: str) -> list[str]:
    """Event files written beside the checkpoints under `root`."""
    uri = storage.join(root, "tensorboard")
    return [f for f in storage.list_files(uri, recursive=True) if "tfevents" in os.path.basename(f)]


def run_settings(out: str, shards: str, *overrides: str) -> list[str]:
    return [
        f"run.output_uri={out}",
        f"train.shards_uri={shards}",
        f"train.steps={STEPS}",
        f"checkpoint.interval_steps={INTERVAL}",
        "checkpoint.keep_last=2",
        "train.log_every=3",
        *overrides,
    ]


def tiny_config(out: str, shards: str, *overrides: str):
    return load_config(TINY_CONFIG, run_settings(out, shards, *overrides))


@pytest.fixture(scope="module")
def s3_run_bucket(s3_endpoint):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="pretrain-runs")
    return "s3://pretrain-runs"


@pytest.fixture(scope="module")
def shards(s3_run_bucket) -> str:
    write_shard_set(f"{s3_run_bucket}/corpus", 1000, 64, ROWS, seed=3)
    return f"{s3_run_bucket}/corpus/shards"


@pytest.fixture(scope="module")
def reference(ray_local, s3_run_bucket, shards, s3_endpoint):
    """Uninterrupted runs, one per (zero_stage, precision), computed on first use."""
    done: dict[tuple[int, str], str] = {}

    def get(stage: int, precision: str) -> str:
        if (stage, precision) not in done:
            out = f"{s3_run_bucket}/reference-z{stage}-{precision}"
            cfg = tiny_config(out, shards, *run_overrides(stage, precision, s3_endpoint))
            report = train.run(cfg)
            assert report["steps"] == STEPS and report["resumed_from"] is None
            root = cfg.paths.checkpoints
            assert store.committed_steps(root) == [INTERVAL, STEPS]
            done[stage, precision] = root
        return done[stage, precision]

    return get


def run_overrides(stage: int, precision: str, endpoint: str) -> list[str]:
    return [
        f"distributed.zero_stage={stage}",
        f"distributed.precision={precision}",
        f"storage.s3_endpoint_url={endpoint}",
    ]


def final_weights(root: str) -> dict[str, torch.Tensor]:
    return restore.consolidated_state_dict(store.step_uri(root, STEPS))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "precision"), [(1, "fp32"), (2, "bf16"), (3, "bf16")])
def test_resumed_run_equals_uninterrupted_run(
    reference, shards, s3_run_bucket, s3_endpoint, tmp_path, stage, precision
):
    ref_root = reference(stage, precision)
    out = f"{s3_run_bucket}/resumed-z{stage}-{precision}"
    cfg = tiny_config(out, shards, *run_overrides(stage, precision, s3_endpoint))
    root = cfg.paths.checkpoints
    # The state of a run interrupted after step 3: its committed step-3 checkpoint...
    storage.upload_dir(
        storage.download_dir(store.step_uri(ref_root, INTERVAL), str(tmp_path / "ck")),
        store.step_uri(root, INTERVAL),
    )
    # ...and a later checkpoint whose upload was cut short (no COMMITTED): never resumed from.
    storage.write_bytes(storage.join(store.step_uri(root, 5), "deepspeed", "state", "garbage.pt"), b"cut")
    report = train.run(cfg)
    assert report["resumed_from"] == store.step_uri(root, INTERVAL)
    assert report["steps"] == STEPS
    assert store.committed_steps(root) == [INTERVAL, STEPS]
    assert not storage.exists(store.step_uri(root, 5))  # pruned once a newer step committed
    # bf16 on CPU is deterministic too, so both precisions must match bit for bit.
    assert_same_weights(final_weights(root), final_weights(ref_root))
    meta = store.read_meta(store.step_uri(root, STEPS))
    ref_meta = store.read_meta(store.step_uri(ref_root, STEPS))
    assert meta.consumed_samples == STEPS * 8 and meta.world_size == 2
    assert meta.metrics["loss"] == ref_meta.metrics["loss"]
    assert tensorboard_files(root)


def train_worker_pids() -> set[int]:
    """PIDs of this test session's live Ray Train worker processes (Ray titles them
    ray::RayTrainWorker...). Only descendants of this process (the local Ray instance's raylet
    forks them), so another Ray instance on the same machine is never touched."""
    import psutil

    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in proc.cmdline()):
                pids.add(proc.pid)
        except psutil.Error:  # exited meanwhile
            continue
    return pids


@pytest.mark.slow
def test_killed_worker_is_restarted_and_run_ends_with_expected_weights(reference, shards, s3_endpoint, tmp_path):
    ref_root = reference(1, "fp32")
    # a checkpoint every step: the kill after the first lands while 5 steps and their uploads remain
    overrides = [*run_overrides(1, "fp32", s3_endpoint), "checkpoint.interval_steps=1"]
    cfg = tiny_config(str(tmp_path / "run"), shards, *overrides)
    root = cfg.paths.checkpoints
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(train.run(cfg)))
    runner.start()
    marker = Path(store.step_uri(root, 1)) / store.COMMITTED
    deadline = time.time() + 300
    while not marker.exists() and runner.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the run never committed its first checkpoint"
    first_group = train_worker_pids()
    assert first_group, "no Ray Train worker process found"
    os.kill(min(first_group), signal.SIGKILL)
    restarted = False
    while runner.is_alive():
        restarted = restarted or bool(train_worker_pids() - first_group)
        time.sleep(0.05)
    runner.join()
    assert restarted, "Ray did not start a new worker group"
    assert result["steps"] == STEPS and result["resumed_from"] is None
    assert_same_weights(final_weights(root), final_weights(ref_root))


@pytest.mark.slow
def test_a_zero_stage_change_on_resume_is_refused_before_any_worker_starts(reference, shards, s3_endpoint):
    # another worker count is fine (test_elastic_checkpoint.py); another ZeRO stage is not
    ref_root = reference(1, "fp32")
    out = ref_root.rsplit("/", 1)[0]
    cfg = tiny_config(out, shards, *run_overrides(2, "fp32", s3_endpoint), "distributed.num_workers=1", "train.steps=9")
    with pytest.raises(CheckpointError, match="resume with distributed.zero_stage=1"):
        train.run(cfg)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.steps=0", "train.steps"),
        ("train.global_batch_size=6", "divisible"),
        ("distributed.zero_stage=4", "distributed.zero_stage"),
        ("distributed.precision=fp16", "fp16 needs GPUs"),
        ("train.grad_clip=0", "train.grad_clip"),
    ],
)
def test_bad_config_is_refused_before_any_worker_starts(override, field):
    with pytest.raises(ConfigError, match=field):
        load_config(TINY_CONFIG, [override])


def test_missing_shards_are_refused_before_any_worker_starts(tmp_path):
    cfg = load_config(TINY_CONFIG, [f"run.output_uri={tmp_path}"])
    with pytest.raises(DataError, match="corpus stage has not finished"):
        train.run(cfg)


@pytest.mark.slow
def test_a_damaged_latest_step_falls_back_and_the_run_ends_as_the_uninterrupted_one(
    reference, shards, s3_run_bucket, s3_endpoint, tmp_path, caplog
):
    ref_root = reference(1, "fp32")
    cfg = tiny_config(f"{s3_run_bucket}/damaged", shards, *run_overrides(1, "fp32", s3_endpoint))
    root = cfg.paths.checkpoints
    for step in (INTERVAL, STEPS):  # a finished run...
        copy = storage.download_dir(store.step_uri(ref_root, step), str(tmp_path / f"step{step}"))
        storage.upload_dir(copy, store.step_uri(root, step))
    # ...whose final step lost one bit of its engine state
    victim = storage.join(store.step_uri(root, STEPS), "deepspeed", "state", "mp_rank_00_model_states.pt")
    data = bytearray(storage.read_bytes(victim))
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(victim, bytes(data))
    with caplog.at_level(logging.WARNING):
        report = train.run(cfg)
    assert "step-00000006 is damaged and will not be used" in caplog.text
    assert "mp_rank_00_model_states.pt: sha256 differs" in caplog.text
    assert report["resumed_from"] == store.step_uri(root, INTERVAL) and report["steps"] == STEPS
    assert_same_weights(final_weights(root), final_weights(ref_root))


@pytest.mark.slow
def test_a_finished_run_run_again_returns_its_final_checkpoint_without_training(
    reference, shards, s3_endpoint, monkeypatch
):
    root = reference(1, "fp32")
    monkeypatch.setattr(train, "fit", lambda *_: pytest.fail("a finished run started its workers again"))
    cfg = tiny_config(root.rsplit("/", 1)[0], shards, *run_overrides(1, "fp32", s3_endpoint))
    seal = storage.join(store.step_uri(root, STEPS), store.COMMITTED)
    sealed = storage.read_bytes(seal)  # holds each file's hash: a run that trained again rewrites it
    report = train.run(cfg)
    assert report["resumed_from"] == report["checkpoint"] == store.step_uri(root, STEPS)
    assert report["steps"] == STEPS and report["metrics"]["loss"] > 0
    assert store.committed_steps(root) == [INTERVAL, STEPS] and storage.read_bytes(seal) == sealed


@pytest.mark.slow
def test_a_precision_change_on_resume_is_refused_before_any_worker_starts(reference, shards, s3_endpoint):
    out = reference(1, "fp32").rsplit("/", 1)[0]
    cfg = tiny_config(out, shards, *run_overrides(1, "bf16", s3_endpoint), "train.steps=9")
    with pytest.raises(CheckpointError, match="resume with distributed.precision=fp32"):
        train.run(cfg)


@pytest.mark.slow
def test_a_user_error_in_a_worker_stops_the_run_after_one_attempt(shards, s3_endpoint, tmp_path, capsys, caplog):
    """train.init_from with weights that do not fit: only the workers find out, and the run ends at
    once with the error's one line and exit 2 instead of distributed.max_failures more attempts."""
    manifest = storage.read_json(f"{shards}/manifest.json")
    folder = tmp_path / "pretraining"
    folder.mkdir()
    settings = run_settings(str(tmp_path / "run"), shards, *run_overrides(1, "fp32", s3_endpoint))
    cfg = load_config(TINY_CONFIG, settings)
    config = {"format": PRETRAINING_FORMAT, "model": dataclasses.asdict(cfg.model)}
    config |= {"objective": {"mask_prob": 0.15, "gen_weight": 1.0, "disc_weight": 50.0}}
    (folder / "config.json").write_text(json.dumps({**config, "vocab_sha256": manifest["vocab_sha256"]}))
    save_file({"unrelated.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    args = ["--config", str(TINY_CONFIG), "pretrain", "--set", f"train.init_from={folder}"]
    args += [a for o in settings for a in ("--set", o)]
    with caplog.at_level(logging.INFO):
        assert launch.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("koelectra_dist checkpoint error:") and "do not fit" in err[0]
    assert "attempt 1" in caplog.text and "attempt 2" not in caplog.text


@pytest.mark.slow
def test_workers_the_cluster_cannot_hold_fail_clearly(ray_local, shards, s3_endpoint, tmp_path):
    cfg = tiny_config(str(tmp_path / "run"), shards, "distributed.gpus_per_worker=1", "distributed.resource_wait_s=2")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not come to hold 2 workers .* within 2s \(distributed.resource_wait_s"):
        train.run(cfg)  # a cluster we joined may grow: a bounded wait
    assert time.monotonic() - started < 60
    with pytest.raises(ConfigError, match="the local Ray started here can never hold 2 workers"):
        check_resources(cfg, can_grow=False)  # one that launch.py started itself cannot: at once


@pytest.mark.slow
def test_a_damaged_shard_set_is_refused_before_any_worker_starts(tmp_path):
    out = str(tmp_path / "run")
    write_shard_set(f"{out}/corpus", 1000, 64, ROWS, seed=3)
    part = tmp_path / "run" / "corpus" / "shards" / "part-00001.parquet"
    original = part.read_bytes()
    part.unlink()
    with pytest.raises(DataError, match=r"part-00001.parquet: missing\n.*run the corpus stage again"):
        train.run(load_config(TINY_CONFIG, [f"run.output_uri={out}"]))
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01  # same size, same footer: found by the default sha256 check
    part.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"part-00001.parquet: sha256 differs"):
        train.run(load_config(TINY_CONFIG, [f"run.output_uri={out}"]))


@pytest.mark.slow
def test_the_pipeline_runs_on_a_store_named_only_by_the_config(ray_local, s3_endpoint, monkeypatch):
    """storage.s3_endpoint_url alone: the driver's environment names no endpoint (nor do the
    workers', see conftest.py), so every probe, driver call and task must use the config's."""
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="endpoint-from-config")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    out = "s3://endpoint-from-config/run"
    settings = [f"run.output_uri={out}", f"storage.s3_endpoint_url={s3_endpoint}", "train.steps=2"]
    reports = run_stages(load_config(TINY_CONFIG, [*settings, "checkpoint.interval_steps=2"]))
    assert reports["corpus"]["total_rows"] > 0 and reports["pretrain"]["steps"] == 2
    assert storage.exists(f"{out}/hf/discriminator/model.safetensors")


@pytest.mark.slow
def test_a_storage_outage_longer_than_an_attempt_is_waited_out(
    reference, shards, s3_run_bucket, s3_endpoint, monkeypatch, caplog
):
    """The store goes away after the first checkpoint and comes back only after the attempt it
    broke has failed: the driver waits for it, resumes, and ends with the uninterrupted weights."""
    import boto3

    ref_root = reference(1, "fp32")
    proxy = SwitchableProxy(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)  # the run points this process at the proxy
    overrides = [*run_overrides(1, "fp32", proxy.url), "checkpoint.interval_steps=1", "distributed.max_failures=1"]
    cfg = tiny_config(f"{s3_run_bucket}/outage", shards, *overrides)
    root = cfg.paths.checkpoints
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(train.run(cfg)))
    direct = boto3.client("s3", endpoint_url=s3_endpoint)  # past the proxy
    committed = f"{root.split('/', 3)[3]}/step-00000001/COMMITTED"
    with caplog.at_level(logging.WARNING):
        runner.start()
        deadline = time.time() + 300
        while runner.is_alive() and time.time() < deadline:
            if direct.list_objects_v2(Bucket="pretrain-runs", Prefix=committed).get("KeyCount"):
                break
            time.sleep(0.05)
        proxy.down()
        # Down until the attempt it broke has failed and the driver has found the store still down.
        while runner.is_alive() and "trying again in" not in caplog.text and time.time() < deadline:
            time.sleep(0.2)
        proxy.up()
        runner.join()
    assert "attempt 1 failed" in caplog.text and "trying again in" in caplog.text
    assert result["steps"] == STEPS
    assert_same_weights(final_weights(root), final_weights(ref_root))
