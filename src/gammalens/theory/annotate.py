"""Theory columns attached to every measured γ (per head, layer and model) in ``fits.csv``.

One function, :func:`annotate`, turns a measured γ (with its CI), the evaluated context and the model's
RoPE base into the predicted and derived quantities of the framework. Column names are stable; their
units are in :data:`ANNOTATION_UNITS`. Distances in a window of ``context`` tokens run 1..context−1,
so the theoretical D_f and the thermodynamic lens use N = context − 1; γ_Padé uses T = context.
"""

from __future__ import annotations

import math

import numpy as np

from gammalens.errors import TheoryError
from gammalens.theory import fractional, kv_window, pade, phases, thermo

ANNOTATION_UNITS: dict[str, str] = {
    "phase": "label: 'A' (γ<1), 'B' (γ>1), 'boundary' (CI contains 1), 'undetermined'",
    "chi": "dimensionless, χ = 1/|γ−1| (inf at γ = 1)",
    "D_f": "tokens, theoretical KV window at ε over distances 1..context−1",
    "D_f_empirical": "tokens, smallest window holding 1−ε of the measured non-sink mass at d ≥ 1",
    "levy_alpha": "dimensionless, Lévy index α = γ−1",
    "fractional_s": "dimensionless, fractional order s = (γ−1)/2",
    "fractional_valid": "bool, α ∈ (0, 2)",
    "C_V": "dimensionless, γ²·Var(ln d) for p(d) ∝ d^−γ on 1..context−1",
    "fisher_gamma": "nats², Var(ln d) = C_V/γ², Fisher information about γ per observed distance",
    "gamma_pade": "dimensionless, γ_Padé(θ, T = context); None without RoPE",
    "gamma_pade_rel_error": "dimensionless, (γ − γ_Padé)/|γ_Padé|; None without RoPE or when γ_Padé = 0",
    "d_horizon": "tokens, θ(1−γ)√2/(1+γ); None without RoPE or outside γ ∈ (−1, 1)",
    "theta_eff_obs": "dimensionless (a RoPE base), √2·T/(1−γ); None without RoPE or for γ ≥ 1",
    "eta": "dimensionless, θ_eff^obs/θ_eff^Padé; None without RoPE or for γ ≥ 1",
    "regime": "label: Normal, Compressed, Over-Padé, SWA, Fraud (heuristic thresholds); None without RoPE",
}
ANNOTATION_COLUMNS: tuple[str, ...] = tuple(ANNOTATION_UNITS)

Value = float | int | str | bool | None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def annotate(gamma: float, ci_low: float | None, ci_high: float | None, *, context: int,
             rope_theta: float | None, mass: np.ndarray | None, eps: float = 0.05,
             sliding_window: int | None = None) -> dict[str, Value]:
    """The framework's columns for one measured γ.

    Parameters
    ----------
    gamma : float
        Measured decay exponent (NaN allowed: the numeric columns are then ``None``).
    ci_low, ci_high : float or None
        Its confidence interval; decides the 'boundary' phase.
    context : int
        Tokens per measured window T (≥ 2).
    rope_theta : float or None
        The model's RoPE base θ; ``None`` for models without RoPE (Padé columns are ``None``).
    mass : np.ndarray, shape (D,), or None
        Sink-excluded attention mass by distance d = 0..D−1 of a query that sees every distance
        (the decay profile A(d), not a sum over causally masked queries); ``None`` skips D_f_empirical.
    eps : float
        Mass fraction allowed outside the KV window, in (0, 1).
    sliding_window : int, optional
        The layer's sliding window (tokens); when shorter than the context the regime is 'SWA'.

    Returns
    -------
    dict
        Keys :data:`ANNOTATION_COLUMNS`, in that order.

    Examples
    --------
    >>> row = annotate(0.62, 0.55, 0.70, context=4096, rope_theta=10000.0, mass=None)
    >>> row["phase"], row["D_f"], row["regime"], round(row["gamma_pade"], 3)
    ('A', 3595, 'Normal', 0.551)
    """
    if not (isinstance(context, (int, np.integer)) and context >= 2):
        raise TheoryError(f"the context T must be an integer of at least 2 tokens (got {context})")
    eps = kv_window.check_eps(eps)
    n = int(context) - 1
    finite = gamma is not None and math.isfinite(gamma)
    lens = fractional.fractional(gamma) if finite else None
    state = thermo.thermo(gamma, n) if finite else None
    row: dict[str, Value] = {
        "phase": phases.phase(gamma if finite else math.nan, ci_low, ci_high),
        "chi": phases.susceptibility(gamma) if finite else None,
        "D_f": kv_window.d_f_at_context(gamma, int(context), eps) if finite else None,
        "D_f_empirical": None if mass is None else kv_window.d_f_empirical(mass, eps),
        "levy_alpha": lens.alpha if lens else None,
        "fractional_s": lens.s if lens else None,
        "fractional_valid": lens.valid if lens else None,
        "C_V": state.heat_capacity if state else None,
        "fisher_gamma": state.fisher_gamma if state else None,
    }
    pade_cols: dict[str, Value] = dict.fromkeys(("gamma_pade", "gamma_pade_rel_error", "d_horizon",
                                            "theta_eff_obs", "eta", "regime"))
    if rope_theta is not None:
        predicted = pade.gamma_pade(rope_theta, context)
        pade_cols["gamma_pade"] = predicted
        if finite:
            eta = pade.eta(gamma, rope_theta, context)
            pade_cols |= {
                "gamma_pade_rel_error": pade.relative_error(gamma, predicted),
                "d_horizon": pade.d_horizon(rope_theta, gamma),
                "theta_eff_obs": pade.theta_eff_obs(gamma, context),
                "eta": eta,
                "regime": pade.regime(eta, gamma, context=context, sliding_window=sliding_window),
            }
        else:
            pade_cols["regime"] = "undetermined"
    row |= pade_cols
    return row
