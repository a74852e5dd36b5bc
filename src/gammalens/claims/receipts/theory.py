"""Receipts of the framework's formulas: symbolic algebra and brute-force sums against gammalens.theory."""

from __future__ import annotations

import math

from gammalens.theory.kv_window import d_f
from gammalens.theory.rope import inv_freq_default, n_active, t_cross, t_max
from gammalens.theory.thermo import thermo


def cv_erratum(n_direct: int = 10**6, n_large: int = 10**15) -> dict[str, float]:
    """C_V(γ = 1, N) against (ln N)²/12 and the once-published (ln N)²/4.

    Three computations: the continuum coefficient by sympy (p ∝ 1/x on [1, N] makes ln x uniform);
    the exact discrete C_V at ``n_direct`` by an explicit numpy sum; and :func:`gammalens.theory.thermo`
    at ``n_large``, where the ratio is closer to its limit 1 (it converges as O(1/ln N)).

    Returns
    -------
    dict
        ``continuum_coefficient`` (C_V/(ln N)², exactly 1/12), ``ratio_direct`` and ``ratio_large``
        (12·C_V/(ln N)² at the two N: near 1, never near the 3 that /4 would need) and
        ``direct_vs_module`` (relative gap between the explicit sum and the module at ``n_direct``).
    """
    import numpy as np
    import sympy as sp


    x, n = sp.symbols("x N", positive=True)
    z = sp.integrate(1 / x, (x, 1, n))
    mean = sp.integrate(sp.log(x) / x, (x, 1, n)) / z
    second = sp.integrate(sp.log(x) ** 2 / x, (x, 1, n)) / z
    coefficient = sp.simplify((second - mean**2) / sp.log(n) ** 2)

    d = np.arange(1, n_direct + 1, dtype=np.float64)
    p = 1.0 / d
    p /= p.sum()
    ln = np.log(d)
    cv_direct = float(p @ ln**2 - (p @ ln) ** 2)                  # γ² = 1
    cv_module = thermo(1.0, n_direct).heat_capacity
    return {"continuum_coefficient": float(coefficient),
            "ratio_direct": 12 * cv_direct / math.log(n_direct) ** 2,
            "ratio_large": 12 * thermo(1.0, n_large).heat_capacity / math.log(n_large) ** 2,
            "direct_vs_module": abs(cv_direct - cv_module) / cv_direct}


def fisher_is_cv_over_gamma2(gammas: tuple[float, ...] = (0.5, 1.0, 1.5, 2.5), n: int = 1000) -> dict[str, float]:
    """Fisher information in γ = ∂² ln Z/∂γ² = Var(ln d) = C_V/γ², by numerical differentiation.

    ln Z(γ) = ln Σ_{d≤N} d^−γ is summed explicitly and differentiated twice by mpmath at 30 digits; the
    result is compared with gammalens's C_V/γ².

    Returns
    -------
    dict
        ``max_rel_error`` over ``gammas``.
    """
    import mpmath


    worst = 0.0
    with mpmath.workdps(30):
        for g in gammas:
            def log_z(s):
                return mpmath.log(mpmath.fsum(mpmath.power(d, -s) for d in range(1, n + 1)))
            fisher = float(mpmath.diff(log_z, g, 2))
            worst = max(worst, abs(thermo(g, n).heat_capacity / g**2 - fisher) / fisher)
    return {"max_rel_error": worst}


def d_f_law() -> dict[str, float]:
    """D_f is finite for γ > 1 and ∝ ε^(−1/(γ−1)); for γ ≤ 1 it grows with the context.

    Computed with the exact D_f of :func:`gammalens.theory.kv_window.d_f` (tested there against
    brute-force cumulative sums):

    Returns
    -------
    dict
        ``saturation_gamma_1_5``: D_f(γ = 1.5, T = 10⁷)/D_f(γ = 1.5, T = ∞) (near 1: finite window);
        ``growth_gamma_1``: D_f(γ = 1, T = 10⁷)/D_f(γ = 1, T = 10⁴) (≫ 1: grows with T);
        ``fraction_gamma_0_5``: D_f(γ = 0.5, T = 10⁷)/10⁷ (a fixed fraction of the context);
        ``eps_exponent_gamma_2``: slope of ln D_f against ln ε at γ = 2, T = ∞, ε from 10⁻³ to 10⁻⁵
        (−1/(γ−1) = −1).
    """

    slope = (math.log(d_f(2.0, None, 1e-5)) - math.log(d_f(2.0, None, 1e-3))) / (math.log(1e-5) - math.log(1e-3))
    return {"saturation_gamma_1_5": d_f(1.5, 10**7) / d_f(1.5, None),
            "growth_gamma_1": d_f(1.0, 10**7) / d_f(1.0, 10**4),
            "fraction_gamma_0_5": d_f(0.5, 10**7) / 10**7,
            "eps_exponent_gamma_2": slope}


def entropy_growth(n_low: int = 10**6, n_high: int = 10**12) -> dict[str, float]:
    """d(entropy)/d(ln N) of p ∝ d^−γ on 1..N, between ``n_low`` and ``n_high``, for γ = 0.5, 1, 1.5.

    Returns
    -------
    dict
        ``slope_gamma_0_5`` (→ 1: entropy ~ ln N), ``slope_gamma_1`` (→ ½: entropy ≈ ½ ln N + ln ln N)
        and ``slope_gamma_1_5`` (→ 0: entropy saturates in Phase B).
    """

    span = math.log(n_high) - math.log(n_low)
    out = {}
    for g, name in ((0.5, "0_5"), (1.0, "1"), (1.5, "1_5")):
        out[f"slope_gamma_{name}"] = (thermo(g, n_high).entropy - thermo(g, n_low).entropy) / span
    return out


def aliasing(theta: float = 1e4, rotary_dim: int = 128) -> dict[str, float]:
    """Active RoPE pairs (wavelength > d, counted exactly on the real frequencies) at T_cross and T_max.

    Returns
    -------
    dict
        ``active_fraction_at_t_cross``: active pairs at T_cross = 2π√θ over all pairs (½ by the closed
        form); ``active_at_t_max``: active pairs at T_max = 2πθ (0: every pair has aliased, up to the
        slowest pair whose wavelength 2π·θ^((d−2)/d) falls just short of it).
    """

    freqs = inv_freq_default(theta, rotary_dim)
    return {"active_fraction_at_t_cross": n_active(t_cross(theta), freqs) / (rotary_dim / 2),
            "active_at_t_max": float(n_active(t_max(theta), freqs))}
