"""MLflow tracking: config checks, one run per checkpoint folder, and an outage that never stops training."""

from __future__ import annotations

import logging

import pytest
from helpers import tiny_config

from koelectra_dist import storage, tracking
from koelectra_dist.errors import ConfigError

pytest.importorskip("mlflow", reason="MLflow is the optional extra [mlflow]")


def test_a_store_that_is_not_a_tracking_store_or_an_experiment_without_one_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"run.mlflow_tracking_uri: s3://b/x is not a tracking store"):
        tiny_config(str(tmp_path), "run.mlflow_tracking_uri=s3://b/x")
    with pytest.raises(ConfigError, match="run.mlflow_experiment: set, but run.mlflow_tracking_uri is not"):
        tiny_config(str(tmp_path), "run.mlflow_experiment=e")


def test_the_run_is_started_once_per_folder_and_metrics_land_in_it(tmp_path):
    from mlflow import MlflowClient

    cfg = tiny_config(str(tmp_path), f"run.mlflow_tracking_uri={tmp_path}/mlruns", "run.mlflow_experiment=exp")
    root = str(tmp_path / "checkpoints")
    run_id = tracking.start_run(cfg, root)
    assert tracking.start_run(cfg, root) == run_id  # a restarted driver finds it
    assert storage.read_json(storage.join(root, tracking.RUN_FILE))["experiment"] == "exp"
    tracker = tracking.Tracker.open(cfg, root)
    tracker.log({"train/loss": 2.5}, 3)
    tracker.log({"train/loss": 2.0}, 4)
    client = MlflowClient(tracking.tracking_uri(cfg.run.mlflow_tracking_uri))
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")] == [(3, 2.5), (4, 2.0)]
    assert client.get_run(run_id).data.params["train.steps"] == str(cfg.train.steps)
    assert tracking.start_run(tiny_config(str(tmp_path)), root) is None  # no tracking URI: nothing


def test_a_tracking_server_that_fails_is_reported_once_and_never_raises(monkeypatch, caplog):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = tracking.Tracker(MlflowClient("http://127.0.0.1:9"), "0" * 32)  # nothing listens on port 9
    with caplog.at_level(logging.WARNING, logger="koelectra_dist.tracking"):
        tracker.log({"train/loss": 1.0}, 1)
        tracker.log({"train/loss": 1.0}, 2)
    assert len([r for r in caplog.records if "MLflow: logging to run" in r.message]) == 1
