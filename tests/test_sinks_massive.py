"""Massive activations and the causal test on a tiny random-init Llama with a planted massive activation.

The model reads hidden dimension ``DIM`` the way trained models read their massive dimensions (Sun et al.
2024): every query carries a fixed component (a q bias) along the key direction that ``DIM`` writes. With
an ordinary value in ``DIM`` nothing stands out; a forward hook that sets ``DIM`` of the first token to
``VALUE`` after layer 1 — the planted massive activation — makes the first token a sink in layers 2 and 3,
and ablating it where it arises (zero) must remove the sink, while setting it to its mean must keep it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gammalens.errors import GammalensError
from gammalens.model.load import load_model, resolve_model
from gammalens.probe.backend import registered_probes
from gammalens.publish import publish_sinks
from gammalens.sinks import measure_sinks
from gammalens.sinks.ablation import ablating
from gammalens.sinks.massive import MassiveDetector, decoder_layers
from tests.conftest import copy_tokenizer

DIM, VALUE, PLANT_LAYER, N_LAYERS, HEAD_DIM = 7, 500.0, 1, 4, 16
SETTINGS = {"corpus": "random", "context": 48, "windows": 4, "bootstrap": 0}


@pytest.fixture(scope="module")
def reader_llama(tmp_path_factory):
    """(model, tokenizer) of a tiny Llama whose queries read dimension DIM of the keys' input."""
    import transformers

    path = tmp_path_factory.mktemp("reader_llama")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=N_LAYERS,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   attention_bias=True)
    model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    with torch.no_grad():
        for block in model.model.layers:
            attn = block.self_attn
            attn.q_proj.weight.mul_(8.0)  # random-init attention is otherwise nearly uniform
            attn.q_proj.bias.zero_()
            attn.k_proj.bias.zero_()
            attn.q_proj.bias[::HEAD_DIM] = 2.0  # every query: +2 on its head's first coordinate
            attn.k_proj.weight[::HEAD_DIM, DIM] = 2.0  # DIM writes the keys' first coordinate
    model.save_pretrained(path)
    copy_tokenizer(path)
    return load_model(resolve_model(str(path)))


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def plant(model):
    def hook(module, args, output):
        h = (output[0] if isinstance(output, tuple) else output).clone()
        h[:, 0, DIM] = VALUE  # the first token of every window
        return h

    return decoder_layers(model)[PLANT_LAYER].register_forward_hook(hook)


@pytest.fixture(scope="module")
def unplanted(reader_llama):
    net, tok = reader_llama
    before = hook_count(net)
    result = measure_sinks(net, tokenizer=tok, **SETTINGS)
    assert hook_count(net) == before and registered_probes() == []  # nothing left hooked or registered
    return result


@pytest.fixture(scope="module")
def planted(reader_llama):
    net, tok = reader_llama
    before = hook_count(net)
    handle = plant(net)
    try:
        zero = measure_sinks(net, tokenizer=tok, **SETTINGS)
        mean = measure_sinks(net, tokenizer=tok, ablate="mean", bos_variant=False, **SETTINGS)
        assert hook_count(net) == before + 1  # only the plant: detector and ablation hooks are gone
    finally:
        handle.remove()
    return zero, mean


def test_unplanted_model_has_no_massive_activations_and_no_sink(unplanted) -> None:
    m = unplanted.massive
    assert not m.any and m.first_layer is None and m.sites == [] and m.count.tolist() == [0] * N_LAYERS
    assert np.nanmax(m.top_abs) < 1.0  # random-init hidden states stay far below |h| = 100
    assert unplanted.ablated is None and unplanted.sink_rate == 0.0
    assert unplanted.baseline.mass_k(1).max() < 0.15


def test_planted_massive_activation_is_found_where_it_arises(planted) -> None:
    m = planted[0].massive
    assert m.first_layer == PLANT_LAYER
    assert m.count.tolist() == [0] + [SETTINGS["windows"]] * (N_LAYERS - 1)  # it rides the residual stream onward
    assert m.dims() == [DIM] and {s["position"] for s in m.sites} == {0}
    assert m.sites[0]["mean_value"] == VALUE and m.sites[0]["token_ids"] == [101]  # [CLS] of MiniLM's tokenizer
    assert m.arising() == {PLANT_LAYER: {DIM: VALUE}}


def test_planted_massive_activation_makes_a_sink_that_zero_ablation_removes(planted, unplanted) -> None:
    zero, _ = planted
    before, with_plant, ablated = unplanted.baseline.mass_k(1), zero.baseline.mass_k(1), zero.ablated.mass_k(1)
    # layers up to the plant are untouched; after it the first token soaks up attention
    assert np.allclose(with_plant[: PLANT_LAYER + 1], before[: PLANT_LAYER + 1], atol=1e-6)
    assert with_plant[PLANT_LAYER + 1:].mean() > 3 * before[PLANT_LAYER + 1:].mean()
    assert zero.sink_rate >= 0.3 and zero.baseline.sink_kind[PLANT_LAYER + 1:].tolist() == [["bos"] * 4] * 2
    # ablated where it arises: the sink is gone, back to the unplanted model (whose DIM value was small, not 0)
    assert np.allclose(ablated, before, atol=0.01)
    assert zero.ablated_count == [0, SETTINGS["windows"], 0, 0]
    layers = zero.layers()
    assert (layers["delta_sink_ablated"][PLANT_LAYER + 1:] < -0.1).all()
    assert (layers["delta_sink_ablated"][: PLANT_LAYER + 1] == 0).all()
    # γ is fitted without the sink keys: the sink moves, γ barely does
    assert np.abs(layers["delta_gamma_ablated"]).max() < 0.05


def test_mean_ablation_keeps_the_sink(planted) -> None:
    _, mean = planted
    assert mean.bos is None and mean.bos_note == "BOS variant not measured"
    assert np.allclose(mean.ablated.mass_k(1), mean.baseline.mass_k(1), atol=1e-6)


def test_bos_variant_moves_the_sink_to_the_first_content_token(planted) -> None:
    zero, _ = planted
    assert zero.bos.label == "no_bos" and zero.bos.context == SETTINGS["context"] - 1 and "[CLS]" in zero.bos_note
    # the plant follows position 0, so without [CLS] the first content token becomes the sink
    assert zero.bos.sink_kind[PLANT_LAYER + 1:].tolist() == [["first_content"] * 4] * 2
    assert zero.bos.mass_k(1)[PLANT_LAYER + 1:].mean() > 0.2


def test_detector_against_output_hidden_states(reader_llama) -> None:
    """Low thresholds so that many coordinates qualify; the reference applies the criterion with NumPy."""
    net, _ = reader_llama
    ids = torch.randint(1000, 2000, (2, 20), generator=torch.Generator().manual_seed(1))
    det = MassiveDetector(abs_threshold=0.03, ratio=2.5)
    with torch.no_grad():
        hidden = net(input_ids=ids, output_hidden_states=True).hidden_states  # embeddings, then each layer
        with det.attached(net):
            net(input_ids=ids)
    got = det.result()
    for layer in range(N_LAYERS - 1):  # the last entry of hidden_states has the final norm applied
        a = hidden[layer + 1].abs().float().numpy()  # (B, n, D) fp32, as the detector compares
        flat = np.sort(a.reshape(len(a), -1), axis=1)
        median = flat[:, (flat.shape[1] - 1) // 2]  # the lower median, as torch.median
        mask = (a >= np.float32(0.03)) & (a >= np.float32(2.5) * median[:, None, None])
        assert got.count[layer] == mask.sum() > 0
        assert np.isclose(got.median_abs[layer], median.mean(), rtol=1e-6)
        assert np.isclose(got.top_abs[layer, 0], a.max(), rtol=1e-6)
        sites = {(s["dim"], s["position"]): s["n"] for s in got.sites if s["layer"] == layer}
        _, pos, dim = np.nonzero(mask)
        assert sum(sites.values()) == mask.sum() and set(sites) == set(zip(dim.tolist(), pos.tolist(), strict=True))


def test_nothing_left_hooked_after_errors(reader_llama, tmp_path) -> None:
    net, tok = reader_llama
    before = hook_count(net)
    det = MassiveDetector()
    with pytest.raises(RuntimeError), det.attached(net):
        assert hook_count(net) == before + N_LAYERS + 1
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), ablating(net, {1: {DIM: 0.0}}):
        assert hook_count(net) == before + 1
        raise RuntimeError("boom")
    assert hook_count(net) == before

    calls = {"n": 0}

    def fail_in_second_pass(module, args, output):
        calls["n"] += 1
        if calls["n"] > SETTINGS["windows"]:  # one call per window (batch_size=1): the 2nd pass is the ablation
            raise RuntimeError("planted failure")

    handle = plant(net)
    failing = decoder_layers(net)[0].register_forward_hook(fail_in_second_pass)
    try:
        with pytest.raises(RuntimeError, match="planted failure"):
            publish_sinks(measure_sinks(net, tokenizer=tok, batch_size=1, **SETTINGS), tmp_path / "runs")
    finally:
        failing.remove()
        handle.remove()
    assert hook_count(net) == before and registered_probes() == []
    runs = tmp_path / "runs"  # no run directory, complete or partial (nor the --out folder itself)
    assert not runs.exists() or list(runs.iterdir()) == []


def test_bad_ablation_target(reader_llama) -> None:
    net, _ = reader_llama
    before = hook_count(net)  # transformers keeps a few hooks of its own
    with pytest.raises(GammalensError, match="outside"), ablating(net, {0: {1: 0.0}, 9: {0: 0.0}}):
        pass
    with pytest.raises(GammalensError, match="zero, mean"), ablating(net, {}, mode="half"):
        pass
    assert hook_count(net) == before
