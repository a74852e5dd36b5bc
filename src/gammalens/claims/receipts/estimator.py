"""Receipts about the measurement method: what each estimator reads on perfectly uniform attention.

Uniform attention over the visible keys has no decay at all, so an honest estimator must return γ = 0
for it. Three estimators are run on it here: the book's fixed-key estimator (the companion script),
the naive causal mean, and gammalens's common-support estimator (README, "Method").
"""

from __future__ import annotations

from fractions import Fraction

from gammalens.fit.power_law import fit_power_law
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator

BOOK_DISTANCES = (10, 20, 30, 50, 100, 200, 500, 1000, 2000)  # the companion script's d grid (tokens)


def fixed_key_uniform(distances: tuple[int, ...] = BOOK_DISTANCES, key: int = 49, digits: int = 40) -> dict[str, float]:
    """γ that the book's fixed-key estimator reads on uniform causal attention.

    The estimator puts the key at position ``key`` and the query ``d`` tokens later, in a window of
    d + key + 1 tokens, and fits ln A(d) on ln d by ordinary least squares over ``distances``. The
    query at position key + d sees key + d + 1 keys; with uniform attention each gets 1/(d + key + 1)
    (1/(d + 50) for the book's key at 49). Each A(d) is taken from an explicit softmax of equal logits
    over the visible row and checked against that exact fraction; the fit is done in ``digits``-digit
    arithmetic (mpmath).

    Returns
    -------
    dict
        ``gamma`` (the fitted γ), ``r2`` (OLS R² in log space), ``local_slope_at_max`` (the exact local
        log-slope d/(d + key + 1) at the largest d: the estimate tends to 1 as d grows) and
        ``softmax_max_rel_error`` (largest |softmax − exact fraction|/exact over the grid).

    Examples
    --------
    >>> round(fixed_key_uniform()["gamma"], 4)
    0.6865
    """
    import mpmath
    import numpy as np

    worst = 0.0
    exact: list[Fraction] = []
    for d in distances:
        width = d + key + 1                          # window of d + 50 tokens for key 49
        q = key + d                                  # the query, d tokens after the key
        logits = np.zeros(width)                     # uniform: every visible logit equal
        visible = np.arange(width) <= q              # causal mask of row q
        p = np.where(visible, np.exp(logits - logits.max()), 0.0)
        p /= p.sum()
        a = Fraction(1, width)
        worst = max(worst, abs(p[key] - float(a)) / float(a))
        exact.append(a)
    with mpmath.workdps(digits):
        x = [mpmath.log(d) for d in distances]
        y = [mpmath.log(mpmath.mpf(a.numerator) / a.denominator) for a in exact]
        n = len(x)
        mx, my = sum(x) / n, sum(y) / n
        sxx = sum((xi - mx) ** 2 for xi in x)
        slope = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y, strict=True)) / sxx
        resid = sum((yi - my - slope * (xi - mx)) ** 2 for xi, yi in zip(x, y, strict=True))
        r2 = 1 - resid / sum((yi - my) ** 2 for yi in y)
        return {"gamma": float(-slope), "r2": float(r2),
                "local_slope_at_max": float(Fraction(distances[-1], distances[-1] + key + 1)),
                "softmax_max_rel_error": float(worst)}


def _probe_profiles(gamma: float, context: int, horizon: int, docs: int = 2, chunk: int = 64):
    """Causal attention P(q, k) ∝ max(q − k, 1)^−γ over the visible non-sink keys (30% on the one sink key),
    summed by the probe's own accumulator. γ = 0 is uniform attention.

    Returns (naive, common) over d = 1..horizon: the naive mean mass/pairs and the common-support mass.
    """
    import torch


    pos = torch.arange(context)
    vis = pos[:, None] >= pos[None, :]                                     # (q, k) causal
    dist = (pos[:, None] - pos[None, :]).clamp(min=1).double()
    w = torch.where(vis, dist ** (-gamma), 0.0)
    w[:, 0] = 0
    p = 0.7 * w / w.sum(-1, keepdim=True).clamp(min=1e-300)
    p[:, 0] = 0.3
    p = p.float()[None, None].expand(docs, 1, context, context).contiguous()  # (docs, heads=1, q, k)
    acc = ProfileAccumulator(1, 1, docs, context - 1, horizon, 1)
    layout = BatchLayout.full(docs, context)
    for q0 in range(0, context, chunk):
        q1 = min(context, q0 + chunk)
        acc.add(0, p[:, :, q0:q1, :q1], vis[q0:q1, :q1][None, None].expand(docs, 1, -1, -1), q0, layout,
                bidirectional=False)
    d = slice(1, horizon + 1)
    naive = (acc.mass[0, 0, d] / acc.pairs[0, d]).numpy()
    common = acc.doc_mass_cs.sum(0)[0, 0, d].numpy()
    return naive, common


def uniform_causal(context: int = 256, horizon: int = 127) -> dict[str, float]:
    """γ of perfectly uniform causal attention under the naive mean and under gammalens's estimator.

    Both profiles come from the probe's exact accumulator (one sink key kept out, as in ``measure``),
    fitted with gammalens's weighted log-log least squares on d = 1..``horizon``.

    Returns
    -------
    dict
        ``naive_gamma`` (the mean over every query that reaches d: decays because early queries see
        few keys) and ``corrected_gamma`` (the common-support estimator: 0 up to rounding).
    """
    import numpy as np


    naive, common = _probe_profiles(0.0, context, horizon)
    d = np.arange(1, horizon + 1)
    return {"naive_gamma": float(-fit_power_law(d, naive).slope),
            "corrected_gamma": float(-fit_power_law(d, common).slope)}


def power_laws_recovered(gammas: tuple[float, ...] = (0.0, 0.3, 0.7, 1.0, 1.5, 2.0), context: int = 256,
                         horizon: int = 127) -> dict[str, float]:
    """Largest |γ̂ − γ| of gammalens's estimator over causal attention built as d^−γ, and of the naive mean.

    Returns
    -------
    dict
        ``max_abs_error`` (common-support estimator) and ``naive_max_abs_error`` (naive mean), over ``gammas``.
    """
    import numpy as np


    d = np.arange(1, horizon + 1)
    err, naive_err = 0.0, 0.0
    for g in gammas:
        naive, common = _probe_profiles(g, context, horizon)
        err = max(err, abs(float(-fit_power_law(d, common).slope) - g))
        naive_err = max(naive_err, abs(float(-fit_power_law(d, naive).slope) - g))
    return {"max_abs_error": err, "naive_max_abs_error": naive_err}
