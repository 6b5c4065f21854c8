"""What a resize of an elastic pre-training run costs, on a local autoscaling cluster.

    .venv/bin/python benchmarks/bench_elastic.py [--steps 24] [--delay 0.2]

scripts/autoscaling_cluster.py starts Ray's autoscaler with no worker node (nodes of 1 CPU, at most
2); the tiny model pre-trains with distributed.num_workers [1, 2] through the observed driver of the
tests (tests/integration/elastic_driver.py: the product's driver and worker loop on a model that
records each micro-batch with its time). The run starts on the first node; the benchmark times

- grow: from the second node joining the cluster to the first micro-batch trained on 2 workers
  (Ray's resize check, distributed.resize_check_s=2 here, the restart, the checkpoint load and its
  conversion to the new worker count);
- node loss: from killing that node (no notice) to the first micro-batch trained after it on 1
  worker (failure detection, the settle wait for Ray to declare the node dead, the restart);

and for each, the micro-batches trained again (the steps since the last checkpoint). The baseline,
from the same run, is the mean step time on 1 worker: each resize is also given in steps.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from autoscaling_cluster import AutoscalingCluster  # noqa: E402
from helpers import write_shard_set  # noqa: E402

DRIVER = ROOT / "tests" / "integration" / "elastic_driver.py"


def records(folder: Path) -> list[dict]:
    lines = []
    for f in folder.glob("*.jsonl"):
        lines += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return sorted(lines, key=lambda r: r["time"])


def first_after(seen: list[dict], when: float, world: int) -> dict | None:
    return next((r for r in seen if r["time"] > when and r["world"] == world), None)


def redone(seen: list[dict], restart: dict | None, until: float) -> int:
    """Micro-batches the resized group (from `restart`, its first record, to `until`) trained again:
    the work lost to the resize (the steps since the last committed checkpoint)."""
    if restart is None:
        return 0
    before = {r["seed"] for r in seen if r["time"] < restart["time"]}
    return sum(1 for r in seen if restart["time"] <= r["time"] < until and r["seed"] in before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--delay", type=float, default=0.2, help="sleep per micro-batch (s), to stretch the run")
    ap.add_argument("--interval", type=int, default=4, help="checkpoint.interval_steps")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-elastic-"))
    write_shard_set(str(work / "corpus"), 300, 16, [7, 5, 9])
    overrides = [
        f"train.shards_uri={work / 'corpus' / 'shards'}",
        "model.vocab_size=300",
        f"train.steps={args.steps}",
        "train.global_batch_size=8",
        "train.micro_batch_size=4",
        f"checkpoint.interval_steps={args.interval}",
        "distributed.num_workers=[1, 2]",
        "distributed.resize_check_s=2",
        "distributed.max_failures=3",
    ]
    with AutoscalingCluster(node_cpus=1, max_nodes=2, replace_lost_nodes=False) as cluster:
        env = {**cluster.env, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, str(DRIVER), str(work / "run"), str(work / "records"), str(args.delay)]
        cmd += [a for o in overrides for a in ("--set", o)]
        with open(work / "driver.log", "w") as log:
            driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        start = time.time()
        # the second node joins
        while len(cluster.worker_nodes()) < 2 and driver.poll() is None:
            time.sleep(0.1)
        joined = time.time()
        while driver.poll() is None and first_after(records(work / "records"), joined, 2) is None:
            time.sleep(0.2)
        grown = first_after(records(work / "records"), joined, 2)
        time.sleep(1.0)  # a few steps on 2 workers
        lost_at = time.time()
        cluster.remove_node(cluster.worker_nodes()[-1])
        driver.wait(timeout=900)
        end = time.time()
    seen = records(work / "records")
    grown = first_after(seen, joined, 2)
    shrunk = first_after(seen, lost_at, 1)
    one_worker = [r for r in seen if r["world"] == 1 and r["time"] > lost_at and r["rank"] == 0]
    step_s = statistics.median(b["time"] - a["time"] for a, b in zip(one_worker, one_worker[1:], strict=False)) * 2
    result = {
        "ok": driver.returncode == 0,
        "steps": args.steps,
        "checkpoint_interval_steps": args.interval,
        "delay_per_micro_batch_s": args.delay,
        "step_s_one_worker": round(step_s, 3),
        "grow_s": round(grown["time"] - joined, 2) if grown else None,
        "grow_redone_micro_batches": redone(seen, grown, lost_at),
        "node_loss_s": round(shrunk["time"] - lost_at, 2) if shrunk else None,
        "node_loss_redone_micro_batches": redone(seen, shrunk, end),
        "total_s": round(end - start, 1),
    }
    for key in ("grow", "node_loss"):
        if result[f"{key}_s"] is not None:
            result[f"{key}_in_steps"] = round(result[f"{key}_s"] / step_s, 1)
    result["log"] = str(work / "driver.log")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
