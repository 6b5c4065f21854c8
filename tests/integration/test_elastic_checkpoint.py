"""A checkpoint written by 2 workers resumes on 1 and on 3 (ZeRO 1, 2, 3): real DeepSpeed engines
on gloo process groups (forked processes, no Ray: the re-cut is the engine's business), saved
and loaded by the product's checkpoint module. The restored fp32 master weights and Adam moments
equal the saved ones exactly: the resumed engine saves again, and both checkpoints' per-parameter
full tensors (DeepSpeed's universal form) are compared bit for bit, and so are both checkpoints'
fp32 weights as DeepSpeed's independent zero_to_fp32 consolidates them."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import free_port, spawn_ranks, tiny_config

from koelectra_dist.pretrain.checkpoint import restore, store, upload
from koelectra_dist.pretrain.meta import CheckpointMeta

STEP = 2


def _cfg(out: str, stage: int, precision: str):
    # global 12 in micro-batches of 2: 1, 2 and 3 workers all keep it (6, 3 and 2 micro-batches each)
    return tiny_config(
        out,
        f"distributed.zero_stage={stage}",
        f"distributed.precision={precision}",
        "distributed.num_workers=[1, 3]",
        "train.global_batch_size=12",
        "train.micro_batch_size=2",
        "train.warmup_steps=1",
    )


def _worker(rank: int, world: int, port: int, out: str, stage: int, precision: str, action: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    os.environ["DS_ACCELERATOR"] = "cpu"
    torch.set_num_threads(1)
    import torch.distributed as dist

    from koelectra_dist.pretrain.engine import build_engine
    from koelectra_dist.pretrain.loop import micro_batch_seed, pretrainer
    from koelectra_dist.pretrain.position import micro_batch_indices

    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = _cfg(out, stage, precision)
    root = cfg.paths.checkpoints
    torch.manual_seed(cfg.train.seed)
    model = pretrainer(cfg)
    if action == "save":
        engine, _, _ = build_engine(cfg, model)
        accumulation = cfg.gradient_accumulation_steps(world)
        for step in range(STEP):
            for c in micro_batch_indices(step, accumulation, rank, world):
                torch.manual_seed(micro_batch_seed(cfg.train.seed, c))
                ids = torch.randint(5, cfg.model.vocab_size, (cfg.train.micro_batch_size, 16))
                out_ = engine(input_ids=ids, attention_mask=None, token_type_ids=torch.zeros_like(ids))
                engine.backward(out_.loss)
                engine.step()
        meta = CheckpointMeta(
            step=STEP,
            consumed_samples=STEP * cfg.train.global_batch_size,
            world_size=world,
            zero_stage=stage,
            precision=precision,
            vocab_sha256="0" * 64,
            metrics={},
            config=cfg.to_dict(),
        )
        upload.save(engine, root, STEP, meta, keep_last=1)
    else:
        uri = store.step_uri(root, STEP)
        meta = store.read_meta(uri)
        engine, _, _ = build_engine(cfg, model, load_universal=restore.needs_universal(meta, world))
        restore.load(engine, uri, world)
        engine.save_checkpoint(os.path.join(out, f"resaved-{world}"), tag="state")
        if rank == 0:
            state = {"global_steps": engine.global_steps, "scheduler": engine.lr_scheduler.state_dict()}
            state["scheduler"].pop("lr_lambdas", None)
            with open(os.path.join(out, f"resaved-{world}.json"), "w") as f:
                json.dump(state, f)
    dist.barrier()
    dist.destroy_process_group()


def _spawn(world: int, *args) -> None:
    spawn_ranks(_worker, world, free_port(), *args)


def _universal_tensors(state_dir: str, scratch: str) -> dict[str, torch.Tensor | int]:
    """Every parameter's full fp32 weight, Adam moments and step, by '<name>/<state>'."""
    load_dir, tag = restore.to_universal(state_dir, scratch)
    zero = os.path.join(load_dir, tag, "zero")
    found = {}
    for name in os.listdir(zero):
        if not os.path.isdir(os.path.join(zero, name)):  # optimizer_state.pt: hyper-parameters, step
            continue
        for file in os.listdir(os.path.join(zero, name)):
            value = torch.load(os.path.join(zero, name, file), weights_only=False)
            found[f"{name}/{file[: -len('.pt')]}"] = value["param"] if isinstance(value, dict) else value
    return found


def _equal(a: object, b: object) -> bool:
    """Bit for bit (tensors), or plain equality (the optimizer's step count)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize(("stage", "precision"), [(1, "fp32"), (2, "fp32"), (3, "fp32"), (2, "bf16")])
def test_a_checkpoint_of_2_workers_resumes_exactly_on_1_and_on_3(tmp_path, stage, precision):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    out = str(tmp_path)
    _spawn(2, out, stage, precision, "save")
    uri = store.step_uri(_cfg(out, stage, precision).paths.checkpoints, STEP)
    assert store.verify(uri) == [] and store.read_meta(uri).world_size == 2
    assert not any("rng" in f for f in os.listdir(uri)), "checkpoints hold no per-rank RNG state any more"
    saved_dir = os.path.join(uri, store.DEEPSPEED_DIR, store.DEEPSPEED_TAG)
    saved = _universal_tensors(saved_dir, str(tmp_path / "u-saved"))
    states = {key.rsplit("/", 1)[1] for key in saved}
    assert {"fp32", "exp_avg", "exp_avg_sq"} <= states
    assert any(v.abs().sum() > 0 for k, v in saved.items() if k.endswith("/exp_avg")), "no optimizer step was taken"
    # the fp32 weights the engine trains with, as DeepSpeed's own zero_to_fp32 consolidates them
    # (another code path than the universal conversion)
    weights = restore.consolidated_state_dict(uri)
    for world in (1, 3):
        _spawn(world, out, stage, precision, "load")
        resaved = _universal_tensors(os.path.join(out, f"resaved-{world}", "state"), str(tmp_path / f"u-{world}"))
        assert resaved.keys() == saved.keys(), world
        differ = [k for k in saved if not _equal(saved[k], resaved[k])]
        assert not differ, f"on {world} workers these differ from the saved state: {differ[:5]}"
        again = get_fp32_state_dict_from_zero_checkpoint(os.path.join(out, f"resaved-{world}"), tag="state")
        assert again.keys() == weights.keys()
        assert all(torch.equal(weights[k], again[k]) for k in weights), f"fp32 weights differ on {world} workers"
        with open(os.path.join(out, f"resaved-{world}.json")) as f:
            state = json.load(f)
        assert state["global_steps"] == STEP and state["scheduler"]["last_epoch"] == STEP
    assert store.verify(uri) == [], "loading through the universal form changed the sealed checkpoint"
