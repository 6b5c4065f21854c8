"""Elastic pre-training on a Ray cluster that autoscales (scripts/autoscaling_cluster.py: Ray's real
autoscaler, fake multi-node provider), starting with no worker node. A run with
distributed.num_workers=[1, 2] starts on one worker once the autoscaler has added a node, grows to
two when it adds the second, and, when that node is removed mid-run (not replaced, as a spot
market out of capacity), finishes on one.

Every micro-batch trained is recorded (tests/integration/elastic_driver.py): its global index (from
the torch seed it ran under), world size, examples and loss. The examples trained are exactly the
stream positions [0, steps x global batch), each at its own index; work redone after a resize (the
steps after the last checkpoint) trains the same examples with the same loss; and every loss equals
that of an uninterrupted one-worker run within LOSS_RTOL (the same math: only the order of
floating-point sums differs between 1 and 2 workers).

A preemption notice (Ray's node drain with the preemption reason, as `ray drain-node` sends it)
makes the workers checkpoint at once, and the run resumes from that checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from autoscaling_cluster import AutoscalingCluster  # noqa: E402
from elastic_driver import NO_DELAY  # noqa: E402

from koelectra_dist.pretrain.checkpoint import store  # noqa: E402
from koelectra_dist.pretrain.data import ShardStream, open_shards  # noqa: E402
from koelectra_dist.pretrain.loop import micro_batch_seed  # noqa: E402

STEPS, INTERVAL, MICRO, GLOBAL = 16, 2, 4, 8
LOSS_RTOL = 1e-4
DRIVER = Path(__file__).with_name("elastic_driver.py")


def settings(shards: str, workers: str) -> list[str]:
    return [
        f"train.shards_uri={shards}",
        "model.vocab_size=300",  # the tiny_shards vocabulary
        f"train.steps={STEPS}",
        f"train.global_batch_size={GLOBAL}",
        f"train.micro_batch_size={MICRO}",
        f"checkpoint.interval_steps={INTERVAL}",
        "checkpoint.keep_last=3",
        f"distributed.num_workers={workers}",
        "distributed.resize_check_s=2",
        "distributed.max_failures=3",
        "distributed.resource_wait_s=120",
    ]


def start_driver(cluster, out: Path, records: Path, delay_s: float, overrides: list[str]) -> subprocess.Popen:
    """The driver on `cluster`, or with `cluster=None` on a local Ray of its own."""
    base = cluster.env if cluster else {**os.environ, "RAY_ADDRESS": "local"}
    env = {**base, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [sys.executable, str(DRIVER), str(out), str(records), str(delay_s)]
    args += [a for o in overrides for a in ("--set", o)]
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    proc.log_path = log
    return proc


def read_records(records: Path) -> list[dict]:
    lines = []
    for f in records.glob("*.jsonl"):
        lines += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return sorted(lines, key=lambda r: r["time"])


def committed_by(root: str, world: int) -> bool:
    return any(store.read_meta(store.step_uri(root, s)).world_size == world for s in _steps(root))


def _steps(root: str) -> list[int]:
    try:
        return store.committed_steps(root)
    except Exception:  # noqa: BLE001 - the folder may not exist yet
        return []


def wait(proc: subprocess.Popen, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass  # killed below; its log says how far it got
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.log_path.read_text()


def full_speed_once_resumed(driver: subprocess.Popen, records: Path, since: float) -> None:
    """Once the run trains on one worker again after `since` (the node removal), it needs no more
    stretching: stop the driver's per-micro-batch delay (elastic_driver.NO_DELAY)."""
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        if any(r["world"] == 1 and r["time"] > since for r in read_records(records)):
            break
        time.sleep(0.5)
    (records / NO_DELAY).touch()


@pytest.fixture
def cluster():
    with AutoscalingCluster(node_cpus=1, max_nodes=2, replace_lost_nodes=False) as c:
        yield c


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM first: the driver then shuts down the Ray it started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_elastic_run_grows_with_the_autoscaler_and_finishes_after_losing_a_node(
    cluster, tiny_shards, tmp_path, request
):
    corpus, _ = tiny_shards
    shards = f"{corpus}/shards"
    assert cluster.worker_nodes() == [], "the cluster starts without worker nodes"
    out, records = tmp_path / "elastic", tmp_path / "records"
    # 1 s per micro-batch: the run must outlast the autoscaler's adding a node (~2 s a step on 1 worker)
    driver = start_driver(cluster, out, records, 1.0, settings(shards, "[1, 2]"))
    root = str(out / "checkpoints")
    # the run grows to two workers and commits a checkpoint written by both...
    deadline = time.monotonic() + 420
    while driver.poll() is None and time.monotonic() < deadline and not committed_by(root, 2):
        time.sleep(0.5)
    assert driver.poll() is None, wait(driver, 1)[-6000:]
    assert committed_by(root, 2), "the run never grew to 2 workers: " + wait(driver, 1)[-6000:]
    # The losses of an uninterrupted one-worker run, the reference: on a local Ray of its own, beside
    # the rest of the elastic run (which mostly sleeps), so that the test does not wait for it
    # afterwards. Not earlier: it would slow the first worker's start past the autoscaler's grow.
    ref_out, ref_records = tmp_path / "fixed", tmp_path / "ref-records"
    ref = start_driver(None, ref_out, ref_records, 0.0, settings(shards, "1"))
    request.addfinalizer(lambda: stop(ref))  # when an assertion below fails first
    # ...then a node goes away without notice and is not replaced
    nodes = cluster.worker_nodes()
    assert len(nodes) == 2
    removed = time.time()
    cluster.remove_node(nodes[-1])
    full_speed_once_resumed(driver, records, removed)
    log = wait(driver, 480)
    assert driver.returncode == 0, log[-8000:]
    report = json.loads(next(line for line in reversed(log.splitlines()) if line.startswith('{"checkpoint"')))
    assert report["step"] == STEPS and report["world_size"] == 1, report

    # resizes and their causes are in the driver's log
    # (on this one machine every node's log monitor forwards the same log files: lines repeat)
    lines = [line.split("resize: ", 1)[1] for line in log.splitlines() if "pretrain.elastic: resize: " in line]
    resizes = [line for i, line in enumerate(lines) if i == 0 or line != lines[i - 1]]
    assert resizes[0] == "starting 1 workers (the cluster holds them now)", resizes
    assert "1 -> 2 workers (grow: nodes were added)" in resizes, resizes
    lost = next(i for i, r in enumerate(resizes) if r.startswith("the worker group failed"))
    assert resizes[lost + 1] == "starting 1 workers (the cluster holds them now)", resizes

    # every stream position [0, STEPS x GLOBAL) trained exactly at its place: micro-batch c holds
    # positions [c x MICRO, (c + 1) x MICRO) of the one-worker stream
    seen = read_records(records)
    cfg_shards = open_shards(_cfg(out, shards))
    count = STEPS * GLOBAL // MICRO
    stream = ShardStream(
        cfg_shards.uris, cfg_shards.rows, seed=42, rank=0, world_size=1, micro_batch=MICRO, start=0
    ).batches()
    expected = [next(stream)["input_ids"][:, 1].tolist() for _ in range(count)]
    index = {micro_batch_seed(42, c): c for c in range(count)}
    by_index: dict[int, list[dict]] = defaultdict(list)
    for r in seen:
        assert r["seed"] in index, "a micro-batch ran under a seed that names no stream position"
        by_index[index[r["seed"]]].append(r)
    assert sorted(by_index) == list(range(count)), "some stream positions were never trained"
    for c, runs in by_index.items():
        assert all(r["examples"] == expected[c] for r in runs), f"micro-batch {c} trained other examples"
    worlds = [r["world"] for r in seen]
    assert worlds[0] == 1 and 2 in worlds and worlds[-1] == 1, "not 1 -> 2 -> 1 workers"

    # every loss equals the uninterrupted one-worker run's
    ref_log = wait(ref, 480)
    assert ref.returncode == 0, ref_log[-8000:]
    reference = {index[r["seed"]]: r["loss"] for r in read_records(ref_records)}
    assert sorted(reference) == list(range(count))
    worst = max(abs(r["loss"] - reference[c]) / abs(reference[c]) for c, runs in by_index.items() for r in runs)
    assert worst <= LOSS_RTOL, f"losses differ from the fixed-size run by up to {worst:.2e} (relative)"


def _cfg(out: Path, shards: str):
    from helpers import tiny_config

    return tiny_config(str(out), f"train.shards_uri={shards}", "model.vocab_size=300")


def test_a_preemption_notice_checkpoints_at_once_and_the_run_resumes_there(cluster, tiny_shards, tmp_path):
    corpus, _ = tiny_shards
    out, records = tmp_path / "preempted", tmp_path / "records"
    overrides = settings(f"{corpus}/shards", "[1, 2]") + [
        "train.steps=60",
        "checkpoint.interval_steps=1000",  # no scheduled checkpoint before the end
        "checkpoint.preemption_check_steps=1",
    ]
    # 0.5 s per micro-batch: after the grow, ~30 s of steps for the notice to arrive (Ray's CLI
    # takes seconds, Ray Train's watcher polls every 5 s)
    driver = start_driver(cluster, out, records, 0.5, overrides)
    root = str(out / "checkpoints")
    deadline = time.monotonic() + 300
    # once grown to 2 workers (each node hosts one), so that the drain does not race the grow
    while (
        driver.poll() is None
        and time.monotonic() < deadline
        and not any(r["world"] == 2 for r in read_records(records))
    ):
        time.sleep(0.5)
    assert driver.poll() is None and read_records(records), wait(driver, 1)[-6000:]
    # Ray is told that the node of a worker will be taken away in 30 s (a spot reclaim)
    node = cluster.worker_nodes()[0]
    ray = str(Path(sys.executable).parent / "ray")
    drain = [ray, "drain-node", "--address", cluster.env["RAY_ADDRESS"], "--node-id", node]
    drain += ["--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim"]
    drain += ["--deadline-remaining-seconds", "30"]
    notice = subprocess.run(drain, env=cluster.env, capture_output=True, text=True, timeout=60)
    assert notice.returncode == 0, notice.stdout + notice.stderr
    while driver.poll() is None and time.monotonic() < deadline and not _steps(root):
        time.sleep(0.2)
    saved = _steps(root)
    assert saved and saved[0] < 60, "no checkpoint was written at the notice: " + wait(driver, 1)[-6000:]
    removed = time.time()
    cluster.remove_node(node)  # the reclaim
    full_speed_once_resumed(driver, records, removed)
    log = wait(driver, 480)
    assert driver.returncode == 0, log[-8000:]
    assert f"checkpointing step {saved[0]} now" in log
    assert f"from step {saved[0]}" in log, "the run did not resume from the notice checkpoint"
