"""The ELECTRA objective (koelectra_dist/pretrain/model.py) against its definition (ELECTRA's paper and code)
and against the plain `transformers` classes it builds on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, TINY_MODEL, no_dropout
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from koelectra_dist.config import ModelConfig, load_config
from koelectra_dist.errors import ConfigError, DataError
from koelectra_dist.pretrain.model import (
    ElectraPretrainer,
    binary_auc,
    hf_configs,
    mask_tokens,
    max_predictions,
)
from koelectra_dist.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID

TINY = TINY_MODEL


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`[CLS] A [SEP] B [SEP] [PAD]...` rows of varied real length, with stray [MASK] tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=gen)
    lengths = torch.randint(3, seq + 1, (batch,), generator=gen)
    lengths[0] = seq
    ids[ids % 23 == 0] = MASK_ID
    positions = torch.arange(seq)
    real = positions < lengths[:, None]
    middle = lengths // 2
    ids[:, 0] = CLS_ID
    ids[positions == middle[:, None]] = SEP_ID
    ids[positions == (lengths - 1)[:, None]] = SEP_ID
    ids[~real] = PAD_ID
    token_types = ((positions > middle[:, None]) & real).long()
    return ids, real.long(), token_types


def test_hf_configs_follow_the_reference_shapes():
    base = load_config(ROOT / "configs" / "base_v3.json").model
    gen, disc = hf_configs(base)
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (256, 4, 1024)
    assert (disc.hidden_size, disc.num_attention_heads, disc.intermediate_size) == (768, 12, 3072)
    assert gen.num_hidden_layers == disc.num_hidden_layers == 12
    assert gen.embedding_size == disc.embedding_size == 768
    small_gen, small_disc = hf_configs(load_config(ROOT / "configs" / "small_v3.json").model)
    assert small_gen.hidden_size == small_disc.hidden_size == 256
    assert small_gen.embedding_size == 128
    assert gen._attn_implementation == disc._attn_implementation == "sdpa"
    assert gen.pad_token_id == PAD_ID and gen.vocab_size == 35000


def test_masking_rule_on_a_large_sample():
    ids, attention, _ = make_batch(4000, 40, 97, seed=1)
    cap = max_predictions(0.15, 40)
    torch.manual_seed(0)
    masked = mask_tokens(ids, attention, 0.15, cap)
    real = attention.bool()
    candidates = real & ~torch.isin(ids, torch.tensor([CLS_ID, SEP_ID, MASK_ID, PAD_ID]))
    expected = torch.minimum(torch.round(real.sum(-1) * 0.15).clamp(min=1, max=cap).long(), candidates.sum(-1))
    assert torch.equal(masked.valid.sum(-1), expected)
    chosen = torch.zeros_like(real).scatter(1, masked.positions, masked.valid)
    assert torch.equal(chosen.sum(-1), expected), "chosen positions must be distinct"
    assert not (chosen & ~candidates).any(), "a special or padding token was chosen"
    assert torch.equal(masked.targets, ids.gather(1, masked.positions))
    assert torch.equal(masked.input_ids[~chosen], ids[~chosen])
    new = masked.input_ids[chosen]
    original = ids[chosen]
    assert bool(((new == MASK_ID) | (new == original)).all()), "0% random: only [MASK] or unchanged"
    mask_frac = (new == MASK_ID).float().mean().item()
    assert chosen.sum() > 10_000
    assert abs(mask_frac - 0.85) < 0.015, mask_frac
    # uniform among each row's candidates: relative ranks of the chosen ones fill 4 bins equally
    rank = (candidates.cumsum(-1) - 0.5) / candidates.sum(-1, keepdim=True).clamp(min=1)
    bins = torch.bincount((rank[chosen] * 4).long(), minlength=4).float() / chosen.sum()
    assert torch.allclose(bins, torch.full((4,), 0.25), atol=0.02), bins


def test_masking_respects_the_cap_and_rows_without_candidates():
    ids = torch.full((2, 200), 50)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    ids[1, 2:] = PAD_ID
    ids[1, 1] = SEP_ID
    attention = (ids != PAD_ID).long()
    masked = mask_tokens(ids, attention, 0.15, cap=20)
    assert masked.valid.sum(-1).tolist() == [20, 0]
    assert torch.equal(masked.input_ids[1], ids[1])


def test_the_masking_rate_and_cap_are_electras_and_follow_the_config():
    """ELECTRA's max_predictions_per_seq = int((mask_prob + 0.005) * max_seq_length), and a row of
    n real tokens gets round(mask_prob * n) masks: with mask_prob 0.25 (Large), not 0.15."""
    assert [max_predictions(0.15, 128), max_predictions(0.15, 512), max_predictions(0.25, 512)] == [19, 79, 130]
    assert ElectraPretrainer(TINY, mask_prob=0.25).cap == max_predictions(0.25, TINY.max_length)
    ids = torch.full((3, 100), 50)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    ids[2, 60:] = PAD_ID
    attention = (ids != PAD_ID).long()
    for prob, counts in [(0.15, [15, 15, 9]), (0.25, [25, 25, 15])]:
        assert mask_tokens(ids, attention, prob, cap=100).valid.sum(-1).tolist() == counts


def test_restoring_the_rng_restores_the_masks_and_samples():
    model = ElectraPretrainer(TINY).eval()
    batch = make_batch(4, 40, 97)
    state = torch.get_rng_state()
    first = model(*batch)
    torch.set_rng_state(state)
    second = model(*batch)
    assert torch.equal(first.masked.input_ids, second.masked.input_ids)
    assert torch.equal(first.fake_input_ids, second.fake_input_ids)


def test_embeddings_are_one_module_with_gradients_from_both_towers():
    model = ElectraPretrainer(TINY)
    shared = model.generator.electra.embeddings
    assert model.discriminator.electra.embeddings is shared
    assert model.generator.generator_lm_head.weight is shared.word_embeddings.weight
    proj_g, proj_d = model.generator.electra.embeddings_project, model.discriminator.electra.embeddings_project
    assert proj_g is not proj_d and proj_g.out_features == 16 and proj_d.out_features == 32
    n_unique = sum(p.numel() for p in model.parameters())
    n_state = sum(t.numel() for k, t in model.state_dict().items() if "embeddings." not in k or "generator." in k)
    assert n_unique == n_state - shared.word_embeddings.weight.numel()  # tied lm head counted once
    # generator loss alone reaches the shared embeddings but not the discriminator
    model.zero_grad(set_to_none=True)
    out = model(*make_batch(6, 40, 97))
    out.gen_loss.backward()
    for p in shared.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.discriminator.electra.encoder.parameters())
    # discriminator loss alone reaches the shared embeddings, never the generator's own parameters
    model.zero_grad(set_to_none=True)
    out = model(*make_batch(6, 40, 97))
    out.disc_loss.backward()
    for p in shared.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    generator_own = [p for n, p in model.generator.named_parameters() if "embeddings." not in n]
    assert all(p.grad is None for p in generator_own)


def test_generator_head_sees_only_masked_positions():
    model = ElectraPretrainer(TINY).eval()
    seen: dict[str, torch.Tensor] = {}
    model.generator.electra.register_forward_hook(lambda m, i, o: seen.update(hidden=o.last_hidden_state))
    model.generator.generator_predictions.register_forward_hook(lambda m, i, o: seen.update(head_in=i[0]))
    model.generator.generator_lm_head.register_forward_hook(lambda m, i, o: seen.update(logits=o))
    batch = make_batch(8, 40, 97)
    out = model(*batch)
    masked = out.masked
    slots = masked.positions.size(1)
    assert slots == round(40 * 0.15) < 40
    assert seen["logits"].shape == (8, slots, 97), "logits only for the prediction slots"
    expected = seen["hidden"].gather(1, masked.positions.unsqueeze(-1).expand(-1, -1, 16))
    head_in = seen["head_in"]
    assert torch.equal(head_in[masked.valid], expected[masked.valid])
    assert not head_in[~masked.valid].any(), "unused slots must not carry an unmasked position"
    assert (~masked.valid).any(), "the batch should exercise unused slots (short rows)"


def test_replaced_labels_only_where_the_sample_differs():
    model = ElectraPretrainer(TINY).eval()
    ids, attention, token_types = make_batch(8, 40, 97)
    out = model(ids, attention, token_types)
    real = attention.bool()
    assert torch.equal(out.replaced, (out.fake_input_ids != ids) & real)
    chosen = torch.zeros_like(real).scatter(1, out.masked.positions, out.masked.valid)
    assert torch.equal(out.fake_input_ids[~chosen], ids[~chosen])
    # A generator that always samples the original token: nothing is "replaced".
    same = torch.where(real, torch.full_like(ids, 50), ids)
    same[:, 0] = CLS_ID
    with torch.no_grad():
        model.generator.generator_lm_head.bias[50] = 1e4
    out = model(same, attention, token_types)
    assert out.masked.valid.sum() > 0 and not out.replaced.any()
    assert out.metrics["replaced_frac"].item() == 0.0
    # One that never does: every chosen position is "replaced", nothing else.
    with torch.no_grad():
        model.generator.generator_lm_head.bias[50] = -1e4
        model.generator.generator_lm_head.bias[60] = 1e4
    out = model(same, attention, token_types)
    chosen = torch.zeros_like(real).scatter(1, out.masked.positions, out.masked.valid)
    assert torch.equal(out.replaced, chosen)
    assert bool((out.fake_input_ids[chosen] == 60).all())


def _copies(model: ElectraPretrainer) -> tuple[ElectraForMaskedLM, ElectraForPreTraining]:
    """Stand-alone `transformers` towers holding the model's weights (strict, so names map 1:1)."""
    gen_cfg, disc_cfg = hf_configs(no_dropout(TINY))
    generator, discriminator = ElectraForMaskedLM(gen_cfg).eval(), ElectraForPreTraining(disc_cfg).eval()
    generator.load_state_dict(model.generator.state_dict(), strict=True)
    discriminator.load_state_dict(model.discriminator.state_dict(), strict=True)
    return generator, discriminator


def test_loss_and_samples_match_a_plain_reference_computation():
    torch.manual_seed(3)
    model = ElectraPretrainer(TINY).eval()
    generator, discriminator = _copies(model)
    ids, attention, token_types = make_batch(8, 40, 97, seed=2)
    torch.manual_seed(11)
    out = model(ids, attention, token_types)

    # Replay the same random draws: positions and [MASK] choices, then the Gumbel noise.
    torch.manual_seed(11)
    masked = mask_tokens(ids, attention, 0.15, max_predictions(0.15, TINY.max_length))
    assert torch.equal(masked.input_ids, out.masked.input_ids)
    labels = torch.full_like(ids, -100).scatter(1, masked.positions, torch.where(masked.valid, masked.targets, -100))
    with torch.no_grad():
        gen = generator(masked.input_ids, attention_mask=attention, token_type_ids=token_types, labels=labels)
        at_slots = gen.logits.gather(1, masked.positions.unsqueeze(-1).expand(-1, -1, 97))
        noise = -torch.log(-torch.log(torch.rand(at_slots.shape) + 1e-9) + 1e-9)
        sampled = (at_slots + noise).argmax(-1)
        fake = ids.clone()
        for b, k in masked.valid.nonzero().tolist():
            fake[b, masked.positions[b, k]] = sampled[b, k]
        replaced = (fake != ids) & attention.bool()
        disc = discriminator(fake, attention_mask=attention, token_type_ids=token_types, labels=replaced.long())
    assert torch.equal(out.fake_input_ids, fake)
    assert torch.equal(out.replaced, replaced)
    assert abs(out.gen_loss.item() - gen.loss.item()) < 1e-5
    assert abs(out.disc_loss.item() - disc.loss.item()) < 1e-5
    assert abs(out.loss.item() - (gen.loss.item() + 50.0 * disc.loss.item())) < 1e-5 * max(1.0, out.loss.item())
    # metrics against plain formulas
    real = attention.bool()
    predicted = disc.logits > 0
    tp = (predicted & replaced).sum().item()
    assert out.metrics["disc_precision"].item() == pytest.approx(tp / max(1, (predicted & real).sum().item()))
    assert out.metrics["disc_recall"].item() == pytest.approx(tp / max(1, replaced.sum().item()))
    assert out.metrics["disc_acc"].item() == pytest.approx(
        ((predicted == replaced) & real).sum().item() / real.sum().item()
    )
    gen_correct = (at_slots.argmax(-1) == masked.targets) & masked.valid
    assert out.metrics["gen_acc"].item() == pytest.approx(gen_correct.sum().item() / masked.valid.sum().item())
    assert out.metrics["masked_tokens"].item() == masked.valid.sum().item()
    assert out.metrics["real_tokens"].item() == real.sum().item()


def test_auc_equals_the_pairwise_definition():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 30, generator=gen)
    labels = torch.rand(6, 30, generator=gen) < 0.3
    scores = scores + labels * 0.8
    weights = torch.rand(6, 30, generator=gen) < 0.8
    pos, neg = scores[labels & weights], scores[~labels & weights]
    pairwise = (pos[:, None] > neg[None, :]).float().mean().item()
    assert binary_auc(scores, labels, weights).item() == pytest.approx(pairwise, abs=1e-6)
    assert binary_auc(scores, torch.zeros_like(labels), weights).item() == 0.5


def test_towers_equal_transformers_outputs_and_export_rename_free(tmp_path):
    model = ElectraPretrainer(no_dropout(TINY)).eval()
    generator, discriminator = _copies(model)
    ids, attention, token_types = make_batch(8, 40, 97, seed=5)
    masked = mask_tokens(ids, attention, 0.15, max_predictions(0.15, TINY.max_length))
    with torch.no_grad():
        ours = model.generator_logits(masked, attention, token_types)
        theirs = generator(masked.input_ids, attention_mask=attention, token_type_ids=token_types).logits
        theirs = theirs.gather(1, masked.positions.unsqueeze(-1).expand(-1, -1, 97))
        torch.testing.assert_close(ours[masked.valid], theirs[masked.valid], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            model.discriminator_logits(ids, attention, token_types),
            discriminator(ids, attention_mask=attention, token_type_ids=token_types).logits,
            rtol=0,
            atol=1e-5,
        )
    # save_pretrained / from_pretrained: no renaming, nothing missing, shared weights in both
    model.generator.save_pretrained(tmp_path / "generator")
    model.discriminator.save_pretrained(tmp_path / "discriminator")
    loaded_gen = ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    loaded_disc = ElectraForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded_gen(masked.input_ids, attention_mask=attention, token_type_ids=token_types).logits,
            model.generator(masked.input_ids, attention_mask=attention, token_type_ids=token_types).logits,
        )
        torch.testing.assert_close(
            loaded_disc(ids, attention_mask=attention, token_type_ids=token_types).logits,
            model.discriminator(ids, attention_mask=attention, token_type_ids=token_types).logits,
        )


def test_attention_goes_through_pytorch_sdpa_except_cpu_training_with_dropout(monkeypatch):
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    model = ElectraPretrainer(TINY)
    with torch.no_grad():
        model.eval()(*make_batch(2, 40, 97))
    assert len(calls) == 2 * TINY.num_hidden_layers
    model.train()(*make_batch(2, 40, 97))  # attention dropout on CPU: koelectra_dist.dropout's math path
    assert len(calls) == 2 * TINY.num_hidden_layers
    ElectraPretrainer(no_dropout(TINY)).train()(*make_batch(2, 40, 97))
    assert len(calls) == 4 * TINY.num_hidden_layers


def test_electra_initialisation():
    model = ElectraPretrainer(
        ModelConfig(
            vocab_size=3000,
            embedding_size=64,
            hidden_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=512,
            max_length=64,
        )
    )
    for name, p in model.named_parameters():
        if "LayerNorm.weight" in name:
            assert bool((p == 1).all()), name
        elif name.endswith("bias"):
            assert bool((p == 0).all()), name
        elif p.numel() > 10_000:
            assert abs(p.std().item() - 0.02) < 0.002 and abs(p.mean().item()) < 0.002, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trains_under_autocast(dtype):
    model = ElectraPretrainer(TINY)
    with torch.autocast("cpu", dtype=dtype):
        out = model(*make_batch(4, 40, 97))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(v) for v in out.metrics.values())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="mask_prob"):
        ElectraPretrainer(TINY, mask_prob=1.5)
    model = ElectraPretrainer(TINY)
    ids, attention, token_types = make_batch(2, 40, 97)
    with pytest.raises(DataError, match="max_length"):
        model(torch.cat([ids, ids], 1), torch.cat([attention, attention], 1), torch.cat([token_types] * 2, 1))
    with pytest.raises(DataError, match=r"\[batch, seq\]"):
        model(ids, attention[:, :10], token_types)


def test_position_ids_reach_both_towers():
    model = ElectraPretrainer(no_dropout(TINY)).eval()
    ids, attention, token_types = make_batch(2, 8, 97)
    shifted = torch.arange(20, 28).expand(2, 8)
    with torch.no_grad():
        default = model.discriminator_logits(ids, attention, token_types)
        explicit = model.discriminator_logits(ids, attention, token_types, torch.arange(8).expand(2, 8))
        moved = model.discriminator_logits(ids, attention, token_types, shifted)
        masked = mask_tokens(ids, attention, model.mask_prob, model.cap)
        gen_default = model.generator_logits(masked, attention, token_types)
        gen_moved = model.generator_logits(masked, attention, token_types, shifted)
    assert torch.allclose(default, explicit) and not torch.allclose(default, moved)
    assert not torch.allclose(gen_default, gen_moved)
    torch.manual_seed(0)
    loss = model.train()(ids, attention, token_types, shifted).loss
    loss.backward()
    assert model.generator.electra.embeddings.position_embeddings.weight.grad[20:28].abs().sum() > 0


def test_no_attention_mask_means_every_position_is_real():
    """Full rows come without a mask (attention then runs on the fused kernel); the objective is
    the one an all-ones mask gives, draw for draw."""
    model = ElectraPretrainer(TINY).eval()
    ids, _, token_types = make_batch(4, 16, TINY.vocab_size)
    torch.manual_seed(3)
    with_mask = model(ids, torch.ones_like(ids), token_types)
    torch.manual_seed(3)
    without = model(ids, None, token_types)
    assert torch.equal(with_mask.masked.positions, without.masked.positions)
    torch.testing.assert_close(without.loss, with_mask.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(without.disc_logits, with_mask.disc_logits, rtol=1e-5, atol=1e-5)


def test_the_worker_builds_the_objective_with_each_configured_setting_and_electras_defaults():
    """The defaults are ELECTRA's (generator 1, discriminator 50, 15% masked), and the worker's model
    takes each from its own key: a swapped or hard-coded weight changes the loss here."""
    from koelectra_dist.pretrain.config import TrainConfig
    from koelectra_dist.pretrain.loop import pretrainer

    defaults = TrainConfig()
    assert (defaults.gen_weight, defaults.disc_weight, defaults.mask_prob) == (1.0, 50.0, 0.15)
    model = ElectraPretrainer(TINY)
    assert (model.gen_weight, model.disc_weight, model.mask_prob) == (1.0, 50.0, 0.15)
    settings = ["train.gen_weight=3.0", "train.disc_weight=7.0", "train.mask_prob=0.25", "train.fused_vocab=false"]
    cfg = load_config(ROOT / "configs" / "tiny.json", settings)
    model = pretrainer(cfg)
    assert (model.gen_weight, model.disc_weight, model.mask_prob) == (3.0, 7.0, 0.25)
    ids, attention, token_types = make_batch(4, 32, cfg.model.vocab_size, seed=1)
    out = model(ids, attention, token_types)
    assert out.loss.item() == pytest.approx(3.0 * out.gen_loss.item() + 7.0 * out.disc_loss.item(), rel=1e-6)
    assert out.gen_loss.item() != pytest.approx(out.disc_loss.item())  # so a swap shows
