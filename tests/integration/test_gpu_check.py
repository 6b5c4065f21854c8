"""benchmarks/gpu_check.py runs end to end (its CPU smoke): every variant, the profile and the
attention backend come back as one JSON object, so the GPU run is known to work before it is paid for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import ROOT, free_port


def test_gpu_check_smoke_runs_every_variant():
    env = {**os.environ, "MASTER_PORT": str(free_port()), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    variants = {v["variant"]: v for v in report["variants"]}
    expected = {"shipped", "padded_rows", "metrics_every_step", "electra_adamw", "compile"}
    expected |= {"deepspeed_buckets", "deepspeed_timers", "unfused_vocab", "four_examples_per_row"}
    assert set(variants) == expected
    for name, v in variants.items():
        assert "error" not in v, f"{name}: {v.get('error')}"
        assert v["step_s"] > 0 and v["tokens_per_s"] > 0 and v["step_time_vs_shipped"] > 0
    assert report["environment"]["torch"] and report["model"]["smoke"]
    profile = report["profile"]
    assert abs(sum(profile["time_fraction_by_kernel_class"].values()) - 1) < 0.01
    assert profile["attention_backend"]
