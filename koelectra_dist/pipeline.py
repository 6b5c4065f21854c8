"""Runs the configured stages in order, each reading what the one before it wrote."""

from __future__ import annotations

import json
import logging
import time

from koelectra_dist import ray_runtime, stages
from koelectra_dist.config import Config, placeholder_problems
from koelectra_dist.errors import ConfigError

log = logging.getLogger(__name__)


def run_stages(cfg: Config) -> dict[str, dict]:
    problems = placeholder_problems(cfg)
    if problems:
        raise ConfigError("the config still has placeholders:\n  - " + "\n  - ".join(problems))
    reports = {}
    if stages.NEEDS_RAY & set(cfg.run.stages):
        ray_runtime.connect(cfg)
    for name in cfg.run.stages:
        log.info("stage %s: starting", name)
        start = time.time()
        report = stages.entry_point(name)(cfg)
        log.info(
            "stage %s: done in %.1fs\n%s",
            name,
            time.time() - start,
            json.dumps(report, indent=2, ensure_ascii=False, default=str),
        )
        reports[name] = report
    return reports
