"""Our training-free predictor of γ from the RoPE kernel (derivation: ``docs/predictor.md``).

RoPE turns a query–key logit into a sum over rotated pairs, Σ_i a_i·cos(d·ω_i) + b_i·sin(d·ω_i). When the
pair weights are equal (a_i = 1, b_i = 0) the logit's distance dependence is the **RoPE kernel**

    K(d) = (1/n) Σ_i cos(d·ω_i)                      (dimensionless; n pairs, ω_i the real inv_freq)

whose continuum form for unscaled RoPE (ω = θ^(−u), u uniform on [0, 1)) is

    K(d) = [Ci(d) − Ci(d/θ)] / ln θ  ≈  1 − (ln d + γ_E) / ln θ      (1 ≪ d ≪ θ)

— a logit falling linearly in ln d, so exp(β·K(d)) ∝ d^(−β/ln θ): a power law whose exponent scales as
1/ln θ. Two predictors follow, each with **one global constant** calibrated on the zoo:

- :func:`kernel_slope` → ``gamma_kernel = β·S(θ, T)``: S is minus the slope of K on ln d fitted exactly as γ
  is (weights 1/d over d ∈ [1, ⌊T/2⌋]) on the model's real ``inv_freq``. Uses θ (through inv_freq) and T.
- :func:`weight_kernels` → ``gamma_weights``: each head's own pair weights a_i, b_i from its query and key
  projections and the layer's input RMSNorm weight (no forward pass), the head profiles
  softmax(c·s_h(d)) pooled over heads and fitted like the measurement. Uses inv_freq and those weights.

>>> import math
>>> from gammalens.theory.rope import inv_freq_default
>>> round(kernel_slope(inv_freq_default(1e4, 32), 512), 3), round(1 / math.log(1e4), 3)   # S(θ, T) ≈ 1/ln θ
(0.115, 0.109)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gammalens.errors import GammalensError
from gammalens.fit.power_law import fit_power_law, loglog_weights, weighted_line
from gammalens.theory.rope import inv_freqs_from_model

EULER_GAMMA = 0.5772156649015329


def kernel_mean(d: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """The RoPE kernel K(d) = mean_i cos(d·ω_i).

    Parameters
    ----------
    d : np.ndarray, shape (D,)
        Query–key distances (tokens).
    freqs : np.ndarray, shape (n,)
        RoPE frequencies ω_i (radians per token), e.g. a model's ``inv_freq``.

    Returns
    -------
    np.ndarray, shape (D,)
        Dimensionless, in [−1, 1]; K(0) = 1.

    Examples
    --------
    >>> kernel_mean(np.array([0.0, np.pi]), np.array([1.0, 2.0]))
    array([1., 0.])
    """
    d = np.asarray(d, dtype=np.float64)
    return np.cos(np.multiply.outer(d, np.asarray(freqs, dtype=np.float64))).mean(-1)  # (D, n) → (D,)


def kernel_continuum(d: np.ndarray, theta: float) -> np.ndarray:
    """Continuum RoPE kernel of unscaled RoPE, [Ci(d) − Ci(d/θ)]/ln θ (the n → ∞ limit of :func:`kernel_mean`).

    Parameters
    ----------
    d : np.ndarray
        Distances > 0 (tokens).
    theta : float
        RoPE base θ > 1.

    Examples
    --------
    >>> round(float(kernel_continuum(np.array([10.0]), 1e4)[0]), 4)
    0.6824
    """
    from scipy.special import sici

    d = np.asarray(d, dtype=np.float64)
    if theta <= 1 or np.any(d <= 0):
        raise GammalensError("the continuum kernel needs θ > 1 and distances d > 0")
    return (sici(d)[1] - sici(d / theta)[1]) / np.log(theta)


def kernel_asymptote(d: np.ndarray, theta: float) -> np.ndarray:
    """Its straight-line form 1 − (ln d + γ_E)/ln θ, valid for 1 ≪ d ≪ θ: slope −1/ln θ in ln d."""
    return 1.0 - (np.log(np.asarray(d, dtype=np.float64)) + EULER_GAMMA) / np.log(theta)


def kernel_slope(freqs: np.ndarray, context: int, fit_range: tuple[int, int] | None = None) -> float:
    """S(θ, T): minus the weighted slope of K(d) on ln d over the measurement's fit range.

    The same fit as γ's (weights 1/d, d ∈ [1, ⌊T/2⌋] by default): if the logit is β·K(d), the measured γ of
    exp(β·K) is exactly β·S, with no continuum approximation. For 1 ≪ d ≪ θ, S ≈ 1/ln θ.

    Parameters
    ----------
    freqs : np.ndarray, shape (n,)
        RoPE frequencies (radians per token).
    context : int
        Evaluated context T (tokens).
    fit_range : (int, int), optional
        Inclusive distance range; default ``(1, context // 2)``.
    """
    a, b = fit_range or (1, context // 2)
    d = np.arange(a, b + 1, dtype=np.float64)
    return float(-weighted_line(np.log(d), kernel_mean(d, freqs), loglog_weights(d)).slope)


@dataclass(frozen=True)
class HeadKernels:
    """Per-head RoPE pair weights read from the weights of one model (no forward pass).

    The expected self-match logit of a head — the logit a query gives to a key carrying the same hidden state
    x, at distance d, averaged over x with E[x xᵀ] = diag(g²) (g: the layer's input RMSNorm weight; an RMS-
    normalised residual has unit second moment per coordinate if its coordinates are uncorrelated) — is

        s_h(d) = Σ_i [a_i cos(d·ω_i) + b_i sin(d·ω_i)] / √d_head,

    with C = W_q diag(g²) W_kᵀ (d_head × d_head), a_i = C[i, i] + C[i+h, i+h], b_i = C[i, i+h] − C[i+h, i],
    h = d_head/2 (transformers' rotate-half pairing of dimension i with i + h).

    Attributes
    ----------
    a, b : np.ndarray, shape (layers, heads, n_pairs)
        Cosine and sine weights (logit units, already divided by √d_head).
    freqs : np.ndarray, shape (n_pairs,)
        The model's real ``inv_freq`` (radians per token).
    """

    a: np.ndarray
    b: np.ndarray
    freqs: np.ndarray

    def logits(self, d: np.ndarray) -> np.ndarray:
        """s_h(d) for every layer and head, shape (layers, heads, D)."""
        phase = np.multiply.outer(np.asarray(d, dtype=np.float64), self.freqs)  # (D, n)
        return np.einsum("lhn,dn->lhd", self.a, np.cos(phase)) + np.einsum("lhn,dn->lhd", self.b, np.sin(phase))


def weight_kernels(model: Any) -> HeadKernels:
    """Read :class:`HeadKernels` from a loaded Llama-style model (q_proj, k_proj, input_layernorm, inv_freq)."""

    freqs = list(inv_freqs_from_model(model).values())
    if not freqs:
        raise GammalensError("the weight-kernel predictor needs a RoPE model (no inv_freq buffer found)")
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    h = hd // 2
    a_all, b_all = [], []
    for layer in model.model.layers:
        att = layer.self_attn
        g2 = layer.input_layernorm.weight.detach().double().cpu().numpy() ** 2  # (hidden,)
        wq = att.q_proj.weight.detach().double().cpu().numpy().reshape(n_heads, hd, -1)  # (heads, hd, hidden)
        wk = att.k_proj.weight.detach().double().cpu().numpy().reshape(n_kv, hd, -1)  # (kv_heads, hd, hidden)
        wk = np.repeat(wk, n_heads // n_kv, axis=0)  # (heads, hd, hidden): GQA groups of consecutive heads
        c = np.einsum("hix,x,hjx->hij", wq, g2, wk)  # (heads, hd, hd)
        diag = np.diagonal(c, axis1=1, axis2=2)  # (heads, hd)
        a_all.append(diag[:, :h] + diag[:, h:])
        b_all.append(np.diagonal(c[:, :h, h:], axis1=1, axis2=2) - np.diagonal(c[:, h:, :h], axis1=1, axis2=2))
    scale = 1.0 / np.sqrt(hd)
    return HeadKernels(np.stack(a_all) * scale, np.stack(b_all) * scale, freqs[0])


def pooled_gamma(kernels: HeadKernels, c: float, context: int, layer: int | None = None) -> float:
    """γ of the pooled head profiles softmax_d(c·s_h(d)) over d = 0..T−1, fitted like the measurement.

    ``layer=None`` pools every head of every layer (the model row); an integer pools one layer's heads.
    """
    d_all = np.arange(context, dtype=np.float64)
    s = c * kernels.logits(d_all)  # (L, H, T)
    if layer is not None:
        s = s[layer : layer + 1]
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    pooled = p.reshape(-1, context).mean(0)  # (T,)
    d = np.arange(1, context // 2 + 1)
    return float(-fit_power_law(d, pooled[d]).slope)


def calibrate(predict: Callable[[float], np.ndarray], observed: np.ndarray, bounds: tuple[float, float]) -> float:
    """The one global constant: least squares Σ (γ_pred(k) − γ_obs)² over k in ``bounds`` (log-uniform search)."""
    from scipy.optimize import minimize_scalar

    observed = np.asarray(observed, dtype=np.float64)
    res = minimize_scalar(lambda lk: float(np.sum((predict(float(np.exp(lk))) - observed) ** 2)),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


def leave_one_out(predict: Callable[[float], np.ndarray], observed: np.ndarray,
                  bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out predictions: model j predicted with the constant calibrated on all others.

    Parameters
    ----------
    predict : callable
        ``predict(k)`` → predictions for every model, shape (M,), at constant ``k``.
    observed : np.ndarray, shape (M,)
        Measured γ.

    Returns
    -------
    (predictions, constants) : two arrays of shape (M,)
    """
    observed = np.asarray(observed, dtype=np.float64)
    preds, consts = np.empty_like(observed), np.empty_like(observed)
    for j in range(len(observed)):
        keep = np.arange(len(observed)) != j
        k = calibrate(lambda kk, keep=keep: predict(kk)[keep], observed[keep], bounds)
        preds[j], consts[j] = predict(k)[j], k
    return preds, consts
