"""Driver of an observed pre-training run (run as a script, on the cluster RAY_ADDRESS names): the
product's driver (`launcher.fit` with the newest verified checkpoint, then `final_checkpoint`) and
worker loop (`loop.run_worker`), on a model that records every micro-batch it trains.

    python elastic_driver.py OUT RECORD_DIR DELAY_S --set key=value ...

Each micro-batch appends one JSON line to RECORD_DIR/<pid>.jsonl: the torch seed it was trained
under (which names its global index, see loop.micro_batch_seed), the world size and rank, the first
body token of each example (which names the example, see helpers.write_shard_set), its loss and
the time. DELAY_S seconds of sleep per micro-batch stretch the run so that resizes happen mid-run,
until the test creates RECORD_DIR/no-delay (once the events it waits for have happened).
The report (JSON) is the last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for helpers

from helpers import TINY_CONFIG  # noqa: E402

from koelectra_dist.config import load_config  # noqa: E402

NO_DELAY = "no-delay"


def recording_loop(record_dir: str, delay_s: float):
    """The pretrain stage's worker loop on a recording model (pickled by value: this is __main__)."""

    def loop(config: dict) -> None:
        import ray.train
        import torch

        from koelectra_dist.pretrain.loop import pretrainer, run_worker

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        path = os.path.join(record_dir, f"{os.getpid()}.jsonl")
        no_delay = os.path.join(record_dir, NO_DELAY)

        def build(cfg):
            model = pretrainer(cfg)
            forward = model.forward

            def recorded(input_ids, *args, **kwargs):
                seed = torch.initial_seed()
                out = forward(input_ids, *args, **kwargs)
                if not os.path.exists(no_delay):
                    time.sleep(delay_s)
                line = {
                    "seed": seed,
                    "world": world,
                    "rank": rank,
                    "examples": input_ids[:, 1].tolist(),
                    "loss": float(out.loss.detach()),
                    "time": time.time(),
                }
                with open(path, "a") as f:
                    f.write(json.dumps(line) + "\n")
                return out

            model.forward = recorded
            return model

        run_worker(config["cfg"], build, config["resume"])

    return loop


def main() -> None:
    import logging

    from koelectra_dist.pretrain.checkpoint import store
    from koelectra_dist.pretrain.launcher import fit
    from koelectra_dist.pretrain.resume import final_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out, record_dir, delay_s, *rest = sys.argv[1:]
    overrides = [rest[i + 1] for i in range(0, len(rest), 2) if rest[i] == "--set"]
    cfg = load_config(TINY_CONFIG, [f"run.output_uri={out}", *overrides])
    os.makedirs(record_dir, exist_ok=True)
    latest = store.latest_verified(cfg.paths.checkpoints)
    fit(cfg, recording_loop(record_dir, float(delay_s)), latest)
    final, meta = final_checkpoint(cfg)
    print(json.dumps({"checkpoint": final, "step": meta.step, "world_size": meta.world_size, "resumed_from": latest}))


if __name__ == "__main__":
    main()
