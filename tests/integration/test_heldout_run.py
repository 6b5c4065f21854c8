"""Held-out losses through a real run: logged at log steps, the same figure whatever the worker
count (at ZeRO 3, where each held-out forward gathers weights collectively and one rank of two runs
a spare forward), and without changing what is trained."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config, write_shard_set

from koelectra_dist.pretrain import stage as train
from koelectra_dist.pretrain.checkpoint.restore import consolidated_state_dict
from koelectra_dist.pretrain.checkpoint.store import step_uri

STEPS = 4


@pytest.mark.slow
def test_heldout_losses_are_the_same_on_one_and_two_workers_and_change_no_weight(ray_local, tmp_path):
    corpus = str(tmp_path / "corpus")
    write_shard_set(corpus, 1000, 64, [40, 40], seed=3, validation=10)
    runs = {}
    for workers, heldout in ((1, 10), (2, 10), (2, 0)):
        cfg = tiny_config(
            str(tmp_path / f"w{workers}-h{heldout}"),
            f"train.shards_uri={corpus}/shards",
            f"train.steps={STEPS}",
            "train.log_every=2",
            f"train.heldout_rows={heldout}",  # 3 batches of 4: one rank of two also runs a spare
            f"distributed.num_workers={workers}",
            "distributed.zero_stage=3",
            "distributed.precision=bf16",
            "checkpoint.interval_steps=100",
        )
        metrics = train.run(cfg)["metrics"]
        runs[workers, heldout] = metrics, consolidated_state_dict(step_uri(cfg.paths.checkpoints, STEPS))
    one, two = runs[1, 10][0], runs[2, 10][0]
    for key in ("heldout_gen_loss", "heldout_disc_loss"):
        assert one[key] == pytest.approx(two[key], rel=2e-2)  # bf16 weights trained by 1 or 2 workers
        assert 0 < one[key] < 10
    assert "heldout_gen_loss" not in runs[2, 0][0]
    with_eval, without = runs[2, 10][1], runs[2, 0][1]  # evaluating changes nothing of the training
    assert all(torch.equal(with_eval[k], without[k]) for k in with_eval)
