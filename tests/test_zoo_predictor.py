"""Our γ predictor (gammalens.zoo.predictor) against independent computations: brute-force sums, quadrature,
the model's own attention logits, and exact calibrations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gammalens.theory.rope import inv_freq_default
from gammalens.zoo import predictor as P


def test_kernel_mean_equals_brute_force_sum():
    freqs = inv_freq_default(1e4, 32)
    d = np.array([0, 1, 2, 7, 100, 511])
    brute = [sum(math.cos(float(x) * float(w)) for w in freqs) / len(freqs) for x in d]
    np.testing.assert_allclose(P.kernel_mean(d, freqs), brute, rtol=0, atol=1e-13)
    assert P.kernel_mean(np.array([0]), freqs)[0] == 1.0


@pytest.mark.parametrize("theta", [1e2, 1e4, 1e6])
@pytest.mark.parametrize("d", [1.0, 10.0, 300.0])
def test_continuum_kernel_equals_quadrature_of_its_definition(theta, d):
    from scipy.integrate import quad

    # K(d) = ∫_0^1 cos(d θ^(−u)) du, integrated numerically without the cosine integral
    want, _ = quad(lambda u: math.cos(d * theta ** (-u)), 0.0, 1.0, limit=500, epsabs=1e-12, epsrel=1e-12)
    assert P.kernel_continuum(np.array([d]), theta)[0] == pytest.approx(want, abs=1e-9)


def test_continuum_kernel_against_mpmath_ci():
    mpmath = pytest.importorskip("mpmath")
    theta, d = 1e5, 37.0
    want = float((mpmath.ci(d) - mpmath.ci(d / theta)) / mpmath.log(theta))
    assert P.kernel_continuum(np.array([d]), theta)[0] == pytest.approx(want, abs=1e-12)


def test_discrete_kernel_converges_to_continuum():
    theta, d = 1e4, np.array([1.0, 5.0, 50.0, 400.0])
    # ω_i = θ^(−2i/D) is a left Riemann sum of the continuum integral with step 2/D: error O(1/n_pairs)
    errs = [np.abs(P.kernel_mean(d, inv_freq_default(theta, 2 * n)) - P.kernel_continuum(d, theta)).max()
            for n in (64, 256, 1024)]
    assert errs[2] < errs[1] < errs[0] and errs[2] < 2e-3


@pytest.mark.parametrize("theta", [1e4, 1e6])
def test_kernel_slope_is_one_over_ln_theta_far_from_aliasing(theta):
    # 1 ≪ d ≪ θ: K ≈ 1 − (ln d + γ_E)/ln θ, so S ≈ 1/ln θ (within the oscillation of Ci(d) near d = 1)
    S = P.kernel_slope(inv_freq_default(theta, 4096), context=2048, fit_range=(16, 1024))
    assert pytest.approx(1 / math.log(theta), rel=0.03) == S
    d = np.arange(16, 1025, dtype=float)
    np.testing.assert_allclose(P.kernel_continuum(d, theta), P.kernel_asymptote(d, theta), atol=0.08 / math.log(theta))


def test_weight_kernel_matches_model_logits_for_a_repeated_hidden_state():
    """s_h(d) built from a_i, b_i reproduces the model's own rotated q·k/√d_head (transformers' RoPE)."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2,
                      rope_parameters={"rope_type": "default", "rope_theta": 100.0})
    model = LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    att, norm = model.model.layers[0].self_attn, model.model.layers[0].input_layernorm
    T, hd = 40, 8
    with torch.no_grad():
        h = norm(torch.randn(32, dtype=torch.float64).expand(1, T, 32))  # the same hidden state at every position
        q = att.q_proj(h).view(1, T, 4, hd).transpose(1, 2)
        k = att.k_proj(h).view(1, T, 2, hd).transpose(1, 2).repeat_interleave(2, dim=1)
        cos, sin = model.model.rotary_emb(h, torch.arange(T)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        logits = torch.einsum("hd,htd->ht", q[0, :, -1], k[0]).numpy() / math.sqrt(hd)  # (heads, keys)
    # the same construction as weight_kernels, with x xᵀ of this hidden state in place of diag(g²)
    x = h[0, 0].numpy()
    wq = att.q_proj.weight.detach().numpy().reshape(4, hd, -1)
    wk = np.repeat(att.k_proj.weight.detach().numpy().reshape(2, hd, -1), 2, axis=0)
    c = np.einsum("hix,x,y,hjy->hij", wq, x, x, wk)
    dg = np.diagonal(c, axis1=1, axis2=2)
    a = dg[:, :4] + dg[:, 4:]
    b = np.diagonal(c[:, :4, 4:], axis1=1, axis2=2) - np.diagonal(c[:, 4:, :4], axis1=1, axis2=2)
    freqs = P.weight_kernels(model).freqs
    kern = P.HeadKernels(a[None] / math.sqrt(hd), b[None] / math.sqrt(hd), freqs)
    d = np.arange(T)[::-1].astype(float)  # key t is at distance T−1−t from the last query
    np.testing.assert_allclose(kern.logits(d)[0], logits, rtol=1e-5, atol=1e-4 * np.abs(logits).max())
    # and weight_kernels' own a, b are this construction with E[x xᵀ] = diag(g²)
    g2 = norm.weight.detach().numpy() ** 2
    c2 = np.einsum("hix,x,hjx->hij", wq, g2, wk)
    np.testing.assert_allclose(P.weight_kernels(model).a[0] * math.sqrt(hd),
                               np.diagonal(c2, axis1=1, axis2=2)[:, :4] + np.diagonal(c2, axis1=1, axis2=2)[:, 4:])


def test_pooled_gamma_is_zero_for_flat_logits_and_grows_with_c():
    rng = np.random.default_rng(0)
    freqs = inv_freq_default(1e3, 16)
    kern = P.HeadKernels(np.abs(rng.normal(size=(2, 3, 8))), np.zeros((2, 3, 8)), freqs)
    assert abs(P.pooled_gamma(kern, 1e-9, 256)) < 1e-8  # uniform attention → γ = 0 (the null)
    assert 0 < P.pooled_gamma(kern, 0.5, 256) < P.pooled_gamma(kern, 2.0, 256)


def test_leave_one_out_recovers_an_exact_linear_law():
    S = np.array([0.1, 0.2, 0.15, 0.3, 0.05])
    preds, consts = P.leave_one_out(lambda k: k * S, 2.5 * S, (1e-2, 1e2))
    np.testing.assert_allclose(preds, 2.5 * S, rtol=1e-5)
    np.testing.assert_allclose(consts, 2.5, rtol=1e-5)


@pytest.mark.parametrize("name", ["predictor", "data"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"gammalens.zoo.{name}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
