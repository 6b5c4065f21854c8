"""ELECTRA's optimizer and schedule, and the DeepSpeed config derived from our Config."""

from __future__ import annotations

import json

import pytest
import torch

from koelectra_dist.config import Config, ModelConfig, config_from_dict
from koelectra_dist.errors import ConfigError
from koelectra_dist.pretrain.engine import ds_config, make_optimizer, user_ds_config
from koelectra_dist.pretrain.model import ElectraPretrainer
from koelectra_dist.pretrain.optim import ElectraAdamW, electra_schedule, lr_at, lr_factor, param_groups

TINY_MODEL = ModelConfig(
    vocab_size=300, embedding_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=64, generator_size=0.5, max_length=16,
)  # fmt: skip


def cfg_with(**sections) -> Config:
    base = {"run": {"stages": ["pretrain"]}, "distributed": {"gpus_per_worker": 0}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return config_from_dict(base)


def test_lr_is_warmup_times_linear_decay_as_electra():
    cfg = cfg_with(train={"learning_rate": 2e-4, "warmup_steps": 10_000, "steps": 100_000})
    assert lr_at(0, cfg) == 0.0  # ELECTRA's first update uses lr 0
    assert lr_at(5_000, cfg) == pytest.approx(2e-4 * 0.5 * 0.95)  # overlap: warm-up AND decay
    assert lr_at(10_000, cfg) == pytest.approx(2e-4 * 0.9)
    assert lr_at(55_000, cfg) == pytest.approx(2e-4 * 0.45)
    assert lr_at(100_000, cfg) == 0.0
    assert lr_factor(3, 0, 10) == pytest.approx(0.7)  # no warm-up


def test_param_groups_exclude_layernorm_and_bias_and_count_shared_embeddings_once():
    model = ElectraPretrainer(TINY_MODEL)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all("LayerNorm" in names[id(p)] or "bias" in names[id(p)] for p in no_decay["params"])
    assert not any("LayerNorm" in names[id(p)] or "bias" in names[id(p)] for p in decay["params"])
    unique = {id(p) for p in model.parameters()}
    assert len(decay["params"]) + len(no_decay["params"]) == len(unique)
    shared = model.generator.electra.embeddings.word_embeddings.weight
    assert sum(p is shared for p in decay["params"]) == 1


def test_adamw_has_no_bias_correction_and_decoupled_decay():
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = ElectraAdamW([{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], lr=0.1, eps=1e-6)
    grads = [torch.randn(5), torch.randn(5)]
    m, v, ref_w = torch.zeros(5), torch.zeros(5), w0.clone()
    for g in grads:
        w.grad, b.grad = g.clone(), g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref_w = ref_w - 0.1 * (m / (v.sqrt() + 1e-6) + 0.01 * ref_w)
    torch.testing.assert_close(w.detach(), ref_w, rtol=1e-6, atol=1e-7)
    # Bias-corrected Adam (torch's AdamW) would move the first step by ~lr per coordinate; ELECTRA's
    # first step is (1 - b1) / sqrt(1 - b2) ~ 3.2x smaller in m / sqrt(v) terms.
    assert not torch.allclose(b.detach(), b0)
    torch_w = w0.clone().requires_grad_(True)
    torch_opt = torch.optim.AdamW([torch_w], lr=0.1, eps=1e-6, weight_decay=0.01)
    for g in grads:
        torch_w.grad = g.clone()
        torch_opt.step()
    assert not torch.allclose(torch_w.detach(), ref_w, atol=1e-3)


def test_adamw_state_dict_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = ElectraAdamW([p], lr=0.1)
    p.grad = torch.full((3,), 0.5)
    opt.step()
    other = ElectraAdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert torch.equal(other.state_dict()["state"][0]["exp_avg"], opt.state[p]["exp_avg"])


@pytest.mark.parametrize(("precision", "gpus", "key"), [("bf16", 0, "bf16"), ("fp16", 1, "fp16"), ("fp32", 0, None)])
def test_ds_config(precision, gpus, key):
    cfg = cfg_with(
        train={"global_batch_size": 64, "micro_batch_size": 4, "grad_clip": 1.0},
        distributed={"num_workers": 2, "zero_stage": 2, "precision": precision, "gpus_per_worker": gpus},
    )
    ds = ds_config(cfg)
    assert ds["gradient_accumulation_steps"] == 8  # 64 / (4 x 2)
    assert ds["train_batch_size"] == 64 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["overlap_comm"] == (gpus > 0)  # overlapping needs device streams
    assert ds["timers"]["throughput"]["enabled"] is False and ds["wall_clock_breakdown"] is False
    assert ds["gradient_clipping"] == 1.0
    assert "optimizer" not in ds and "scheduler" not in ds  # ours are passed as objects
    for other in ("bf16", "fp16"):
        assert (other in ds) == (other == key)
    if key == "fp16":
        assert ds["fp16"]["loss_scale"] == 0  # dynamic
    assert ds.get("data_types") == ({"grad_accum_dtype": "fp32"} if key == "bf16" else None)


def test_bf16_plain_data_parallel_keeps_deepspeeds_bf16_accumulation():
    cfg = cfg_with(distributed={"zero_stage": 0, "precision": "bf16", "gpus_per_worker": 0})
    assert "data_types" not in ds_config(cfg)  # DeepSpeed's ZeRO 0 supports no other


def test_a_users_deepspeed_config_is_merged_but_may_not_set_what_the_project_owns(tmp_path):
    cfg = cfg_with(distributed={"zero_stage": 2, "gpus_per_worker": 1})
    mine = tmp_path / "ds.json"
    mine.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 123}, "comms_logger": {"enabled": True}}))
    ds = ds_config(cfg, user_ds_config(str(mine)))
    assert ds["zero_optimization"] == {**ds_config(cfg)["zero_optimization"], "reduce_bucket_size": 123}
    assert ds["comms_logger"] == {"enabled": True}
    mine.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_batch_size": 9}))
    with pytest.raises(ConfigError, match="sets zero_optimization.stage, train_batch_size, which come from"):
        user_ds_config(str(mine))
    mine.write_text(json.dumps({"zero_optimization": None}))  # would drop the stage: DeepSpeed's TypeError
    with pytest.raises(ConfigError, match=r"sets zero_optimization to null \(it must be an object: it holds zero_opt"):
        user_ds_config(str(mine))
    mine.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read as JSON"):
        user_ds_config(str(mine))


def test_the_cpu_optimizer_is_electras():
    model = torch.nn.Linear(3, 3)
    assert isinstance(make_optimizer(cfg_with(distributed={"gpus_per_worker": 0}), model), ElectraAdamW)
    adamw = make_optimizer(cfg_with(distributed={"gpus_per_worker": 0}, train={"optimizer": "adamw"}), model)
    assert type(adamw) is torch.optim.AdamW


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (DeepSpeed's FusedAdam)")
def test_fused_adam_makes_adamws_update_with_train_optimizer_adamw():
    """train.optimizer=adamw on a GPU: FusedAdam with bias correction, the update of torch's AdamW."""
    from deepspeed.ops.adam import FusedAdam

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64).cuda()
    twin = torch.nn.Linear(64, 64).cuda()
    twin.load_state_dict(model.state_dict())
    cfg = cfg_with(distributed={"gpus_per_worker": 1}, train={"optimizer": "adamw", "adam_betas": [0.9, 0.98]})
    fused = make_optimizer(cfg, model)
    assert isinstance(fused, FusedAdam)
    groups = [{"params": [twin.weight], "weight_decay": 0.01}, {"params": [twin.bias], "weight_decay": 0.0}]
    ours = torch.optim.AdamW(groups, lr=cfg.train.learning_rate, betas=(0.9, 0.98), eps=cfg.train.adam_eps)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in model.parameters()]
        for p, t, g in zip(model.parameters(), twin.parameters(), grads, strict=True):
            p.grad, t.grad = g.clone(), g.clone()
        fused.step()
        ours.step()
    for p, t in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (DeepSpeed's FusedAdam)")
def test_fused_adam_makes_electras_update():
    from deepspeed.ops.adam import FusedAdam

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 64, device="cuda")) for _ in range(2)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused = FusedAdam(
        [{"params": params, "weight_decay": 0.01}], lr=1e-3, eps=1e-6, bias_correction=False, adam_w_mode=True
    )
    ours = ElectraAdamW([{"params": twins, "weight_decay": 0.01}], lr=1e-3, eps=1e-6)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, t, g in zip(params, twins, grads, strict=True):
            p.grad, t.grad = g.clone(), g.clone()
        fused.step()
        ours.step()
    for p, t in zip(params, twins, strict=True):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-6)


def test_a_bad_deepspeed_config_is_refused_before_any_stage_runs(tmp_path):
    from helpers import tiny_config

    from koelectra_dist.pipeline import run_stages

    mine = tmp_path / "ds.json"
    mine.write_text(json.dumps({"zero_optimization": None}))
    cfg = tiny_config(str(tmp_path / "run"), 'run.stages=["corpus","pretrain"]', f"distributed.deepspeed_config={mine}")
    with pytest.raises(ConfigError, match="distributed.deepspeed_config .* sets zero_optimization to null"):
        run_stages(cfg)  # the corpus stage would run first and start Ray: it never does
    assert not (tmp_path / "run" / "corpus" / "shards").exists()


def test_the_scheduler_deepspeed_steps_gives_each_optimizer_step_its_lr():
    """As DeepSpeed drives it (one scheduler step after each optimizer step), optimizer step s runs
    at lr_at(s): 0 at the first, peak after warm-up, 0 at the end. A schedule one step off is
    caught here, which `train.steps=1` runs (0 either way) cannot see."""
    cfg = cfg_with(train={"learning_rate": 1e-3, "warmup_steps": 4, "steps": 10})
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = ElectraAdamW([{"params": [weight], "weight_decay": 0.0}], lr=cfg.train.learning_rate)
    scheduler = electra_schedule(optimizer, cfg)
    used = []
    for _ in range(cfg.train.steps):
        used.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(3)
        optimizer.step()
        scheduler.step()
    assert used == pytest.approx([lr_at(s, cfg) for s in range(10)])
    assert used[:5] == pytest.approx([0.0, 1e-3 * 0.25 * 0.9, 1e-3 * 0.5 * 0.8, 1e-3 * 0.75 * 0.7, 1e-3 * 0.6])


def test_deepspeed_is_imported_without_mlflow_which_stays_importable():
    """Every worker imports DeepSpeed; its autotuner would import MLflow (seconds) when installed."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from koelectra_dist.pretrain.engine import import_deepspeed\n"
        "ds = import_deepspeed()\n"
        "assert ds.__name__ == 'deepspeed' and 'mlflow' not in sys.modules, sorted(m for m in sys.modules if 'mlflow' in m)\n"
        "import mlflow\n"  # still importable afterwards: the project's tracking uses it
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
