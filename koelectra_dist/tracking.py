"""Training and probe metrics to MLflow, when `run.mlflow_tracking_uri` names a tracking server
or a local folder (through MLflow's own client; MLflow is the optional extra `[mlflow]`).

A stage's driver opens (or finds) one MLflow run per checkpoint folder and records its id in
`mlflow_run.json` there, so a resumed or restarted job, its Ray Train workers and the probes all
log to the same MLflow run. Tracking never stops training: a tracking server that fails is
reported once and then left alone for the rest of the process.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from koelectra_dist import storage
from koelectra_dist.config import Config
from koelectra_dist.errors import ConfigError

log = logging.getLogger(__name__)
RUN_FILE = "mlflow_run.json"


def tracking_uri(uri: str) -> str:
    """A local folder as MLflow's folder store (file://); MLflow keeps that store in maintenance
    mode and refuses it unless asked, so ask: a folder is what a single machine has at hand."""
    if "://" not in uri:
        uri = "file://" + os.path.abspath(uri)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _client(cfg: Config) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri(cfg.run.mlflow_tracking_uri))


def start_run(cfg: Config, root: str) -> str | None:
    """On a driver: the MLflow run of checkpoint folder `root` (recorded there), created with the
    resolved config as its parameters on first use. None when the config names no tracking URI."""
    if not cfg.run.mlflow_tracking_uri:
        return None
    record = storage.join(root, RUN_FILE)
    if storage.exists(record):
        return storage.read_json(record)["run_id"]
    client = _client(cfg)
    name = cfg.run.mlflow_experiment or cfg.run.name
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run_id = client.create_run(experiment_id, run_name=cfg.run.name).info.run_id
    _log_params(client, run_id, cfg.to_dict())
    storage.write_json(record, {"run_id": run_id, "experiment": name, "tracking_uri": cfg.run.mlflow_tracking_uri})
    log.info("MLflow: run %s in experiment %r at %s", run_id, name, cfg.run.mlflow_tracking_uri)
    return run_id


def _log_params(client: Any, run_id: str, config: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = str(value)[:6000]  # MLflow's limit on a parameter's value

    walk("", config)
    items = [Param(k, v) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
        client.log_batch(run_id, params=items[i : i + 100])


class Tracker:
    """Logs metrics to the MLflow run recorded in `root` (see `start_run`); `open` gives None when
    the config names no tracking URI, so callers write `if tracker: tracker.log(...)`."""

    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id
        self._failed = False

    @classmethod
    def open(cls, cfg: Config, root: str) -> Tracker | None:
        if not cfg.run.mlflow_tracking_uri:
            return None
        record = storage.join(root, RUN_FILE)
        if not storage.exists(record):
            raise ConfigError(f"{record} is missing: the stage's driver starts the MLflow run (tracking.start_run)")
        return cls(_client(cfg), storage.read_json(record)["run_id"])

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._failed:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        try:
            for i in range(0, len(batch), 1000):  # MLflow takes at most 1,000 metrics a call
                self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])
        except Exception as e:  # noqa: BLE001 (a tracking outage, whatever its kind, must not stop training)
            self._failed = True
            log.warning(
                "MLflow: logging to run %s failed (%s); not logging to MLflow again in this process", self.run_id, e
            )
