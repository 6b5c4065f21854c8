"""Probes while pre-training, end to end on the local Ray instance: one training worker (1 CPU),
probes in Ray tasks on the other CPU, a tiny task written here (no shared data needed). Every
scheduled checkpoint gets exactly one record, the console and TensorBoard show them, keep_last
never prunes a checkpoint a probe needs, `export.checkpoint: best` exports the step the records
name, a restarted run that also loses a training worker neither repeats nor loses a probe, and
MLflow (a local folder as the tracking URI) holds one run with the training and probe metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import tiny_config, write_shard_set
from test_train import train_worker_pids

from koelectra_dist import storage, tracking
from koelectra_dist.pipeline import run_stages
from koelectra_dist.pretrain.checkpoint import store
from koelectra_dist.probe import records
from koelectra_dist.probe.schedule import best

STEPS, INTERVAL = 8, 2


def write_task(folder: Path) -> dict:
    """A two-class task over the shard vocabulary's words: label 1 when the first word is w5..w49."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [("train.tsv", 48), ("dev.tsv", 24)]:
        lines = ["text\tlabel"]
        for _ in range(n):
            words = [f"w{rng.randrange(5, 95)}" for _ in range(6)]
            lines.append(f"{' '.join(words)}\t{int(int(words[0][1:]) < 50)}")
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "name": "toy",
        "train_file": str(folder / "train.tsv"),
        "dev_file": str(folder / "dev.tsv"),
        "text_columns": ["text"],
        "label_column": "label",
        "labels": ["0", "1"],
        "metric": "accuracy",
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("probe-corpus")
    write_shard_set(str(out), 1000, 64, [30, 20], seed=5)
    return str(out), write_task(out / "task")


def probe_config(out: str, corpus: tuple[str, dict], *overrides: str):
    folder, task = corpus
    return tiny_config(
        out,
        f"corpus.output_uri={folder}",
        'run.stages=["pretrain","export"]',
        "distributed.num_workers=1",  # the other CPU of the test's Ray is the probes'
        f"train.steps={STEPS}",
        f"checkpoint.interval_steps={INTERVAL}",
        "checkpoint.keep_last=1",
        "train.log_every=2",
        'probe.tasks=["toy"]',
        "probe.seeds=2",
        f"finetune.task_specs={json.dumps([task])}",
        "export.checkpoint=best",
        f"run.mlflow_tracking_uri={out}/mlruns",
        *overrides,
    )


def tensorboard_scalars(folder: str) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder)
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_probes_record_every_checkpoint_once_across_a_restart_and_export_picks_the_best(
    ray_local, corpus, tmp_path, capsys
):
    out = str(tmp_path / "run")
    first = probe_config(out, corpus, "train.steps=4", 'run.stages=["pretrain"]')
    run_stages(first)
    root = first.paths.checkpoints
    folder = records.probe_dir(root)
    path = Path(folder) / records.RECORDS
    assert [r["step"] for r in records.read(folder)] == [2, 4]
    # As if the driver died before step 4's probe finished: its line is not there.
    kept = path.read_text().splitlines()[0]
    path.write_text(kept + "\n")

    # The restarted run loses a training worker mid-run too (the driver retries it, probes go on).
    cfg = probe_config(out, corpus)
    reports: dict = {}
    runner = threading.Thread(target=lambda: reports.update(run_stages(cfg)))
    runner.start()
    marker = Path(store.step_uri(root, 6)) / store.COMMITTED
    deadline = time.time() + 300
    while not marker.exists() and runner.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    workers = train_worker_pids()
    assert marker.exists() and workers, "the run never reached its step-6 checkpoint with a live worker"
    os.kill(min(workers), signal.SIGKILL)
    runner.join()
    assert "export" in reports, "the run did not finish"
    recs = records.read(folder)
    assert [r["step"] for r in recs] == [2, 4, 6, 8]  # step 4's probe was not lost...
    assert len(path.read_text().splitlines()) == 4  # ...and step 2's not repeated
    assert recs[0] == json.loads(kept)
    for r in recs:
        assert r["status"] == "done", r  # a failed probe would mean its checkpoint was pruned under it
        toy = r["tasks"]["toy"]
        assert toy["metric"] == "accuracy" and len(toy["scores"]) == 2 and 0 <= toy["mean"] <= 100
        assert r["train_loss"] > 0
    console = capsys.readouterr().out
    for r in recs[1:]:
        assert f"probe step {r['step']}: toy accuracy {r['tasks']['toy']['mean']:.2f}" in console
    assert (Path(folder) / records.CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scalars = tensorboard_scalars(storage.join(root, "tensorboard", "probe"))
    # (step 4 twice: the first run wrote its scalar before the test took its line away)
    assert sorted(set(scalars["probe/toy_accuracy"])) == [2, 4, 6, 8] and "probe/toy_accuracy_std" in scalars
    # once every probe has read its checkpoint, keep_last=1 keeps the final step and the best one
    top = best(recs, "toy")
    assert set(store.committed_steps(root)) == {STEPS, top["step"]}
    assert reports["export"]["step"] == top["step"]
    info = json.loads((Path(cfg.paths.export) / "export_info.json").read_text())
    assert info["step"] == top["step"] and info["selection"]["step"] == top["step"]
    assert [p["step"] for p in info["selection"]["curve"]] == [2, 4, 6, 8]

    # MLflow: the restarted run went on logging to the first run's MLflow run
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(cfg.run.mlflow_tracking_uri))
    run_id = storage.read_json(storage.join(root, tracking.RUN_FILE))["run_id"]
    assert [r.info.run_id for r in client.search_runs([client.get_experiment_by_name(cfg.run.name).experiment_id])] == [
        run_id
    ]
    assert sorted({m.step for m in client.get_metric_history(run_id, "train/loss")}) == [2, 4, 6, 8]
    probe = {(m.step, m.value) for m in client.get_metric_history(run_id, "probe/toy_accuracy")}
    assert {step for step, _ in probe} == {2, 4, 6, 8}  # (step 4 twice, as in TensorBoard)
    assert all((r["step"], r["tasks"]["toy"]["mean"]) in probe for r in recs)
    assert client.get_run(run_id).data.params["model.hidden_size"] == str(cfg.model.hidden_size)
