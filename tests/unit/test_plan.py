"""The run planner: memory terms against DeepSpeed's estimators and the built model's parameter
count, time and traffic terms against hand arithmetic, warnings, and the command line."""

from __future__ import annotations

import json

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage3 import model_to_params as zero3_model_to_params
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from helpers import ROOT

from koelectra_dist.cli import main
from koelectra_dist.config import ModelConfig, load_config
from koelectra_dist.plan.estimate import Cluster, Mfu, batch_split, make_plan
from koelectra_dist.plan.hardware import GPUS, GiB
from koelectra_dist.plan.memory import activation_bytes, model_states_bytes, param_count
from koelectra_dist.pretrain.model import ElectraPretrainer

BASE_V3 = str(ROOT / "configs" / "base_v3.json")


def base_plan(gpus: int, *overrides: str, mfu: float = 0.25, price: float | None = None) -> dict:
    cfg = load_config(BASE_V3, list(overrides))
    return make_plan(cfg, Cluster(GPUS["h100"], gpus), Mfu(mfu, "assumed"), price)


@pytest.mark.parametrize(
    "model",
    [
        ModelConfig(vocab_size=300, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, generator_size=0.5, max_length=16),
        ModelConfig(vocab_size=500, embedding_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                    intermediate_size=48, generator_size=1.0, max_length=24),
        load_config(BASE_V3).model,
    ],
    ids=["projected", "same_width", "base_v3"],
)  # fmt: skip
def test_parameter_count_is_the_built_models_as_deepspeed_counts_it(model):
    total, largest = zero3_model_to_params(ElectraPretrainer(model))
    counted = param_count(model)
    assert (counted.total, counted.largest_layer) == (total, largest)


def test_base_v3_has_the_parameters_koelectra_base_has():
    # 122.8M: generator and discriminator, the 35,000 x 768 embeddings shared
    assert param_count(load_config(BASE_V3).model).total == 122_830_009


@pytest.mark.parametrize("gpus", [1, 8, 64])
def test_model_states_are_deepspeeds_estimators(gpus):
    params = param_count(load_config(BASE_V3).model)
    p = params.total
    zero2 = estimate_zero2_model_states_mem_needs(p, gpus, 1, cpu_offload=False)[1]
    zero3 = estimate_zero3_model_states_mem_needs(p, params.largest_layer, gpus, 1, cpu_offload=False)[1]
    assert model_states_bytes(params, 2, gpus, "bf16") == zero2
    assert model_states_bytes(params, 3, gpus, "bf16") == zero3
    # ZeRO 0 and 1 by the same accounting: 2 + 18 bytes/param, ZeRO 1 partitions the optimizer's 16
    assert model_states_bytes(params, 0, gpus, "bf16") == 20 * p
    assert model_states_bytes(params, 1, gpus, "bf16") == int(4 * p + 16 * p / gpus)
    assert model_states_bytes(params, 0, gpus, "fp32") == 16 * p


def test_one_gpu_partitions_nothing():
    params = param_count(load_config(BASE_V3).model)
    states = {stage: model_states_bytes(params, stage, 1, "bf16") for stage in (0, 1, 2)}
    assert states[0] == states[1] == states[2] == 20 * params.total


def test_activations_follow_the_stated_formula():
    m = ModelConfig(vocab_size=100, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=1,
                    intermediate_size=64, generator_size=0.5, max_length=20)  # fmt: skip
    s, b = 20, 3
    disc = 2 * s * b * (18 * 16 + 4 * 64)
    gen = 2 * s * b * (18 * 8 + 4 * 32)
    k = 3  # round(20 * 0.15), under the cap int(0.155 * 20) = 3
    heads = 4 * s * b * 16 + 6 * b * k * 100
    assert activation_bytes(m, b, s, 0.15, "bf16") == disc + gen + 2 * 5 * s * b * 8 + heads
    assert activation_bytes(m, 2 * b, s, 0.15, "bf16") == 2 * activation_bytes(m, b, s, 0.15, "bf16")
    assert activation_bytes(m, b, s, 0.15, "fp32") == 2 * activation_bytes(m, b, s, 0.15, "bf16")


def test_time_and_cost_are_the_hand_arithmetic_on_one_node():
    plan = base_plan(8, price=4.0)
    flops_per_step = 670.8e6 * 256 * 512  # KoELECTRA-Base: ~670.8 MFLOP per token, 256 x 512 tokens
    assert plan["time"]["flops_per_step"] == pytest.approx(flops_per_step, rel=1e-3)
    compute = plan["time"]["flops_per_step"] / (8 * 989e12 * 0.25)
    assert plan["time"]["compute_s"] == pytest.approx(compute, rel=1e-5)
    # ZeRO 1 and 2 (base_v3: 2) on 8 GPUs, no accumulation: all-reduce (2) + all-gather (1) of 7/8 of the bf16 weights over NVLink
    sent = 3 * 7 / 8 * 122_830_009 * 2
    zero1 = plan["traffic"][1]
    assert zero1["bytes_per_gpu"] == pytest.approx(sent, rel=1e-6) == plan["traffic"][2]["bytes_per_gpu"]
    assert zero1["comm_s"] == pytest.approx(sent / 450e9, rel=1e-4)
    # the gradient all-reduce hides behind the backward; the weight all-gather after the step cannot
    assert zero1["exposed_s"] == pytest.approx(sent / 3 / 450e9, rel=1e-4)
    step = compute + zero1["exposed_s"]
    assert plan["time"]["step_s"] == pytest.approx(step, rel=1e-5)
    assert plan["time"]["total_h"] == pytest.approx(step * 1_500_000 / 3600, rel=1e-3)
    assert plan["cost"]["gpu_hours"] == pytest.approx(8 * step * 1_500_000 / 3600, abs=0.1)
    assert plan["cost"]["total"] == pytest.approx(4.0 * 8 * step * 1_500_000 / 3600, rel=1e-3)
    assert 17 < plan["time"]["total_h"] < 20  # ~19 hours at 25% MFU on one H100 node
    assert plan["warnings"] == []


def test_traffic_per_stage_as_deepspeed_communicates():
    plan = base_plan(16, "train.micro_batch_size=8")  # 2 nodes, accumulation 2
    assert plan["batch"] == {"global": 256, "micro_per_gpu": 8, "accumulation": 2, "tokens_per_micro_batch": 4096}
    psi = 15 / 16 * 122_830_009 * 2
    sent = [r["bytes_per_gpu"] for r in plan["traffic"]]
    # ZeRO 0: one all-reduce; 1: all-reduce + all-gather; 2: all-reduce per micro-batch + all-gather;
    # 3: two all-gathers and a reduce-scatter per micro-batch
    assert sent == pytest.approx([2 * psi, 3 * psi, (2 * 2 + 1) * psi, 3 * 2 * psi], rel=1e-6)
    efa = 3200 / 8 / 8  # p5.48xlarge: 3200 Gbit/s per node, 8 GPUs
    assert plan["cluster"]["bandwidth_gbps_per_gpu"] == efa
    assert plan["traffic"][0]["comm_s"] == pytest.approx(2 * psi / (efa * 1e9), rel=1e-4)


def test_64_gpus_on_the_shipped_recipe_warn_with_their_fix():
    plan = base_plan(64)
    assert plan["batch"]["micro_per_gpu"] == 4  # 256 over 64 GPUs
    problems = " ".join(w["problem"] for w in plan["warnings"])
    fixes = " ".join(w["fix"] for w in plan["warnings"])
    assert "not divisible" in problems and "train.micro_batch_size=4" in fixes
    assert "too small to keep a h100 busy" in problems and "train.global_batch_size to at least 1024" in fixes
    assert "longer than compute" in problems
    assert plan["traffic"][1]["comm_s"] > plan["time"]["compute_s"]


def test_global_batch_that_gpus_cannot_divide():
    micro, accumulation, warns = batch_split(load_config(BASE_V3), 12)
    assert (micro, accumulation) == (22, 1)
    assert "cannot be divided across 12 GPUs" in warns[0]["problem"]
    assert "use 8 or 16 GPUs" in warns[0]["fix"] and "multiple of 12" in warns[0]["fix"]


def test_memory_that_does_not_fit_names_a_stage_or_micro_batch_that_does():
    overrides = ["train.micro_batch_size=256", "train.global_batch_size=2048", "distributed.zero_stage=1"]
    cfg = load_config(BASE_V3, overrides)
    plan = make_plan(cfg, Cluster(GPUS["a100-40"], 8), Mfu(0.25, "assumed"))
    zero1 = plan["memory"][1]
    assert not zero1["fits"] and zero1["total_gib"] > 0.9 * 39.4
    assert 0 < zero1["max_micro_batch"] < 256
    limit = 0.9 * 39.4 * GiB
    fixed = (zero1["model_states_gib"] + zero1["buckets_gib"]) * GiB
    per_example = activation_bytes(cfg.model, 1, 512, 0.15, "bf16")
    assert fixed + zero1["max_micro_batch"] * per_example <= limit + GiB * 1e-3
    assert fixed + (zero1["max_micro_batch"] + 1) * per_example > limit - GiB * 1e-3
    assert any(f"train.micro_batch_size={zero1['max_micro_batch']}" in w["fix"] for w in plan["warnings"])


def test_command_prints_a_table_and_json(capsys):
    assert main(["plan", "--config", BASE_V3, "--gpus", "64", "--gpu", "h100", "--price-per-gpu-hour", "2.5"]) == 0
    out = capsys.readouterr().out
    for expected in ("ZeRO 0", "ZeRO 3", "largest micro-batch", "ms not hidden", "assumed", "GPU-hours x $2.5",
                     "warnings:", "fix:"):  # fmt: skip
        assert expected in out
    assert main(["plan", "--config", BASE_V3, "--gpus", "8", "--gpu", "a100-80", "--mfu", "0.3", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["time"]["mfu"] == 0.3 and plan["time"]["mfu_source"] == "given (--mfu)"
    assert plan["cluster"]["peak_flops"] == 312e12 and plan["cost"]["total"] is None


def test_command_reads_gpu_checks_measured_mfu_and_peak_memory(tmp_path, capsys):
    report = {
        "benchmark": "gpu_check",
        "environment": {"gpu": "NVIDIA H100 80GB HBM3"},
        "micro_batch": 32,
        "variants": [{"variant": "shipped", "step_s": 0.3, "tokens_per_s": 54000, "mfu": 0.31}],
        "peak_memory": [{"micro_batch": 32, "peak_gib": 11.0}, {"micro_batch": 128, "peak_gib": None}],
    }
    measured = tmp_path / "gpu_check.json"
    measured.write_text(json.dumps(report))
    args = ["plan", "--config", BASE_V3, "--gpus", "8", "--gpu", "h100", "--measured", str(measured), "--json"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["time"]["mfu"] == 0.31 and plan["time"]["mfu_source"].startswith("measured")
    assert [r["micro_batch"] for r in plan["measured_memory"]] == [32]
    assert plan["time"]["compute_s"] == pytest.approx(plan["time"]["flops_per_step"] / (8 * 989e12 * 0.31))
    assert main([*args[:-3], "--gpu", "h200", "--measured", str(measured)]) == 0
    assert "measured on NVIDIA H100 80GB HBM3, the plan is for h200" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mfu", "1.5"], "--mfu: a fraction in (0, 1]"),
        (["--gpus", "0"], "--gpus and --gpus-per-node must be >= 1"),
        (["--measured", "missing.json"], "--measured missing.json: cannot be read"),
    ],
)
def test_command_bad_input_is_a_clear_error(capsys, extra, message):
    args = ["plan", "--config", BASE_V3, "--gpu", "h100", "--gpus", "8"]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err


def test_large_batch_config_is_base_v3_scaled_by_its_stated_rules(capsys):
    base = load_config(BASE_V3)
    large = load_config(ROOT / "configs" / "base_v3_large_batch.json")
    k = large.train.global_batch_size // base.train.global_batch_size
    assert k == 8 and large.train.steps * k == base.train.steps  # the same tokens in 1/k of the steps
    assert large.train.learning_rate == pytest.approx(base.train.learning_rate * k**0.5, rel=1e-3)  # sqrt rule
    assert large.train.warmup_steps == 10_000  # as ELECTRA-Large at batch 2048
    assert large.model == base.model and large.corpus == base.corpus
    assert main(["--config", str(ROOT / "configs" / "base_v3_large_batch.json"), "--check"]) == 0
    # on 64 H100s each GPU gets 32 examples per step, and the plan has no warning but the exposed all-gather
    plan = make_plan(large, Cluster(GPUS["h100"], 64), Mfu(0.25, "assumed"))
    assert plan["batch"]["micro_per_gpu"] == 32 and plan["batch"]["accumulation"] == 1
    assert [w for w in plan["warnings"] if "does not hide" not in w["problem"]] == []
