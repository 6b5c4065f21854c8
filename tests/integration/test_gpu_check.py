"""benchmarks/gpu_check.py on CPU (its smoke): each section in its own guard, the JSON rewritten after
every section, the budget skipping (and naming) what would not fit, and the FusedAdam fallback, so
the GPU run is known to work before it is paid for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, free_port

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ["environment", "fused_adam", "shipped", "real_stream", "sync_debug", "profile", "compile"]
SECTIONS += ["peak_memory", "zero_stages", "checkpoint_save"]


def run_watching(args: list[str], out: Path, *, python: str = sys.executable, env: dict | None = None):
    """Run gpu_check, reading --out every 50 ms while it runs: every version seen must parse.
    Returns (exit status, stdout, stderr, the distinct versions seen)."""
    env = {**(env or os.environ), "MASTER_PORT": str(free_port()), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(
        [python, str(GPU_CHECK), "--smoke", "--out", str(out), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[dict] = []
    deadline = time.monotonic() + 1200
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists():
            report = json.loads(out.read_text())  # never half a file: it is replaced whole
            if not seen or report != seen[-1]:
                seen.append(report)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    seen.append(json.loads(out.read_text()))
    return proc.returncode, stdout, stderr, seen


def test_gpu_check_with_fused_adam_failing_writes_every_other_section(tmp_path):
    out = tmp_path / "check.json"
    code, stdout, stderr, seen = run_watching(["--fail-fused-adam", "--budget-s", "3600"], out)
    assert code == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report == seen[-1] and report["complete"] and not report["skipped"]
    sections = report["sections"]
    assert sections["fused_adam"]["status"] == "error" and "forced" in sections["fused_adam"]["error"]
    for name in SECTIONS[2:] + ["four_examples_per_row"]:
        assert sections[name]["status"] == "ok", f"{name}: {sections[name]}"
    # the JSON was rewritten section after section, not once at the end
    done = [len([s for s in r["sections"].values() if s["status"] != "running"]) for r in seen]
    assert len(set(done)) >= len(SECTIONS) // 2 and done == sorted(done)
    variants = {v["variant"]: v for v in report["variants"]}
    assert set(report["summary"]) == set(variants)
    assert {"shipped", "real_stream", "compile", "zero0_accum2", "zero2_accum2"} <= set(variants)
    for name, v in variants.items():
        assert v["optimizer"] == "ElectraAdamW", name
        assert v["step_s"] > 0 and v["tokens_per_s"] > 0, name
        assert set(report["summary"][name]) == {"mfu", "step_time_s", "peak_memory_gib"}
    assert 0 <= variants["real_stream"]["masked_micro_batch_share"] <= 1
    assert report["environment"]["torch"] and report["model"]["smoke"]
    profile = report["profile"]
    assert abs(sum(profile["time_fraction_by_kernel_class"].values()) - 1) < 0.01
    assert profile["attention_backend"] and profile["wall_s"] > 0
    assert report["checkpoint_save"]["stall_s"] > 0 and report["checkpoint_save"]["bytes"] > 0
    assert report["peak_memory"][0]["micro_batch"] == 8
    assert "sync_sites" in report["sync_debug"]


def test_gpu_check_budget_skips_what_would_not_fit_and_says_why(tmp_path):
    out = tmp_path / "check.json"
    # compile alone is estimated above 20 s in the smoke: a 10 s budget cannot hold it
    code, stdout, stderr, seen = run_watching(["--budget-s", "10"], out)
    assert code == 0, stderr[-3000:]
    report = seen[-1]
    assert report["complete"] and report["sections"]["environment"]["status"] == "ok"
    skipped = {s["section"]: s["reason"] for s in report["skipped"]}
    assert "compile" in skipped and "--budget-s 10" in skipped["compile"]
    for name in SECTIONS:
        status = report["sections"][name]
        assert status["status"] in ("ok", "skipped"), f"{name}: {status}"
        assert (status["status"] == "skipped") == (name in skipped)


def test_device_kit_rehearsal_installs_offline_and_runs_the_check_from_there(tmp_path):
    """scripts/gpu_kit.sh as on the device, here: the wheels gathered (for this interpreter), installed
    with --no-index into a fresh folder, gpu_check run with that folder first on the path."""
    kit, site = tmp_path / "whl", tmp_path / "site"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = {**os.environ, "KIT_DIR": str(kit), "KIT_PYTHON_VERSION": version, "PYTHON": sys.executable}
    script = str(ROOT / "scripts" / "gpu_kit.sh")
    gathered = subprocess.run(["bash", script, "gather"], env=env, capture_output=True, text=True, timeout=900)
    if gathered.returncode != 0:
        pytest.skip(f"the kit's wheels cannot be gathered here (no package index?): {gathered.stderr[-500:]}")
    assert "MiB (limit 64 MiB)" in gathered.stdout
    installed = subprocess.run(["bash", script, "install", str(site)], env=env, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"
    out = tmp_path / "check.json"
    code, _, stderr, seen = run_watching(["--budget-s", "10"], out, env=env)
    assert code == 0, stderr[-3000:]
    report = seen[-1]
    assert report["complete"] and report["skipped"]
    assert all(s["reason"] for s in report["skipped"])
    assert all(Path(p) == site for p in report["environment"]["imported_from"].values())
