"""The quick start's demo (configs/demo.json) as a user runs it: `launch.py` in a subprocess, its
console captured. Its discriminator must learn (AUC >= 0.7 and precision / recall above chance at
the last step) and must not be collapsed: fine-tuned on a slice of NSMC it must clearly beat the
majority class (>= 60%), reported beside the same shape from random weights. The console must
carry each metric line once (Ray Train's print patch doubled them), no Ray Data progress blocks and
no error-level line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SHARED_DATA, require_shared_data

from koelectra_dist.config import load_config
from koelectra_dist.finetune.config import resolve_tasks
from koelectra_dist.finetune.data import read_split
from koelectra_dist.finetune.trainer import finetune

DEMO = ROOT / "configs" / "demo.json"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """The demo's corpus, pretrain and export stages into a temporary folder: (output, console)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--config", str(DEMO), "--set", f"run.output_uri={out}"],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": "local"},  # its own Ray, not another one running on this node
        capture_output=True,
        text=True,
        timeout=540,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]
    return out, console


def test_console_has_each_metric_line_once(demo_run):
    _, console = demo_run
    cfg = load_config(DEMO)
    steps = re.findall(r"\] step (\d+)/(\d+) \((\d+)%, ETA [\d:]+\)", console)
    expected = [s for s in range(1, cfg.train.steps + 1) if s % cfg.train.log_every == 0]
    assert [int(s) for s, _, _ in steps] == expected, console[-4000:]
    assert int(steps[-1][2]) == 100
    assert "logging_progress" not in console and "Running Dataset" not in console
    print(f"\ndemo console: {len(console.splitlines())} lines, {len(steps)} metric lines")


def test_console_has_no_error_lines(demo_run):
    """Nothing at error level that is not an error: a newcomer reads one as a fault."""
    _, console = demo_run
    errors = re.findall(r"^(?:\[[^\]]* E \d+ \d+\] .*|.*\tERROR .*)$", console, re.M)
    assert not errors, "\n".join(errors)


def test_demo_discriminator_learns(demo_run):
    out, _ = demo_run
    m = json.loads((out / "hf" / "export_info.json").read_text())["meta"]["metrics"]
    print(f"\ndemo final metrics: {json.dumps({k: round(v, 3) for k, v in m.items()})}")
    replaced = 0.15 * 0.85  # chosen x not sampled back as the original (about; the generator is weak)
    positive_rate = m["disc_recall"] * replaced / max(m["disc_precision"], 1e-9)
    assert m["disc_auc"] >= 0.7, m
    assert m["disc_precision"] > 2 * replaced, m
    assert m["disc_recall"] > 2 * positive_rate, m


def test_export_names_no_machine_folders(demo_run):
    out, _ = demo_run
    for path in (out / "hf").rglob("*.json"):
        assert str(out.parent) not in path.read_text(encoding="utf-8"), path
    info = json.loads((out / "hf" / "export_info.json").read_text())
    assert info["checkpoint"] == "checkpoints/step-00000200" and info["meta"]["config"]["run"]["output_uri"] == "run"


def random_copy(model_dir: Path, dest: Path) -> Path:
    """The same shape and tokenizer with fresh weights (ELECTRA's initialisation)."""
    from transformers import AutoConfig, ElectraForPreTraining

    shutil.copytree(model_dir, dest)
    torch.manual_seed(0)
    ElectraForPreTraining(AutoConfig.from_pretrained(model_dir)).save_pretrained(dest)
    return dest


def test_demo_discriminator_fine_tunes_on_nsmc(demo_run, tmp_path):
    require_shared_data("nsmc", "ratings_train.txt")
    out, _ = demo_run
    ft = load_config(DEMO).finetune
    (spec,) = resolve_tasks(ft)
    train = read_split(str(SHARED_DATA), spec, "train", ft.max_train_examples)
    dev = read_split(str(SHARED_DATA), spec, "dev", ft.max_eval_examples)
    majority = max(dev.labels.count(0), dev.labels.count(1)) / len(dev)
    torch.set_num_threads(2)
    pretrained = out / "hf" / "discriminator"
    scores = {
        name: finetune(str(folder), spec, train, dev, seed=ft.seed)["score"]
        for name, folder in [("pre-trained", pretrained), ("random", random_copy(pretrained, tmp_path / "random"))]
    }
    print(f"\nNSMC dev accuracy (demo recipe): {scores}, majority class {100 * majority:.1f}")
    assert scores["pre-trained"] >= 60.0, scores
