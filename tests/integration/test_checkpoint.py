"""Checkpoint folders: only committed steps count, retention, reading back, and the seal of every
file that makes a damaged step fall back to an intact earlier one (local and S3)."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from koelectra_dist import storage
from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain import checkpoint
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
    """A step folder as `checkpoint.save` leaves it (engine files, meta, and maybe the marker
    sealing their sizes and hashes)."""
    uri = checkpoint.step_uri(root, step)
    files = {
        WEIGHTS: b"weights-%d" % step,
        "rng/rank-00000.pt": b"rng",
        checkpoint.META: json.dumps(meta(step).to_json()).encode(),
    }
    for name, data in files.items():
        if name != checkpoint.META or committed:
            storage.write_bytes(storage.join(uri, *name.split("/")), data)
    if committed:
        sealed = {name: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for name, d in files.items()}
        storage.write_json(storage.join(uri, checkpoint.COMMITTED), {"step": step, "files": sealed})
    return uri


def test_step_uri_format():
    assert checkpoint.step_uri("s3://b/ck", 42) == "s3://b/ck/step-00000042"


def test_only_committed_steps_count(root):
    assert checkpoint.committed_steps(root) == [] and checkpoint.latest_committed(root) is None
    fake_step(root, 2, committed=True)
    fake_step(root, 4, committed=True)
    half = fake_step(root, 6, committed=False)  # an upload cut short
    storage.write_bytes(storage.join(root, "tensorboard", "events.out"), b"x")  # not a step
    assert checkpoint.committed_steps(root) == [2, 4]
    assert checkpoint.latest_committed(root) == checkpoint.step_uri(root, 4)
    assert not checkpoint.is_committed(half)
    with pytest.raises(CheckpointError, match="no COMMITTED marker"):
        checkpoint.read_meta(half)
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpoint.materialize(half, "unused")
    assert checkpoint.read_meta(checkpoint.step_uri(root, 4)) == meta(4)


def test_prune_keeps_last_k_and_drops_stale_partial_uploads(tmp_path):
    root = str(tmp_path / "ck")
    for s in (1, 2, 3):
        fake_step(root, s, committed=True)
    fake_step(root, 4, committed=False)  # crashed before step 5 was saved: stale
    fake_step(root, 5, committed=True)
    fake_step(root, 6, committed=False)  # maybe still uploading: kept
    assert checkpoint.prune(root, keep_last=2) == [1, 2, 4]
    assert checkpoint.committed_steps(root) == [3, 5]
    assert storage.exists(checkpoint.step_uri(root, 6))


def test_materialize(root, tmp_path):
    uri = fake_step(root, 3, committed=True)
    local = checkpoint.materialize(uri, str(tmp_path / "dl"))
    assert storage.read_bytes(storage.join(local, *WEIGHTS.split("/"))) == b"weights-3"


def test_verify_names_each_damaged_file(root, tmp_path):
    uri = fake_step(root, 3, committed=True)
    assert checkpoint.verify(uri) == []
    storage.write_bytes(storage.join(uri, *WEIGHTS.split("/")), b"weights-4")  # one flipped bit: same size
    storage.write_bytes(storage.join(uri, "rng", "rank-00000.pt"), b"rn")  # truncated
    assert checkpoint.verify(uri) == [
        f"{WEIGHTS}: sha256 differs from the one saved (the file is damaged)",
        "rng/rank-00000.pt: 2 bytes, 3 when saved (truncated or replaced)",
    ]
    storage.remove(storage.join(uri, "rng"))
    assert "rng/rank-00000.pt: missing" in checkpoint.verify(uri)
    # a local copy (what a worker downloaded) is checked the same way
    assert checkpoint.verify(uri, checkpoint.materialize(uri, str(tmp_path / "dl")))[0].startswith(WEIGHTS)


def test_a_damaged_latest_step_falls_back_loudly_and_none_left_is_an_error(root, caplog):
    fake_step(root, 3, committed=True)
    latest = fake_step(root, 6, committed=True)
    storage.write_bytes(storage.join(latest, *WEIGHTS.split("/")), b"weights-7")
    with caplog.at_level(logging.WARNING):
        assert checkpoint.latest_verified(root) == checkpoint.step_uri(root, 3)
    assert f"{latest} is damaged and will not be used" in caplog.text and "sha256 differs" in caplog.text
    assert checkpoint.committed_steps(root) == [3]  # the damaged step is rejected, its files kept
    assert "sha256 differs" in storage.read_json(storage.join(latest, checkpoint.REJECTED))["problems"][0]
    storage.write_bytes(storage.join(checkpoint.step_uri(root, 3), "meta.json"), b"{")  # unreadable meta
    with pytest.raises(CheckpointError, match="every committed checkpoint under .* is damaged"):
        checkpoint.latest_verified(root)


def test_a_missing_bucket_is_named_before_any_work(s3_endpoint):
    from koelectra_dist.errors import StorageError

    with pytest.raises(StorageError, match="the bucket no-such-bucket does not exist; create it or correct the URI"):
        storage.check_writable("s3://no-such-bucket/run/checkpoints")
