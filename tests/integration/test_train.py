"""Pre-training end to end on the local Ray instance: 2 workers, real DeepSpeed engines (gloo),
ZeRO 1/2/3, fp32 and bf16, checkpoints on a moto S3 endpoint. A resumed run ends with exactly the
weights of the uninterrupted one; a killed worker is restarted by Ray and the run still does."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_CONFIG, write_shard_set

from koelectra_dist import storage
from koelectra_dist.config import load_config
from koelectra_dist.errors import CheckpointError, ConfigError, DataError
from koelectra_dist.pretrain import checkpoint
from koelectra_dist.pretrain import stage as train

STEPS, INTERVAL = 6, 3
ROWS = [20, 17]  # 6 steps x 8 examples cross an epoch boundary


def tensorboard_files(root: str) -> list[str]:
    """Event files written beside the checkpoints under `root`."""
    uri = storage.join(root, "tensorboard")
    return [f for f in storage.list_files(uri, recursive=True) if "tfevents" in os.path.basename(f)]


def tiny_config(out: str, shards: str, *overrides: str):
    return load_config(
        TINY_CONFIG,
        [
            f"run.output_uri={out}",
            f"train.shards_uri={shards}",
            f"train.steps={STEPS}",
            f"checkpoint.interval_steps={INTERVAL}",
            "checkpoint.keep_last=2",
            "train.log_every=3",
            *overrides,
        ],
    )


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
            assert checkpoint.committed_steps(root) == [INTERVAL, STEPS]
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
    return checkpoint.consolidated_state_dict(checkpoint.step_uri(root, STEPS))


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
        storage.download_dir(checkpoint.step_uri(ref_root, INTERVAL), str(tmp_path / "ck")),
        checkpoint.step_uri(root, INTERVAL),
    )
    # ...and a later checkpoint whose upload was cut short (no COMMITTED): never resumed from.
    storage.write_bytes(storage.join(checkpoint.step_uri(root, 5), "deepspeed", "state", "garbage.pt"), b"cut")
    report = train.run(cfg)
    assert report["resumed_from"] == checkpoint.step_uri(root, INTERVAL)
    assert report["steps"] == STEPS
    assert checkpoint.committed_steps(root) == [INTERVAL, STEPS]
    assert not storage.exists(checkpoint.step_uri(root, 5))  # pruned once a newer step committed
    # bf16 on CPU is deterministic too, so both precisions must match bit for bit.
    assert_same_weights(final_weights(root), final_weights(ref_root))
    meta = checkpoint.read_meta(checkpoint.step_uri(root, STEPS))
    ref_meta = checkpoint.read_meta(checkpoint.step_uri(ref_root, STEPS))
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
    cfg = tiny_config(str(tmp_path / "run"), shards, *run_overrides(1, "fp32", s3_endpoint))
    root = cfg.paths.checkpoints
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(train.run(cfg)))
    runner.start()
    marker = Path(checkpoint.step_uri(root, INTERVAL)) / checkpoint.COMMITTED
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
def test_world_size_change_with_partitioned_state_is_refused(reference, shards, s3_endpoint):
    ref_root = reference(1, "fp32")
    out = ref_root.rsplit("/", 1)[0]
    cfg = tiny_config(out, shards, *run_overrides(1, "fp32", s3_endpoint), "distributed.num_workers=1", "train.steps=9")
    with pytest.raises(CheckpointError, match="resume with distributed.num_workers=2"):
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
