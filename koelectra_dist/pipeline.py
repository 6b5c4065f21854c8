"""Runs the configured stages in order, each reading what the one before it wrote.

A stage is a module with `run(cfg: Config) -> dict` (a JSON-able report of what it did). Modules
are imported only when their stage runs, so `--check` and unrelated stages stay light.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from koelectra_dist import ray_runtime, storage
from koelectra_dist.config import STAGES, Config, config_warnings, placeholder_problems
from koelectra_dist.errors import ConfigError, bullets
from koelectra_dist.layout import Layout

log = logging.getLogger(__name__)

STAGE_MODULES = {
    "corpus": "koelectra_dist.corpus.stage",
    "pretrain": "koelectra_dist.pretrain.stage",
    "export": "koelectra_dist.export.stage",
    "distill": "koelectra_dist.distill.stage",
    "finetune": "koelectra_dist.finetune.stage",
}
NEEDS_RAY = {"corpus", "pretrain", "distill", "finetune"}
OUTPUTS: dict[str, Callable[[Layout], str]] = {
    "corpus": lambda paths: paths.corpus,
    "pretrain": lambda paths: paths.checkpoints,
    "export": lambda paths: paths.export,
    "distill": lambda paths: paths.distill,
    "finetune": lambda paths: paths.finetune,
}
assert tuple(STAGE_MODULES) == STAGES


def entry_point(stage: str) -> Callable[[Config], dict[str, Any]]:
    return importlib.import_module(STAGE_MODULES[stage]).run


def run_stages(cfg: Config) -> dict[str, dict]:
    problems = placeholder_problems(cfg)
    if problems:
        raise ConfigError("the config still has placeholders:" + bullets(problems))
    for warning in config_warnings(cfg):
        log.warning("config: %s", warning)
    # Before any storage call (the probes below): the endpoint is the config's, not the environment's.
    storage.use_storage_config(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    for stage in cfg.run.stages:  # a missing bucket or a read-only folder fails now, not after hours
        storage.check_writable(OUTPUTS[stage](cfg.paths))
    if "pretrain" in cfg.run.stages and cfg.distributed.deepspeed_config:
        from koelectra_dist.pretrain.engine import user_ds_config  # torch: only when pre-training

        user_ds_config(cfg.distributed.deepspeed_config)  # a bad file fails before the corpus stage runs
    reports = {}
    if NEEDS_RAY & set(cfg.run.stages):
        ray_runtime.connect(cfg)
    for name in cfg.run.stages:
        log.info("stage %s: starting", name)
        start = time.time()
        if name == "pretrain" and cfg.probe.enabled():  # probes run beside training, from this driver
            from koelectra_dist.probe.watcher import ProbeWatcher

            with ProbeWatcher(cfg):
                report = entry_point(name)(cfg)
        else:
            report = entry_point(name)(cfg)
        log.info(
            "stage %s: done in %.1fs\n%s",
            name,
            time.time() - start,
            json.dumps(report, indent=2, ensure_ascii=False, default=str),
        )
        reports[name] = report
    return reports
