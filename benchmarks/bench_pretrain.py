"""Pre-training throughput on the local Ray cluster: steps/s, tokens/s, the share of step time spent
waiting for data (target <= 2%), what each checkpoint cost the training loop, and MFU on CUDA.

    .venv/bin/python benchmarks/bench_pretrain.py                      # demo model, 2 CPU workers
    .venv/bin/python benchmarks/bench_pretrain.py --s3                 # checkpoints on a local S3 (moto)
    .venv/bin/python benchmarks/bench_pretrain.py --steps 200 --set distributed.zero_stage=2
    python benchmarks/bench_pretrain.py --config configs/base_v3.json --corpus-lines 200000 \\
        --set distributed.num_workers=1 --set train.global_batch_size=32   # one GPU

Builds shards with the corpus stage (the first --corpus-lines lines of ../shared/data/nsmc when it
is there, else the demo's konlpy text), then pre-trains --steps steps with the pretrain stage,
saving a checkpoint in the middle and at the end. The metrics are the pipeline's own (rank 0's
TensorBoard events beside the checkpoints); the first logging window (start-up, first checkpoint
load) is left out. Prints one JSON line. data_wait_frac compares, in the same run, the time a step
waited for its batch with the step's whole time.

Checkpoints (rank 0's figures, one per checkpoint): `checkpoint_stall_s`, the time the training
loop was blocked by the save (waiting for the previous upload, the folder barrier, the local
write); `checkpoint_write_s`, writing the engine state to local disk, part of the stall;
`checkpoint_commit_s`, from the local write to COMMITTED (hashing, uploads, the seal; in the
background). Target: stall <= 1.05 x local write (the upload costs the loop nothing).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NSMC = ROOT.parent / "shared" / "data" / "nsmc" / "corpus.txt.gz"


def scalars(event_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard folder, as (step, value) pairs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(event_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def s3_checkpoints() -> list[str]:
    """Start a moto S3 server with one bucket (before Ray, whose workers inherit the environment);
    the config overrides that put the checkpoints there."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint  # this process; the workers get storage.s3_endpoint_url
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return [f"storage.s3_endpoint_url={endpoint}", "checkpoint.storage_uri=s3://bench/checkpoints"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.json"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--corpus-lines", type=int, default=50_000)
    p.add_argument("--out", default=None, help="working folder (default: a temporary one, removed)")
    p.add_argument("--s3", action="store_true", help="checkpoints on a local S3 endpoint (moto's server)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.s3:
        args.set = [*s3_checkpoints(), *args.set]

    from koelectra_dist.config import load_config
    from koelectra_dist.pipeline import run_stages

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_pretrain_")).resolve()
    overrides = [f"run.output_uri={out / 'run'}", 'run.stages=["corpus", "pretrain"]']
    if NSMC.exists():
        out.mkdir(parents=True, exist_ok=True)
        with gzip.open(NSMC, "rt", encoding="utf-8") as src, open(out / "corpus.txt", "w", encoding="utf-8") as dst:
            dst.writelines(line for _, line in zip(range(args.corpus_lines), src, strict=False))
        # NSMC's alphabet alone takes ~3,700 WordPiece tokens: the demo's 2,000 do not fit.
        overrides += [f'corpus.inputs=["{out / "corpus.txt"}"]', "model.vocab_size=8000"]
    overrides += [
        f"train.steps={args.steps}",
        f"train.log_every={args.log_every}",
        f"checkpoint.interval_steps={max(1, args.steps // 2)}",
    ]
    cfg = load_config(args.config, overrides + args.set)
    start = time.time()
    reports = run_stages(cfg)
    wall = time.time() - start

    from koelectra_dist import storage

    root = cfg.paths.checkpoints
    events = storage.local_path(storage.join(root, "tensorboard")) or storage.download_dir(
        storage.join(root, "tensorboard"), str(out / "tensorboard")
    )
    series = scalars(events)
    steady = {tag: [v for step, v in values if step > args.log_every] for tag, values in series.items()}
    step_time = statistics.mean(steady["train/step_time_s"])
    result = {
        "device": "cuda" if cfg.distributed.gpus_per_worker else "cpu",
        "workers": cfg.distributed.num_workers,
        "zero_stage": cfg.distributed.zero_stage,
        "precision": cfg.distributed.precision,
        "global_batch": cfg.train.global_batch_size,
        "max_length": cfg.model.max_length,
        "steps": args.steps,
        "steps_per_s": 1.0 / step_time,
        "tokens_per_s": statistics.mean(steady["train/tokens_per_s"]),
        "data_wait_frac": statistics.mean(steady["train/data_wait_frac"]),
        "checkpoint_storage": "s3 (moto)" if args.s3 else "local",
        "checkpoint_stall_s": [round(v, 3) for _, v in series["train/checkpoint_stall_s"]],
        "checkpoint_write_s": [round(v, 3) for _, v in series["train/checkpoint_write_s"]],
        "checkpoint_commit_s": [round(v, 3) for _, v in series["train/checkpoint_commit_s"]],
        "corpus_tokens": reports["corpus"].get("total_tokens"),
        "wall_s": round(wall, 1),
    }
    result["stall_over_write"] = [
        round(stall / write, 3)
        for stall, write in zip(result["checkpoint_stall_s"], result["checkpoint_write_s"], strict=True)
    ]
    if "train/mfu" in steady:
        result["mfu"] = statistics.mean(steady["train/mfu"])
    print(json.dumps(result), flush=True)
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
