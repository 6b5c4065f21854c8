"""train.init_from with an ELECTRA pair, without Ray: the forms resolve (hf:// ids to their two
repository names, without network), the pair's config and weights become an ElectraPretrainer
that computes the pair's own logits, and the embeddings reconciliation is reported."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import write_electra_pair
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist import storage
from koelectra_dist.config import ModelConfig
from koelectra_dist.errors import CheckpointError, ConfigError, StorageError
from koelectra_dist.pretrain import init_from
from koelectra_dist.pretrain.model import ElectraPretrainer
from koelectra_dist.tokens import SPECIAL_TOKENS

VOCAB = ("\n".join([*SPECIAL_TOKENS, *(f"w{i}" for i in range(95))]) + "\n").encode()


def probe(vocab_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_hub_ids_resolve_to_the_two_repositories_without_network():
    pair = ("monologg/koelectra-base-v3-discriminator", "monologg/koelectra-base-v3-generator")
    assert init_from.hub_pair("hf://monologg/koelectra-base-v3") == pair
    assert init_from.hub_pair("hf://monologg/koelectra-base-v3-discriminator") == pair
    source = init_from.resolve("hf://monologg/koelectra-base-v3")
    assert (source.kind, source.discriminator, source.generator) == ("pair", *(f"hf://{r}" for r in pair))
    assert storage.hf_repo("hf://beomi/KcELECTRA-base/vocab.txt") == ("beomi/KcELECTRA-base", "vocab.txt")
    with pytest.raises(StorageError, match="hf://ORG/NAME"):
        storage.hf_repo("hf://just-a-name")
    with pytest.raises(ConfigError, match="without a path"):
        init_from.hub_pair("hf://monologg/koelectra-base-v3/discriminator")


def test_hf_uris_read_from_the_hub_cache(tmp_path, monkeypatch):
    """Offline, a repository already in huggingface_hub's cache is read through storage like a folder."""
    import huggingface_hub.constants as hub

    snapshot = tmp_path / "models--org--tiny-discriminator" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"architectures": ["ElectraForPreTraining"]}))
    (tmp_path / "models--org--tiny-discriminator" / "refs").mkdir()
    (tmp_path / "models--org--tiny-discriminator" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    assert storage.read_json("hf://org/tiny-discriminator/config.json")["architectures"] == ["ElectraForPreTraining"]
    with pytest.raises(StorageError, match="could not fetch org/absent"):
        storage.exists("hf://org/absent/config.json")


def test_local_forms_resolve(tmp_path):
    write_electra_pair(tmp_path / "pair", VOCAB)
    source = init_from.resolve(str(tmp_path / "pair"))
    assert (source.kind, source.generator) == ("pair", str(tmp_path / "pair" / "generator"))
    alone = init_from.resolve(str(tmp_path / "pair" / "discriminator"))
    assert (alone.kind, alone.generator) == ("pair", None)
    (tmp_path / "pretraining").mkdir()
    (tmp_path / "pretraining" / "config.json").write_text(json.dumps({"format": init_from.PRETRAINING_FORMAT}))
    assert init_from.resolve(str(tmp_path / "pretraining")).kind == "pretraining"
    with pytest.raises(CheckpointError, match="hf://ORG/NAME"):
        init_from.resolve(str(tmp_path / "nothing"))


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_a_pair_becomes_a_pretrainer_computing_its_logits(tmp_path, noise):
    write_electra_pair(tmp_path, VOCAB, embeddings_noise=noise)
    source = init_from.resolve(str(tmp_path))
    model_cfg = init_from.pair_model_config(source, ModelConfig())
    assert (model_cfg.vocab_size, model_cfg.embedding_size, model_cfg.hidden_size) == (100, 16, 32)
    assert (model_cfg.generator_hidden_size(), model_cfg.max_length) == (16, 64)
    model = ElectraPretrainer(model_cfg).eval()
    report = init_from.init_weights(model, str(tmp_path))
    disc = ElectraForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    gen = ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    batch = probe(100)
    with torch.no_grad():
        torch.testing.assert_close(model.discriminator(**batch).logits, disc(**batch).logits, atol=1e-5, rtol=0)
        if noise == 0:
            torch.testing.assert_close(model.generator(**batch).logits, gen(**batch).logits, atol=1e-5, rtol=0)
            assert report["embeddings_max_abs_diff"] == 0
        else:  # the discriminator's embeddings win; how far the generator's were is reported
            assert 0.05 < report["embeddings_max_abs_diff"] < 0.5
            assert report["embeddings_relative_diff"] > 0.01


def test_a_discriminator_alone_gets_a_fresh_generator(tmp_path):
    write_electra_pair(tmp_path, VOCAB)
    shutil.rmtree(tmp_path / "generator")
    source = init_from.resolve(str(tmp_path))
    model_cfg = init_from.pair_model_config(source, ModelConfig(generator_size=0.25))
    assert model_cfg.generator_hidden_size() == 8  # the configured size
    model = ElectraPretrainer(model_cfg)
    assert init_from.init_weights(model, str(tmp_path))["generator"].startswith("fresh")
    disc = ElectraForPreTraining.from_pretrained(tmp_path / "discriminator")
    # the fresh generator shares the discriminator's embeddings
    assert torch.equal(
        model.generator.electra.embeddings.word_embeddings.weight, disc.electra.embeddings.word_embeddings.weight
    )


def test_a_generator_our_towers_cannot_hold_is_refused(tmp_path):
    write_electra_pair(tmp_path, VOCAB)
    config = json.loads((tmp_path / "generator" / "config.json").read_text())
    config["intermediate_size"] = 48  # the generator built here has 4 x hidden
    (tmp_path / "generator" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="intermediate_size=48"):
        init_from.pair_model_config(init_from.resolve(str(tmp_path)), ModelConfig())
