"""γ_Padé: the decay exponent predicted from RoPE geometry alone (glossary: γ_Padé; Ch. 15).

    γ_Padé(θ, T) = (2θ − T√2) / (2θ + T√2)            (dimensionless; θ the RoPE base, T tokens)

The book reports a median error of ~20–22% against measured γ in Phase A. Everything here follows from
that one relation:

- d_horizon = θ(1−γ)√2/(1+γ) (tokens) inverts it for T at fixed θ: the context length at which the
  geometry would predict the measured γ. By construction d_horizon(θ, γ_Padé(θ, T)) = T.
- θ_eff^Padé = θ + T/√2 rewrites the prediction as γ_Padé = 1 − √2·T/θ_eff^Padé.
- θ_eff^obs = √2·T/(1 − γ_obs) is the same quantity for the measured γ at the same T; equivalently
  θ_eff^obs = θ_obs + T/√2 where θ_obs = T(1+γ)/(√2(1−γ)) is the base whose prediction at T is γ_obs
  (:func:`theta_from_gamma`, the exact inversion for θ).
- η = θ_eff^obs / θ_eff^Padé = (1 − γ_Padé)/(1 − γ_obs): 1 when the measurement matches the
  prediction, > 1 when attention concentrates more than the geometry predicts.
- L_NIAH ≈ 2·α·d_horizon: the needle-in-a-haystack reach under an NTK scaling factor α.

The regime labels and their η thresholds (:data:`ETA_COMPRESSED`, :data:`ETA_OVER_PADE`,
:data:`ETA_FRAUD`) are heuristic: the book names the regimes; the cut points are this package's
choice, documented in ``docs/theory.md``.
"""

from __future__ import annotations

import math

from gammalens.errors import TheoryError

ETA_COMPRESSED = 0.5  # below: γ_obs far under the prediction (flatter than the geometry) — heuristic
ETA_OVER_PADE = 2.0  # above: γ_obs far over the prediction (more local than the geometry) — heuristic
ETA_FRAUD = 10.0  # above (or γ_obs ≥ 1): the evaluated context is not really used — heuristic
REGIMES = ("Normal", "Compressed", "Over-Padé", "SWA", "Fraud")

_SQRT2 = math.sqrt(2.0)


def _check(theta: float | None, context: float | None = None) -> float:
    if theta is None:
        raise TheoryError("γ_Padé does not apply: the model has no RoPE base θ (learned, ALiBi or no positions)")
    if not (math.isfinite(theta) and theta > 0):
        raise TheoryError(f"the RoPE base θ must be a positive number (got {theta})")
    if context is not None and not context >= 1:
        raise TheoryError(f"the context T must be at least 1 token (got {context})")
    return float(theta)


def gamma_pade(theta: float | None, context: float) -> float:
    """γ_Padé(θ, T) = (2θ − T√2)/(2θ + T√2), in (−1, 1).

    Parameters
    ----------
    theta : float
        RoPE base θ. ``None`` (a model without RoPE) raises :class:`~gammalens.errors.TheoryError`.
    context : float
        Evaluated length T (tokens), ≥ 1.

    Examples
    --------
    >>> round(gamma_pade(500000.0, 8192), 4)
    0.9771
    """
    theta = _check(theta, context)
    return (2 * theta - context * _SQRT2) / (2 * theta + context * _SQRT2)


def d_horizon(theta: float | None, gamma: float) -> float | None:
    """d_horizon = θ(1−γ)√2/(1+γ) (tokens); ``None`` outside the Padé range γ ∈ (−1, 1).

    >>> round(d_horizon(500000.0, gamma_pade(500000.0, 8192)), 6)
    8192.0
    """
    theta = _check(theta)
    if not (math.isfinite(gamma) and -1.0 < gamma < 1.0):
        return None
    return theta * (1.0 - gamma) * _SQRT2 / (1.0 + gamma)


def theta_eff_pade(theta: float | None, context: float) -> float:
    """θ_eff^Padé = θ + T/√2, so that γ_Padé = 1 − √2·T/θ_eff^Padé.

    >>> round(theta_eff_pade(10000.0, 2 ** 0.5))
    10001
    """
    return _check(theta, context) + context / _SQRT2


def theta_from_gamma(gamma: float, context: float) -> float | None:
    """The base θ whose Padé prediction at T equals γ: θ = T(1+γ)/(√2(1−γ)); ``None`` outside (−1, 1).

    >>> round(theta_from_gamma(gamma_pade(10000.0, 2048), 2048), 6)
    10000.0
    """
    _check(1.0, context)
    if not (math.isfinite(gamma) and -1.0 < gamma < 1.0):
        return None
    return context * (1.0 + gamma) / (_SQRT2 * (1.0 - gamma))


def theta_eff_obs(gamma: float, context: float) -> float | None:
    """θ_eff^obs = √2·T/(1 − γ_obs) = θ_from_gamma + T/√2; ``None`` for γ_obs ≥ 1 (no finite θ).

    >>> round(theta_eff_obs(gamma_pade(10000.0, 2048), 2048), 6) == round(theta_eff_pade(10000.0, 2048), 6)
    True
    """
    _check(1.0, context)
    if not (math.isfinite(gamma) and gamma < 1.0):
        return None
    return _SQRT2 * context / (1.0 - gamma)


def eta(gamma: float, theta: float | None, context: float) -> float | None:
    """η = θ_eff^obs/θ_eff^Padé = (1 − γ_Padé)/(1 − γ_obs); ``None`` for γ_obs ≥ 1.

    >>> round(eta(gamma_pade(10000.0, 1024), 10000.0, 1024), 12)
    1.0
    """
    obs = theta_eff_obs(gamma, context)
    return None if obs is None else obs / theta_eff_pade(theta, context)


def regime(eta_value: float | None, gamma: float, *, context: float | None = None,
           sliding_window: int | None = None) -> str:
    """Regime label from η (heuristic thresholds): Normal, Compressed, Over-Padé, SWA or "Fraud".

    - ``'SWA'``: the layer has a sliding window shorter than the context — it cannot look further,
      so γ is set by the window, not by RoPE.
    - ``'Compressed'``: η < 0.5 — much flatter than the geometry predicts (γ_obs ≪ γ_Padé).
    - ``'Normal'``: 0.5 ≤ η ≤ 2.
    - ``'Over-Padé'``: 2 < η ≤ 10 — much more local than predicted.
    - ``'Fraud'``: η > 10, or γ_obs ≥ 1 without a sliding window — the evaluated context is not really
      used (the book writes this label in quotes).
    - ``'undetermined'``: γ is not finite.

    >>> regime(1.2, 0.8), regime(None, 1.3), regime(None, 1.3, context=8192, sliding_window=4096)
    ('Normal', 'Fraud', 'SWA')
    """
    if not math.isfinite(gamma):
        return "undetermined"
    if sliding_window is not None and context is not None and sliding_window < context:
        return "SWA"
    if eta_value is None or eta_value > ETA_FRAUD:
        return "Fraud"
    if eta_value > ETA_OVER_PADE:
        return "Over-Padé"
    if eta_value < ETA_COMPRESSED:
        return "Compressed"
    return "Normal"


def relative_error(gamma_obs: float, gamma_predicted: float) -> float | None:
    """(γ_obs − γ_Padé)/|γ_Padé| (dimensionless, signed); ``None`` when γ_Padé = 0 (θ = T/√2).

    >>> relative_error(0.6, 0.5)  # doctest: +ELLIPSIS
    0.19999...
    """
    if gamma_predicted == 0.0 or not math.isfinite(gamma_obs):
        return None
    return (gamma_obs - gamma_predicted) / abs(gamma_predicted)


def l_niah(theta: float | None, gamma: float, ntk_alpha: float = 1.0) -> float | None:
    """L_NIAH ≈ 2·α·d_horizon (tokens): needle-in-a-haystack reach under NTK factor α (a heuristic).

    >>> round(l_niah(10000.0, gamma_pade(10000.0, 1000), ntk_alpha=4.0))
    8000
    """
    if not ntk_alpha > 0:
        raise TheoryError(f"the NTK factor α must be positive (got {ntk_alpha})")
    horizon = d_horizon(theta, gamma)
    return None if horizon is None else 2.0 * ntk_alpha * horizon
