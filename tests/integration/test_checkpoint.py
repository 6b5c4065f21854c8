"""Checkpoint folders: only committed steps count, retention, reading back, and the seal of every
file that makes a damaged step fall back to an intact earlier one (local and S3)."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.checkpoint import store, upload
from koelectra_dist.pretrain.meta import CheckpointMeta


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ck")
    return request.getfixturevalue("s3_bucket") + "/run/checkpoints"


def meta(step: int) -> CheckpointMeta:
    return CheckpointMeta(
        step=step,
        consumed_samples=8 * step,
        world_size=1,
        zero_stage=1,
        precision="fp32",
        vocab_sha256="0" * 64,
        metrics={},
        config={},
    )


WEIGHTS = "deepspeed/state/mp_rank_00_model_states.pt"


def fake_step(root: str, step: int, committed: bool) -> str:
    """A step folder as `upload.save` leaves it (engine files, meta, and maybe the marker
    sealing their sizes and hashes)."""
    uri = store.step_uri(root, step)
    files = {
        WEIGHTS: b"weights-%d" % step,
        "rng/rank-00000.pt": b"rng",
        store.META: json.dumps(meta(step).to_json()).encode(),
    }
    for name, data in files.items():
        if name != store.META or committed:
            storage.write_bytes(storage.join(uri, *name.split("/")), data)
    if committed:
        sealed = {name: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for name, d in files.items()}
        storage.write_json(storage.join(uri, store.COMMITTED), {"step": step, "files": sealed})
    return uri


def test_step_uri_format():
    assert store.step_uri("s3://b/ck", 42) == "s3://b/ck/step-00000042"


def test_only_committed_steps_count(root):
    assert store.committed_steps(root) == [] and store.latest_committed(root) is None
    fake_step(root, 2, committed=True)
    fake_step(root, 4, committed=True)
    half = fake_step(root, 6, committed=False)  # an upload cut short
    storage.write_bytes(storage.join(root, "tensorboard", "events.out"), b"x")  # not a step
    assert store.committed_steps(root) == [2, 4]
    assert store.latest_committed(root) == store.step_uri(root, 4)
    assert not store.is_committed(half)
    with pytest.raises(CheckpointError, match="no COMMITTED marker"):
        store.read_meta(half)
    with pytest.raises(CheckpointError, match="incomplete"):
        store.materialize(half, "unused")
    assert store.read_meta(store.step_uri(root, 4)) == meta(4)


def test_prune_keeps_last_k_and_drops_stale_partial_uploads(tmp_path):
    root = str(tmp_path / "ck")
    for s in (1, 2, 3):
        fake_step(root, s, committed=True)
    fake_step(root, 4, committed=False)  # crashed before step 5 was saved: stale
    fake_step(root, 5, committed=True)
    fake_step(root, 6, committed=False)  # maybe still uploading: kept
    assert store.prune(root, keep_last=2) == [1, 2, 4]
    assert store.committed_steps(root) == [3, 5]
    assert storage.exists(store.step_uri(root, 6))


def test_materialize(root, tmp_path):
    uri = fake_step(root, 3, committed=True)
    local = store.materialize(uri, str(tmp_path / "dl"))
    assert storage.read_bytes(storage.join(local, *WEIGHTS.split("/"))) == b"weights-3"


def test_verify_names_each_damaged_file(root, tmp_path):
    uri = fake_step(root, 3, committed=True)
    assert store.verify(uri) == []
    storage.write_bytes(storage.join(uri, *WEIGHTS.split("/")), b"weights-4")  # one flipped bit: same size
    storage.write_bytes(storage.join(uri, "rng", "rank-00000.pt"), b"rn")  # truncated
    assert store.verify(uri) == [
        f"{WEIGHTS}: sha256 differs from the one saved (the file is damaged)",
        "rng/rank-00000.pt: 2 bytes, 3 when saved (truncated or replaced)",
    ]
    storage.remove(storage.join(uri, "rng"))
    assert "rng/rank-00000.pt: missing" in store.verify(uri)
    # a local copy (what a worker downloaded) is checked the same way
    assert store.verify(uri, store.materialize(uri, str(tmp_path / "dl")))[0].startswith(WEIGHTS)


def test_a_damaged_latest_step_falls_back_loudly_and_none_left_is_an_error(root, caplog):
    fake_step(root, 3, committed=True)
    latest = fake_step(root, 6, committed=True)
    storage.write_bytes(storage.join(latest, *WEIGHTS.split("/")), b"weights-7")
    with caplog.at_level(logging.WARNING):
        assert store.latest_verified(root) == store.step_uri(root, 3)
    assert f"{latest} is damaged and will not be used" in caplog.text and "sha256 differs" in caplog.text
    assert store.committed_steps(root) == [3]  # the damaged step is rejected, its files kept
    assert "sha256 differs" in storage.read_json(storage.join(latest, store.REJECTED))["problems"][0]
    storage.write_bytes(storage.join(store.step_uri(root, 3), "meta.json"), b"{")  # unreadable meta
    with pytest.raises(CheckpointError, match="every committed checkpoint under .* is damaged"):
        store.latest_verified(root)


def test_a_missing_bucket_is_named_before_any_work(s3_endpoint):
    from koelectra_dist.errors import StorageError

    with pytest.raises(StorageError, match="the bucket no-such-bucket does not exist; create it or correct the URI"):
        storage.check_writable("s3://no-such-bucket/run/checkpoints")


# ---------------------------------------------------------------- saving a real engine in the background


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A real DeepSpeed engine (tiny model, ZeRO 1, one gloo rank in this process)."""
    import os

    import torch
    import torch.distributed as dist
    from helpers import free_port, tiny_config

    from koelectra_dist.pretrain.engine import build_engine
    from koelectra_dist.pretrain.model import ElectraPretrainer

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"}
    os.environ.update(env, LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = tiny_config(str(tmp_path_factory.mktemp("run")), "distributed.num_workers=1", "train.micro_batch_size=8")
    torch.manual_seed(0)
    t = cfg.train
    engine, _, _ = build_engine(cfg, ElectraPretrainer(cfg.model, t.mask_prob, t.gen_weight, t.disc_weight))
    yield engine
    dist.destroy_process_group()


def train_one_step(engine) -> None:
    import torch

    from koelectra_dist.tokens import CLS_ID, SEP_ID

    ids = torch.randint(5, 1000, (8, 16))
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    out = engine(ids, torch.ones_like(ids), torch.zeros_like(ids))
    engine.backward(out.loss)
    engine.step()


def gated_uploads(monkeypatch, fail_at: str | None = None):
    """Uploads wait for the returned event (so a test sees the state mid-upload); the file whose
    name ends with `fail_at` fails as a refused write would."""
    import threading

    from koelectra_dist.errors import StorageError

    gate, real = threading.Event(), storage.upload_file

    def upload_file(src: str, uri: str) -> None:
        assert gate.wait(60)
        if fail_at and uri.endswith(fail_at):
            raise StorageError(f"{uri}: access denied (injected)")
        real(src, uri)

    monkeypatch.setattr(storage, "upload_file", upload_file)
    return gate


def test_training_goes_on_while_the_files_upload_and_the_step_is_committed_last(engine, root, monkeypatch):
    saver = upload.Uploader(root, keep_last=1, resumed_step=0)
    try:
        gate = gated_uploads(monkeypatch)
        times = saver.save(engine, 1, meta(1))
        assert 0 < times["write_s"] <= times["stall_s"]
        uri = store.step_uri(root, 1)
        # save returned with nothing uploaded yet: training goes on, the step is not committed
        train_one_step(engine)
        assert saver.poll() is None and not store.is_committed(uri)
        gate.set()
        step, seconds = saver.wait()
        assert step == 1 and seconds > 0 and store.verify(uri) == []
        sealed = store.sealed_files(uri)
        assert WEIGHTS in sealed and "deepspeed/latest" in sealed and store.META in sealed
        assert storage.read_json(storage.join(uri, "uploaded", "rank-00000.json")).keys() == sealed.keys() - {
            store.META
        }
        # the next save waits for nothing pending; retention keeps the newest step only
        saver.save(engine, 2, meta(2))
        assert saver.wait()[0] == 2 and store.committed_steps(root) == [2]
        assert store.read_meta(store.step_uri(root, 2)) == meta(2)
    finally:
        saver.close()


def test_a_failed_upload_commits_nothing_and_fails_the_run_at_the_next_step(engine, root, monkeypatch):
    from koelectra_dist.errors import StorageError

    upload.save(engine, root, 1, meta(1), keep_last=2)  # committed before it returns
    assert store.committed_steps(root) == [1]
    saver = upload.Uploader(root, keep_last=2, resumed_step=1)
    try:
        gate = gated_uploads(monkeypatch, fail_at="deepspeed/latest")
        saver.save(engine, 2, meta(2))  # returns: the failure comes later, from the background
        gate.set()
        with pytest.raises(StorageError, match="access denied"):
            for _ in range(600):  # the loop polls at each step boundary
                train_one_step(engine)
                saver.poll()
        uri = store.step_uri(root, 2)
        assert not store.is_committed(uri) and store.latest_verified(root) == store.step_uri(root, 1)
        assert "access denied" in storage.read_bytes(storage.join(uri, "uploaded", "rank-00000.failed")).decode()
        assert storage.exists(storage.join(uri, *WEIGHTS.split("/")))  # a partial upload, never used
    finally:
        saver.close()
    # the resumed run starts by deleting the leftovers, then commits that step afresh
    monkeypatch.undo()
    saver = upload.Uploader(root, keep_last=2, resumed_step=1)
    try:
        assert not storage.exists(uri)
        saver.save(engine, 2, meta(2))
        assert saver.wait()[0] == 2 and store.committed_steps(root) == [1, 2]
        assert not storage.exists(storage.join(uri, "uploaded", "rank-00000.failed"))
    finally:
        saver.close()
