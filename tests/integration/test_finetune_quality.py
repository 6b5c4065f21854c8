"""The quality check's plumbing end to end: corpus -> pretrain -> export with this system, then the
exported discriminator and a random-init twin fine-tuned by the finetune stage (benchmarks/bench_quality.py
at a budget too small for a margin; the measured margins are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from bench_quality import BUDGETS, PIPELINE
from helpers import ROOT, require_shared_data


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_named_budget_is_a_valid_pipeline_config(budget):
    from koelectra_dist.config import config_from_dict
    from koelectra_dist.configbase import apply_overrides

    data = json.loads(json.dumps(PIPELINE))
    data["run"]["output_uri"], data["corpus"]["inputs"] = "outputs/check", ["corpus.txt"]
    assert apply_overrides(data, BUDGETS[budget]) == []
    config_from_dict(data)  # a ConfigError names any key or value a budget gets wrong


@pytest.mark.slow
def test_quality_check_runs_end_to_end(tmp_path):
    require_shared_data("nsmc", "corpus.txt.gz")
    require_shared_data("korsts", "sts-dev.tsv")
    command = [
        sys.executable,
        "benchmarks/bench_quality.py",
        "--out",
        str(tmp_path),
        "--corpus-lines",
        "20000",
        "--set",
        "train.steps=10",
        "--set",
        "train.warmup_steps=2",
        "--set",
        "finetune.max_train_examples=300",
        "--set",
        "finetune.max_eval_examples=300",
        "--set",
        "finetune.epochs=1",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    tasks = {line["task"]: line for line in lines if "task" in line}
    assert set(tasks) == {"nsmc", "korsts"}
    assert tasks["nsmc"]["metric"] == "accuracy" and tasks["korsts"]["metric"] == "spearman"
    assert 0 <= tasks["nsmc"]["pretrained"] <= 100 and 0 <= tasks["nsmc"]["random_init"] <= 100
    assert all(math.isfinite(t["margin"]) for t in tasks.values() if t["margin"] is not None)
    assert [len(seeds) for seeds in tasks["nsmc"]["seeds"].values()] == [1, 1]
    assert lines[-1]["pretrain"]["steps"] == 10
    results = json.loads((tmp_path / "finetune-pretrained" / "results.json").read_text())
    assert results["model"].endswith("discriminator") and results["tasks"]["nsmc"]["runs"][0]["train_examples"] == 300
