"""`train.compile`: per-layer torch.compile gives the eager model's losses, gradients and weights
over a few training steps on CPU (Inductor with gcc), keeps the state dict's names, and a layer that
cannot be compiled fails with a ConfigError naming the fix."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_config

from koelectra_dist.errors import ConfigError
from koelectra_dist.pretrain.compiled import compile_layers
from koelectra_dist.pretrain.model import ElectraPretrainer
from koelectra_dist.pretrain.optim import ElectraAdamW, param_groups
from koelectra_dist.tokens import CLS_ID, PAD_ID, SEP_ID


@pytest.fixture
def inductor():
    """A fresh compile each test; Inductor's random ops drawn as eager draws them (dropout)."""
    import torch._dynamo
    import torch._inductor.config as config

    torch._dynamo.reset()
    with config.patch(fallback_random=True, fx_graph_cache=False):
        yield config
    torch._dynamo.reset()


def batch(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (4, 32), generator=gen)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # one padded row: the masked attention path too
    ids[1, 20:] = PAD_ID
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_compiled_layers_train_like_eager(tmp_path, inductor):
    cfg = tiny_config(str(tmp_path))
    torch.manual_seed(0)
    eager = ElectraPretrainer(cfg.model, cfg.train.mask_prob, cfg.train.gen_weight, cfg.train.disc_weight).train()
    compiled = copy.deepcopy(eager)
    assert compile_layers(compiled) == 2 * cfg.model.num_hidden_layers
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    runs = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        optimizer = ElectraAdamW(param_groups(model, 0.01), lr=1e-3)
        torch.manual_seed(1)  # masking, sampling and dropout draw the same numbers in both runs
        losses = []
        for step in range(3):
            out = model(**batch(step))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(out.loss.detach())
        runs[name] = torch.stack(losses)
    torch.testing.assert_close(runs["compiled"], runs["eager"], rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_a_layer_that_cannot_compile_fails_naming_the_fix(tmp_path, inductor):
    cfg = tiny_config(str(tmp_path))
    model = ElectraPretrainer(cfg.model)
    compile_layers(model)
    with (
        inductor.patch({"cpp.cxx": ("no-such-c++-compiler",)}),
        pytest.raises(ConfigError, match="train.compile: torch.compile could not compile .* train.compile=false"),
    ):
        model(**batch(0))
