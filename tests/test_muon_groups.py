"""Muon's parameter split (Jordan et al. 2024 practice): Newton-Schulz for hidden-layer matrices only;
embeddings, positional parameters, the head and every non-matrix parameter go to the AdamW fallback."""

from __future__ import annotations

import torch
from torch import nn

from nlbench.core.registry import BuildContext, build_parts, resolve_hparams
from nlbench.models.hope import HopeLM, HopeLMConfig
from nlbench.models.transformer import TinyTransformer, TransformerConfig
from nlbench.strategies.dmgd.muon import Muon, muon_param_groups


def _split(opt):
    muon, fallback = set(), set()
    for group in opt.param_groups:
        (muon if group["use_muon"] else fallback).update(id(p) for p in group["params"])
    return muon, fallback



def test_the_registered_muon_sends_embeddings_positions_head_and_vectors_to_the_fallback():
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(vocab_size=11, max_len=8, d_model=16, n_heads=2, n_layers=1))
    parts = build_parts("muon", BuildContext(spec=None, suite=None, model=model, device=torch.device("cpu")),
                        resolve_hparams("muon", {}))
    opt = parts.optimizer(model, None)
    muon, fallback = _split(opt)
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {id(m.weight) for n, m in model.named_modules()
                if isinstance(m, nn.Linear) and not n.startswith("classifier")}
    assert muon == expected and len(expected) >= 4
    assert {names[i] for i in fallback} >= {"embed.weight", "pos", "classifier.weight", "classifier.bias"}
    assert all(model.get_parameter(names[i]).ndim >= 2 for i in muon)
    # and a step leaves the embedding as Adam would move it (no Newton-Schulz on it)
    x = torch.randint(0, 11, (4, 8))
    nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    before = model.embed.weight.detach().clone()
    opt.step()
    moved = (model.embed.weight.detach() - before).abs().max()
    assert moved <= 1e-3 * 1.001  # first Adam step is at most lr per entry; NS would move ~lr*O(1)


def test_hope_memory_states_and_depthwise_conv_are_not_orthogonalised():
    model = HopeLM(HopeLMConfig(vocab_size=7, max_len=8, d_model=16, n_heads=2, n_layers=1, chunk=4))
    groups = muon_param_groups(model, model.parameters())
    opt = Muon(groups)
    muon, fallback = _split(opt)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[i] for i in muon}
    assert muon_names and all(n.endswith(".weight") for n in muon_names)
    for must_fall_back in ("pos", "embed.weight", "classifier.weight", "blocks.0.memory.conv.weight"):
        assert must_fall_back in {names[i] for i in fallback}
    assert not any("init_state" in n for n in muon_names)
    assert len(muon) + len(fallback) == len(list(model.parameters()))
