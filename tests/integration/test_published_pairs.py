"""Starting from published models, through the product on the local Ray instance (2 workers, real
DeepSpeed engines on gloo): a transformers-saved ELECTRA pair in KoELECTRA's layout continues
pre-training from exactly its own weights, and a 4-layer teacher is distilled into a 2-layer
student (initialised from the chosen layers, learning, resuming exactly, exported for AutoModel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import publish_to_hub_cache, tiny_config, toy_finetune_config, write_electra_pair, write_shard_set
from transformers import AutoModel, AutoTokenizer, ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist import storage
from koelectra_dist.config import ModelConfig
from koelectra_dist.distill import stage as distill
from koelectra_dist.distill.teacher import resolve_teacher
from koelectra_dist.errors import CheckpointError
from koelectra_dist.finetune import stage as finetune
from koelectra_dist.finetune.stage import check_model_folder
from koelectra_dist.pretrain import stage as pretrain
from koelectra_dist.pretrain.checkpoint import restore, store
from koelectra_dist.pretrain.init_from import load_weights
from koelectra_dist.pretrain.model import ElectraPretrainer


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """corpus/ (shards with a 100-token vocabulary) and pair/ (a 4-layer pair with that vocabulary)."""
    root = tmp_path_factory.mktemp("published")
    write_shard_set(str(root / "corpus"), 100, 64, [24, 20], seed=5)
    write_electra_pair(root / "pair", (root / "corpus" / "vocab" / "vocab.txt").read_bytes(), layers=4)
    return root


def probe() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 100, (4, 40), generator=torch.Generator().manual_seed(3))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[2, 30:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_a_published_pair_continues_pretraining_from_its_own_logits(ray_local, published, tmp_path):
    """ELECTRA's warm-up gives step 0 a learning rate of 0: the checkpoint after one step holds the
    pair's weights, and the model built from it computes the pair's logits."""
    cfg = tiny_config(
        str(tmp_path / "run"),
        f"train.shards_uri={published}/corpus/shards",
        f"train.init_from={published}/pair",
        "train.steps=1",
        "checkpoint.interval_steps=1",
    )
    report = pretrain.run(cfg)
    assert report["init_from"]["embeddings_max_abs_diff"] == 0
    meta = store.read_meta(report["checkpoint"])
    assert meta.config["model"]["hidden_size"] == 32 and meta.config["model"]["num_hidden_layers"] == 4  # the pair's
    model = ElectraPretrainer(ModelConfig(**meta.config["model"])).eval()
    load_weights(model, restore.consolidated_state_dict(report["checkpoint"]), report["checkpoint"])
    disc = ElectraForPreTraining.from_pretrained(published / "pair" / "discriminator").eval()
    gen = ElectraForMaskedLM.from_pretrained(published / "pair" / "generator").eval()
    batch = probe()
    with torch.no_grad():
        torch.testing.assert_close(model.discriminator(**batch).logits, disc(**batch).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.generator(**batch).logits, gen(**batch).logits, atol=1e-5, rtol=0)


def test_a_pair_of_another_vocabulary_is_refused_before_ray(published, tmp_path):
    other = (published / "corpus" / "vocab" / "vocab.txt").read_bytes()
    write_electra_pair(tmp_path / "pair", other.replace(b"w1\n", b"w1x\n"))
    cfg = tiny_config(
        str(tmp_path / "run"), f"train.shards_uri={published}/corpus/shards", f"train.init_from={tmp_path}/pair"
    )
    with pytest.raises(CheckpointError, match=f"corpus.vocab.vocab_uri={tmp_path}/pair/discriminator"):
        pretrain.run(cfg)


def fixed_loss(distiller: distill.Distiller) -> float:
    distiller.eval()
    torch.manual_seed(0)  # the same masking and generator samples for both
    with torch.no_grad():
        return float(distiller(**probe()).loss)


def test_distill_a_4_layer_teacher_into_a_2_layer_student(ray_local, published, tmp_path):
    cfg = tiny_config(
        str(tmp_path / "run"),
        f"train.shards_uri={published}/corpus/shards",
        f"distill.teacher_uri={published}/pair/discriminator",
        "distill.layers=[1,3]",
        "distill.steps=4",
        "distill.warmup_steps=0",
        "distill.learning_rate=0.003",
        "checkpoint.interval_steps=2",
        "checkpoint.keep_last=3",
    )
    report = distill.run(cfg)
    assert report["steps"] == 4 and report["layers"] == [1, 3]
    final = restore.consolidated_state_dict(report["checkpoint"])

    # the loss on a fixed batch went down from the student at step 0 (the teacher's layers 1 and 3)
    start = distill.build_distiller(distill.run_config(cfg))
    trained = distill.build_distiller(distill.run_config(cfg))
    load_weights(trained, final, report["checkpoint"])
    assert fixed_loss(trained) < fixed_loss(start)

    # resuming from step 2 ends with exactly the weights of the uninterrupted run
    storage.remove(store.step_uri(cfg.paths.distill_checkpoints, 4))
    resumed = distill.run(cfg)
    assert resumed["resumed_from"].endswith("step-00000002")
    again = restore.consolidated_state_dict(resumed["checkpoint"])
    assert again.keys() == final.keys()
    for key, value in final.items():
        assert torch.equal(again[key], value), key

    # the export: AutoModel and the tokenizer load it, fine-tuning accepts it, the card names the teacher
    model_dir = report["model"]
    check_model_folder(model_dir)
    model = AutoModel.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids("w1") == 6
    card = (Path(model_dir) / "README.md").read_text()
    assert "teacher `discriminator`" in card and "[1, 3]" in card  # a local teacher: named, not its machine path
    assert report["parameters"]["student"] < report["parameters"]["teacher"]


def test_hub_ids_continue_distil_and_fine_tune(ray_local, published, tmp_path):
    """hf:// ids in a local Hub cache laid out as huggingface_hub lays it out (offline): a
    single-repository discriminator (beomi/KcELECTRA-base's kind) continues pre-training with a
    fresh generator, is distilled with a fresh generator and is fine-tuned; a pair's name resolves
    to its own generator (tests/unit/test_init_from_pair.py builds a distiller from it)."""
    publish_to_hub_cache("org/published-single", published / "pair" / "discriminator")
    publish_to_hub_cache("org/published-discriminator", published / "pair" / "discriminator")
    publish_to_hub_cache("org/published-generator", published / "pair" / "generator")
    shards = f"train.shards_uri={published}/corpus/shards"

    cfg = tiny_config(
        str(tmp_path / "run"),
        shards,
        "train.init_from=hf://org/published-single",
        "train.steps=1",
        "checkpoint.interval_steps=1",
        "distributed.num_workers=1",
    )
    report = pretrain.run(cfg)
    assert report["init_from"]["generator"] == "fresh (a discriminator alone)"
    model = ElectraPretrainer(ModelConfig(**store.read_meta(report["checkpoint"]).config["model"])).eval()
    load_weights(model, restore.consolidated_state_dict(report["checkpoint"]), report["checkpoint"])
    disc = ElectraForPreTraining.from_pretrained(published / "pair" / "discriminator").eval()
    with torch.no_grad():
        torch.testing.assert_close(model.discriminator(**probe()).logits, disc(**probe()).logits, atol=1e-5, rtol=0)

    pair = tiny_config(str(tmp_path / "x"), "distill.teacher_uri=hf://org/published")
    teacher = resolve_teacher(pair)
    assert (teacher.objective, teacher.generator_uri) == ("rtd", "hf://org/published-generator")
    cfg = tiny_config(
        str(tmp_path / "distil"),
        shards,
        "distill.teacher_uri=hf://org/published-single",
        "distill.layers=[1,3]",
        "distill.steps=2",
        "checkpoint.interval_steps=2",
        "distributed.num_workers=1",
    )
    assert resolve_teacher(cfg).generator_uri is None  # a discriminator alone: a fresh generator
    report = distill.run(cfg)
    assert report["steps"] == 2
    assert "corrupted by a fresh generator" in (Path(report["model"]) / "README.md").read_text()

    cfg = toy_finetune_config(tmp_path, "hf://org/published-single")
    report = finetune.run(cfg)
    assert 0 <= report["scores"]["toy"]["mean"] <= 100
    assert storage.read_json(f"{report['output_uri']}/results.json")["model"] == "hf://org/published-single"
