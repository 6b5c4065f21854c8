"""Checkpoint verification and fallback on a small hand-made checkpoint folder (no engine, no
Ray): what the slow tests check on real DeepSpeed checkpoints, in the fast tier."""

from __future__ import annotations

import json
import logging

import pytest

from koelectra_dist.errors import CheckpointError
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.pretrain.meta import CheckpointMeta

FILES = {"deepspeed/state/mp_rank_00_model_states.pt": 3000, "deepspeed/state/zero_pp_rank_0_optim_states.pt": 5000}


def write_step(root, step: int, seal: bool = True) -> str:
    """A committed step folder as the uploader leaves it: files, meta.json, then COMMITTED sealing
    each file's size and sha256."""
    uri = store.step_uri(str(root), step)
    sealed = {}
    for name, size in FILES.items():
        path = root / f"step-{step:08d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes((step * 7 + i) % 251 for i in range(size)))
        sealed[name] = store.file_digest(str(path))
    meta = CheckpointMeta(
        step=step, consumed_samples=8 * step, world_size=1, zero_stage=1, precision="fp32",
        vocab_sha256="0" * 64, metrics={}, config={"model": {}},
    )  # fmt: skip
    (root / f"step-{step:08d}" / store.META).write_text(json.dumps(meta.to_json()))
    if seal:
        (root / f"step-{step:08d}" / store.COMMITTED).write_text(
            json.dumps({"step": step, "time": 0.0, "files": sealed})
        )
    return uri


def flip(path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("flip", "sha256 differs from the one saved"),
        ("truncate", "2999 bytes, 3000 when saved"),
        ("delete", "missing"),
    ],
)
def test_verify_names_each_damaged_file(tmp_path, damage, problem):
    uri = write_step(tmp_path, 3)
    assert store.verify(uri) == []
    target = tmp_path / "step-00000003" / next(iter(FILES))
    if damage == "flip":
        flip(target)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-1])
    else:
        target.unlink()
    (found,) = store.verify(uri)
    assert found.startswith(f"{next(iter(FILES))}: ") and problem in found


def test_a_damaged_latest_step_is_rejected_and_the_previous_one_used(tmp_path, caplog):
    for step in (3, 6, 9):
        write_step(tmp_path, step)
    write_step(tmp_path, 12, seal=False)  # an upload cut short: never a candidate
    flip(tmp_path / "step-00000009" / "deepspeed/state/zero_pp_rank_0_optim_states.pt")
    with caplog.at_level(logging.WARNING):
        assert store.latest_verified(str(tmp_path)) == store.step_uri(str(tmp_path), 6)
    assert "step-00000009 is damaged" in caplog.text and "zero_pp_rank_0_optim_states.pt" in caplog.text
    assert not (tmp_path / "step-00000009" / store.COMMITTED).exists()
    rejected = json.loads((tmp_path / "step-00000009" / store.REJECTED).read_text())
    assert "sha256 differs" in rejected["problems"][0]
    assert store.committed_steps(str(tmp_path)) == [3, 6]
    assert store.latest_verified(str(tmp_path)) == store.step_uri(str(tmp_path), 6)  # stable


@pytest.mark.parametrize(
    "seal", [b'{"step": 9, "ti', b"\xff\xfe not json", b"[]", b'{"step": 9, "time": 0, "files": {"a": 1}}']
)
def test_a_damaged_commit_marker_falls_back_like_any_damaged_file(tmp_path, seal, caplog):
    for step in (3, 9):
        write_step(tmp_path, step)
    (tmp_path / "step-00000009" / store.COMMITTED).write_bytes(seal)
    with caplog.at_level(logging.WARNING):
        assert store.latest_verified(str(tmp_path)) == store.step_uri(str(tmp_path), 3)
    assert f"{store.COMMITTED}: " in caplog.text
    assert (tmp_path / "step-00000009" / store.REJECTED).exists()


def test_every_step_damaged_is_refused_and_a_rejected_step_says_so(tmp_path):
    for step in (3, 6):
        write_step(tmp_path, step)
        flip(tmp_path / f"step-{step:08d}" / "deepspeed/state/mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="every committed checkpoint .* is damaged"):
        store.latest_verified(str(tmp_path))
    with pytest.raises(
        CheckpointError, match=r"step-00000006 was rejected by an earlier run: .*REJECTED: .*sha256 differs"
    ):
        store.read_meta(store.step_uri(str(tmp_path), 6))
    with pytest.raises(
        CheckpointError, match=r"meta.json is a file, not a step folder; name its folder .*step-00000006"
    ):
        store.read_meta(store.step_uri(str(tmp_path), 6) + "/meta.json")
    write_step(tmp_path, 9, seal=False)
    with pytest.raises(CheckpointError, match="no COMMITTED marker.*upload was cut short"):
        store.read_meta(store.step_uri(str(tmp_path), 9))
