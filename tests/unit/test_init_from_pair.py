"""train.init_from with an ELECTRA pair, without Ray: the forms resolve (hf:// ids to a pair or a
single repository, from a local Hub cache laid out as huggingface_hub lays it out), the pair's config and weights become an ElectraPretrainer
that computes the pair's own logits, and the embeddings reconciliation is reported."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import free_port, publish_to_hub_cache, write_electra_pair
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist import storage
from koelectra_dist.config import ModelConfig
from koelectra_dist.corpus.vocab import load_vocab
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


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """In the session's Hub cache (conftest.py; offline): a pair org/tiny-{discriminator,generator},
    a single-repository discriminator org/single (beomi/KcELECTRA-base's kind) and a discriminator
    without its generator, org/lone-discriminator."""
    folder = tmp_path_factory.mktemp("pair")
    write_electra_pair(folder, VOCAB)
    publish_to_hub_cache("org/tiny-discriminator", folder / "discriminator")
    publish_to_hub_cache("org/tiny-generator", folder / "generator")
    publish_to_hub_cache("org/single", folder / "discriminator")
    publish_to_hub_cache("org/lone-discriminator", folder / "discriminator")
    return folder


def test_hub_ids_resolve_to_a_pair_or_a_single_repository(hub):
    pair = ("hf://org/tiny-discriminator", "hf://org/tiny-generator")
    assert storage.hub_model("hf://org/tiny") == pair
    assert storage.hub_model("hf://org/tiny-discriminator") == pair
    assert storage.hub_model("hf://org/single") == ("hf://org/single", None)
    assert storage.hub_model("hf://org/lone") == ("hf://org/lone-discriminator", None)
    source = init_from.resolve("hf://org/tiny")
    assert (source.kind, source.discriminator, source.generator) == ("pair", *pair)
    source = init_from.resolve("hf://org/single")
    assert (source.kind, source.discriminator, source.generator) == ("pair", "hf://org/single", None)
    # a pair's name reads its discriminator: vocab.txt, config.json, the weights
    assert storage.read_bytes("hf://org/tiny/vocab.txt") == VOCAB
    assert load_vocab("hf://org/tiny", "corpus.vocab.vocab_uri") == VOCAB.decode().split()  # vocab_uri, merge_with
    assert storage.read_json("hf://org/single/config.json")["architectures"] == ["ElectraForPreTraining"]
    assert storage.hf_repo("hf://beomi/KcELECTRA-base/vocab.txt") == ("beomi/KcELECTRA-base", "vocab.txt")
    with pytest.raises(StorageError, match="hf://ORG/NAME"):
        storage.hf_repo("hf://just-a-name")
    with pytest.raises(ConfigError, match="without a path"):
        init_from.resolve("hf://org/tiny/discriminator")


def test_a_single_repository_continues_with_a_fresh_generator(hub):
    source = init_from.resolve("hf://org/single")
    model_cfg = init_from.pair_model_config(source, ModelConfig(generator_size=0.5))
    assert (model_cfg.hidden_size, model_cfg.vocab_size, model_cfg.generator_hidden_size()) == (32, 100, 16)
    model = ElectraPretrainer(model_cfg).eval()
    report = init_from.init_weights(model, "hf://org/single")
    assert report["generator"] == "fresh (a discriminator alone)"
    disc = ElectraForPreTraining.from_pretrained(hub / "discriminator").eval()
    with torch.no_grad():
        torch.testing.assert_close(model.discriminator(**probe(100)).logits, disc(**probe(100)).logits)


def test_nothing_cached_and_no_hub_is_a_clear_error_naming_the_id(hub, monkeypatch):
    # offline (the session's setting): the error says so and names the id
    with pytest.raises(
        CheckpointError,
        match=r"train.init_from=hf://org/absent: neither org/absent-discriminator nor "
        r"org/absent is in the local Hugging Face cache .*HF_HUB_OFFLINE is set",
    ):
        init_from.resolve("hf://org/absent")
    with pytest.raises(StorageError, match="hf://org/absent: neither"):
        storage.exists("hf://org/absent/vocab.txt")
    # online but the Hub out of reach (a closed port): the connection error is named
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match=r"hf://org/gone: .*the Hub cannot be asked \(.*(Connect|connect)"):
        storage.hub_model("hf://org/gone")
    # what is cached still resolves without the Hub
    assert storage.hub_model("hf://org/single") == ("hf://org/single", None)


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


def test_distill_teachers_by_hub_id(hub, tmp_path):
    from helpers import tiny_config

    from koelectra_dist.distill.teacher import resolve_teacher

    publish_to_hub_cache("org/mlm-single", hub / "generator")  # a single masked-LM repository (BERT's kind)
    teacher = resolve_teacher(tiny_config(str(tmp_path), "distill.teacher_uri=hf://org/mlm-single"))
    assert (teacher.objective, teacher.generator_uri) == ("mlm", None)
    teacher = resolve_teacher(tiny_config(str(tmp_path), "distill.teacher_uri=hf://org/tiny"))
    assert (teacher.objective, teacher.generator_uri) == ("rtd", "hf://org/tiny-generator")
    from koelectra_dist.distill.stage import build_distiller, run_config

    generator = build_distiller(run_config(tiny_config(str(tmp_path), "distill.teacher_uri=hf://org/tiny")))._frozen[1]
    published = ElectraForMaskedLM.from_pretrained(hub / "generator")
    torch.testing.assert_close(dict(generator.state_dict()), dict(published.state_dict()), rtol=0, atol=0)
    given = tiny_config(
        str(tmp_path), "distill.teacher_uri=hf://org/single", "distill.generator_uri=hf://org/tiny-generator"
    )
    assert resolve_teacher(given).generator_uri == "hf://org/tiny-generator"


def test_a_single_repository_discriminator_teacher_gets_a_fresh_generator(hub, tmp_path, caplog):
    """A discriminator alone on the Hub (KcELECTRA's kind) distils with a fresh generator of
    model.generator_size, as train.init_from continues one, and says so."""
    from helpers import tiny_config

    from koelectra_dist.corpus.shards import vocab_sha256
    from koelectra_dist.distill.stage import build_distiller, check_teacher, run_config

    cfg = run_config(
        tiny_config(
            str(tmp_path), "distill.teacher_uri=hf://org/single", "distill.layers=[1]", "model.generator_size=0.25"
        )
    )
    assert (cfg.distill.generator_uri, cfg.model.generator_size) == (None, 0.25)
    with caplog.at_level("WARNING"):
        check_teacher(cfg, vocab_sha256("hf://org/single"))
    assert "hf://org/single: a discriminator alone" in caplog.text and "distill.generator_uri" in caplog.text
    torch.manual_seed(3)  # the worker loop seeds before building: every worker gets the same generator
    distiller = build_distiller(cfg)
    teacher, generator = distiller._frozen
    assert generator.config.hidden_size == 8 and generator.config.num_hidden_layers == 2  # 32 x 0.25, its depth
    words = teacher.electra.embeddings.word_embeddings.weight
    assert torch.equal(generator.electra.embeddings.word_embeddings.weight, words)  # the teacher's embeddings
    assert torch.equal(generator.generator_lm_head.weight, words)
    torch.manual_seed(3)
    again = build_distiller(cfg)._frozen[1]
    torch.testing.assert_close(dict(generator.state_dict()), dict(again.state_dict()), rtol=0, atol=0)
    batch = probe(100)
    out = distiller(**batch)
    out.loss.backward()
    assert (
        out.metrics["student_loss"] > 0
        and distiller.student.electra.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    )
