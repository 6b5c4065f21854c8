"""What downstream probes cost pre-training: step time with probes on vs off, on the same local Ray
cluster, the probe's CPU taken from outside the training workers; and the extra wall time at the
end (awaiting the last probes).

    .venv/bin/python benchmarks/bench_probe.py                    # demo model, 1 CPU worker + 1 probe CPU
    .venv/bin/python benchmarks/bench_probe.py --steps 200 --interval 25 --repeats 2

Builds the demo's shards once (the corpus stage on konlpy's text), then pre-trains the demo model
with probes off and on, alternating, --repeats times each, every run from scratch into its own
checkpoint folder. The probes fine-tune NSMC (../shared/data; else the run stops) on a small budget.
Step times are the pipeline's own (rank 0's TensorBoard events), the first logging window left
out. Prints one JSON line: mean step time per mode, their ratio (on / off), wall times, probe
records per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_pretrain import scalars

ROOT = Path(__file__).resolve().parents[1]
NSMC = ROOT.parent / "shared" / "data" / "nsmc" / "ratings_train.txt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--interval", type=int, default=20, help="checkpoint.interval_steps (every one is probed)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1, help="runs per mode, alternating off/on")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not NSMC.exists():
        raise SystemExit(f"needs {NSMC} (the probes fine-tune NSMC)")

    from koelectra_dist.config import load_config
    from koelectra_dist.pipeline import run_stages
    from koelectra_dist.probe import records

    out = Path(tempfile.mkdtemp(prefix="bench_probe_")).resolve()
    demo = ROOT / "configs" / "demo.json"
    common = [
        f"corpus.output_uri={out / 'corpus'}",
        "distributed.num_workers=1",  # 1 CPU trains; the probe's CPU is the other one
        "train.global_batch_size=16",
        f"train.steps={args.steps}",
        f"train.log_every={args.log_every}",
        f"checkpoint.interval_steps={args.interval}",
        f"finetune.data_dir={NSMC.parent.parent}",
    ]
    run_stages(load_config(demo, [f"run.output_uri={out / 'corpus-run'}", 'run.stages=["corpus"]', *common]))
    probes = [
        'probe.tasks=["nsmc"]',
        "probe.max_train_examples=500",
        "probe.max_eval_examples=500",
        "probe.epochs=1",
        "probe.cpus=1",
    ]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for i in range(args.repeats):
        for mode in ("off", "on"):
            run = out / f"{mode}-{i}"
            overrides = [f"run.output_uri={run}", 'run.stages=["pretrain"]', *common, *(probes if mode == "on" else [])]
            cfg = load_config(demo, overrides + args.set)
            start = time.time()
            run_stages(cfg)
            wall = time.time() - start
            series = scalars(str(Path(cfg.paths.checkpoints) / "tensorboard"))
            steady = [v for step, v in series["train/step_time_s"] if step > args.log_every]
            recs = records.read(records.probe_dir(cfg.paths.checkpoints)) if mode == "on" else []
            runs[mode].append(
                {
                    "step_time_s": statistics.mean(steady),
                    "wall_s": round(wall, 1),
                    "probes": [(r["step"], r["status"], round(r.get("seconds", 0), 1)) for r in recs],
                }
            )
    off = statistics.mean(r["step_time_s"] for r in runs["off"])
    on = statistics.mean(r["step_time_s"] for r in runs["on"])
    result = {
        "device": "cpu",
        "training_workers": 1,
        "probe_cpus": 1,
        "steps": args.steps,
        "interval": args.interval,
        "step_time_off_s": round(off, 4),
        "step_time_on_s": round(on, 4),
        "step_time_on_over_off": round(on / off, 3),
        "wall_off_s": statistics.mean(r["wall_s"] for r in runs["off"]),
        "wall_on_s": statistics.mean(r["wall_s"] for r in runs["on"]),
        "runs": runs,
    }
    print(json.dumps(result), flush=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
