"""D_f, the KV window: how many nearest tokens hold 1−ε of the attention mass (glossary: D_f; Ch. 20).

For a decay law p(d) ∝ d^−γ over distances d = 1..T, D_f is the smallest D with

    Σ_{d≤D} d^−γ ≥ (1 − ε)·Σ_{d≤T} d^−γ.

The partial sums H_n^(γ) = Σ_{d≤n} d^−γ are evaluated in closed form, never by a loop over T:
Hurwitz zeta H_n = ζ(γ) − ζ(γ, n+1) for γ > 1, harmonic numbers H_n = ψ(n+1) + γ_E for γ = 1 and an
Euler–Maclaurin expansion (32 explicit terms, then four Bernoulli corrections; relative error < 1e-15)
for γ < 1 and for 1 < γ < 1.001, where ζ(γ) ≈ 1/(γ−1) would cancel. D_f is then a bisection over the
integers 1..T (≈ log2 T evaluations): microseconds at T = 10⁷.

Distance 0 (the query's own key) is always kept and never counted, in the theoretical and in the
empirical D_f alike; D_f is the largest distance the cache must keep.

The distance convention, used everywhere: a context of T tokens holds the distances d = 1..T−1 (the last
query sees the first key T−1 tokens back). :func:`d_f` takes the largest distance n itself;
:func:`d_f_at_context` takes T and sums over 1..T−1 — the card, the fits' theory columns and the reports
all use it. The book marks D_f as
provisional: it has not been benchmarked against other KV policies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from gammalens.errors import TheoryError

_HURWITZ_MIN_GAMMA = 1.0 + 1e-3  # below it ζ(γ) ~ 1/(γ−1) cancels against ζ(γ, n+1)
_EM_HEAD = 32  # explicit terms before the Euler–Maclaurin tail
_BERNOULLI = ((2, 1 / 6), (4, -1 / 30), (6, 1 / 42), (8, -1 / 30))  # (2k, B_2k)
_MAX_D = 2**53  # exact integers in float64


def check_eps(eps: float) -> float:
    """ε as a float, or a TheoryError when it is not strictly between 0 and 1."""
    if not (isinstance(eps, (int, float, np.floating)) and 0.0 < eps < 1.0):
        raise TheoryError(f"ε must lie strictly between 0 and 1 (got {eps}); e.g. 0.05 keeps 95% of the mass")
    return float(eps)


def _check_context(context: float) -> int:
    if not (context is not None and math.isfinite(context) and context >= 1):
        raise TheoryError(f"the context T must be at least 1 token (got {context})")
    return int(context)


def _rising(gamma: float, m: int) -> float:
    """Pochhammer (γ)_m = γ(γ+1)…(γ+m−1)."""
    return math.prod(gamma + j for j in range(m))


def _euler_maclaurin(gamma: float, a: int, b: np.ndarray) -> np.ndarray:
    """Σ_{d=a}^{b} d^−γ for b ≥ a ≥ 33 (elementwise over b), to double precision."""
    b = np.asarray(b, dtype=np.float64)
    log_ratio = np.log(b / a)
    x = (1.0 - gamma) * log_ratio
    expm1_over_x = np.where(x == 0.0, 1.0, np.expm1(x) / np.where(x == 0.0, 1.0, x))
    total = a ** (1.0 - gamma) * log_ratio * expm1_over_x  # ∫_a^b x^−γ dx, stable through γ = 1
    total += 0.5 * (a**-gamma + b**-gamma)
    for two_k, bernoulli in _BERNOULLI:
        m = two_k - 1  # f^(m)(x) = −(γ)_m x^(−γ−m) for odd m
        coef = bernoulli / math.factorial(two_k) * -_rising(gamma, m)
        total += coef * (b ** (-gamma - m) - a ** (-gamma - m))
    return total


def power_sum(gamma: float, n: int | np.ndarray) -> float | np.ndarray:
    """H_n^(γ) = Σ_{d=1}^{n} d^−γ, in closed form (no loop over n); 0 for n = 0.

    Parameters
    ----------
    gamma : float
        Exponent γ (any real).
    n : int or np.ndarray of int, shape (k,)
        Upper limits (≥ 0).

    Examples
    --------
    >>> round(float(power_sum(2.0, 10**6)), 9), round(float(power_sum(1.0, 4)), 12)
    (1.644933067, 2.083333333333)
    """
    n_arr = np.asarray(n, dtype=np.float64)
    # the first terms are summed explicitly: exact for small n, and no ζ(γ) − ζ(γ, n+1) cancellation there
    head = np.concatenate([[0.0], np.cumsum(np.arange(1, _EM_HEAD + 1, dtype=np.float64) ** -gamma)])
    small = n_arr <= _EM_HEAD
    big_n = np.where(small, _EM_HEAD + 1, n_arr)
    if gamma == 1.0:
        big = special.digamma(big_n + 1.0) + np.euler_gamma
    elif gamma >= _HURWITZ_MIN_GAMMA:
        big = special.zeta(gamma) - special.zeta(gamma, big_n + 1.0)
    else:
        big = head[_EM_HEAD] + _euler_maclaurin(gamma, _EM_HEAD + 1, big_n)
    out = np.where(small, head[np.where(small, n_arr, 0).astype(np.int64)], big)
    return float(out) if np.ndim(out) == 0 else out


def _smallest(covers, lo: int, hi: int) -> int:
    """Smallest integer D in [lo, hi] with covers(D), given covers(hi) and monotone covers."""
    while lo < hi:
        mid = (lo + hi) // 2
        if covers(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def d_f_at_context(gamma: float, context: int, eps: float = 0.05) -> int:
    """D_f (tokens) for a context of ``context`` = T tokens: distances 1..T−1 (the module's convention).

    >>> d_f_at_context(1.5, 4097, 0.05) == d_f(1.5, 4096, 0.05)
    True
    """
    if not (isinstance(context, int) and context >= 2):
        raise TheoryError(f"the context T must be an integer of at least 2 tokens (got {context})")
    return d_f(gamma, context - 1, eps)


def d_f(gamma: float, context: int | None, eps: float = 0.05) -> int:
    """Exact KV window D_f (tokens): smallest D with Σ_{d≤D} d^−γ ≥ (1−ε)·Σ_{d≤T} d^−γ.

    Parameters
    ----------
    gamma : float
        Decay exponent γ (any real; for γ ≤ 1 D_f grows with T).
    context : int or None
        n, the largest distance (tokens): n = T − 1 for a context of T tokens (see :func:`d_f_at_context`).
        ``None`` means n = ∞, defined for γ > 1 only.
    eps : float
        Fraction of the mass allowed outside the window, in (0, 1).

    Examples
    --------
    >>> d_f(1.5, 4096, 0.05), d_f(1.0, 10**7, 0.05), d_f(0.5, 10**7, 0.05)
    (156, 4339762, 9025220)
    """
    eps = check_eps(eps)
    if not math.isfinite(gamma):
        raise TheoryError(f"γ must be a finite number to compute D_f (got {gamma})")
    if context is None:
        if gamma <= 1.0:
            raise TheoryError(f"D_f at infinite context exists only for γ > 1 (got γ={gamma}); pass a context T")
        budget = eps * float(special.zeta(gamma))

        def covers(d: int) -> bool:
            return float(special.zeta(gamma, d + 1.0)) <= budget

        hi = 1
        while not covers(hi):
            hi *= 2
            if hi > _MAX_D:
                raise TheoryError(f"D_f exceeds 2^53 tokens for γ={gamma}, ε={eps}; use d_f_asymptotic")
        return _smallest(covers, max(1, hi // 2), hi)
    n = _check_context(context)
    if gamma >= _HURWITZ_MIN_GAMMA:
        # compare tails, ζ(γ, D+1) − ζ(γ, T+1) ≤ ε·H_T, which do not cancel
        zeta_end = float(special.zeta(gamma, n + 1.0))
        budget = eps * float(power_sum(gamma, n))

        def covers(d: int) -> bool:
            return float(special.zeta(gamma, d + 1.0)) - zeta_end <= budget
    else:
        target = (1.0 - eps) * float(power_sum(gamma, n))

        def covers(d: int) -> bool:
            return float(power_sum(gamma, d)) >= target

    return _smallest(covers, 1, n)


def d_f_asymptotic(gamma: float, eps: float = 0.05) -> float:
    """Leading-order D_f at T = ∞ for γ > 1: ((γ−1)·ε·ζ(γ))^(−1/(γ−1)) ∝ ε^(−1/(γ−1)) (tokens).

    From Σ_{d>D} d^−γ ≈ D^(1−γ)/(γ−1) = ε·ζ(γ). The next Euler–Maclaurin term (+d^−γ/2) makes the
    exact tail ≈ (D+½)^(1−γ)/(γ−1): this form overestimates the continuous root by about half a token
    plus O(1/D) relative, and the exact integer :func:`d_f` at T = ∞ rounds that root up. Over
    γ ∈ [1.1, 4], ε ∈ [0.01, 0.2] the difference lies in [−0.50, +0.57] tokens (tested: |error| < 1).
    At finite T the exact D_f is smaller, much smaller when γ is close to 1.

    >>> round(d_f_asymptotic(2.0, 0.05), 2), d_f(2.0, None, 0.05)
    (12.16, 12)
    """
    eps = check_eps(eps)
    if not (math.isfinite(gamma) and gamma > 1.0):
        raise TheoryError(f"the asymptotic D_f needs γ > 1 (got {gamma}); for γ ≤ 1 use d_f at a context T")
    return ((gamma - 1.0) * eps * float(special.zeta(gamma))) ** (-1.0 / (gamma - 1.0))


def d_f_empirical(mass: np.ndarray, eps: float = 0.05) -> int:
    """Empirical D_f of a measured profile: smallest D with Σ_{1≤d≤D} m_d ≥ (1−ε)·Σ_{d≥1} m_d.

    Parameters
    ----------
    mass : np.ndarray, shape (D,)
        Sink-excluded attention mass by distance d = 0..D−1 (any positive scale; A(d) of a query that
        sees all distances). Entry 0 (the query's own key) is always kept and is not counted.
    eps : float
        Fraction of the mass allowed outside the window, in (0, 1).

    Returns
    -------
    int
        D_f in tokens (largest distance kept); 0 when no mass lies at d ≥ 1.

    Examples
    --------
    >>> d_f_empirical(np.array([5.0, 0.5, 0.3, 0.15, 0.05]), eps=0.1)
    3
    """
    eps = check_eps(eps)
    m = np.asarray(mass, dtype=np.float64)
    if m.ndim != 1 or not np.all(np.isfinite(m)):
        raise TheoryError("the mass profile must be a finite 1-D array indexed by distance d = 0..D−1")
    tail = m[1:]
    scale = float(np.abs(tail).sum())
    if np.any(tail < -1e-12 * scale):
        raise TheoryError("the mass profile has negative entries; pass attention mass (≥ 0) by distance")
    cum = np.cumsum(np.clip(tail, 0.0, None))  # cum[D−1] = Σ_{1≤d≤D}
    if cum.size == 0 or cum[-1] <= 0.0:
        return 0
    return int(np.searchsorted(cum, (1.0 - eps) * cum[-1], side="left")) + 1


@dataclass(frozen=True)
class KVBudget:
    """KV-cache bytes of a per-head token budget against the full cache.

    Attributes
    ----------
    budget_bytes : int
        Bytes the budgeted cache holds (keys and values, all layers, KV heads and sequences).
    full_bytes : int
        Bytes of the full cache at the same context (each layer capped at its own limit).
    tokens : np.ndarray, shape (layers, kv_heads)
        Tokens kept per KV head: the largest budget among the query heads that share it.
    """

    budget_bytes: int
    full_bytes: int
    tokens: np.ndarray

    @property
    def ratio(self) -> float:
        """budget_bytes / full_bytes (dimensionless)."""
        return self.budget_bytes / self.full_bytes if self.full_bytes else 0.0


def kv_budget(window: np.ndarray, *, sink: int | np.ndarray, n_kv_heads: int, head_dim: int,
              context: int, dtype_bytes: float, batch: int = 1,
              layer_limit: Sequence[int] | None = None) -> KVBudget:
    """KV memory of a per-head budget (sink + window tokens) per KV-head group, against the full cache.

    Parameters
    ----------
    window : np.ndarray, shape (layers, q_heads)
        Local window per query head (tokens), e.g. its D_f.
    sink : int or np.ndarray, shape (layers, q_heads)
        Sink tokens kept per head.
    n_kv_heads : int
        KV heads per layer; ``q_heads`` must be a multiple (GQA groups of consecutive query heads).
    head_dim, context, dtype_bytes, batch
        Dims per head, context T (tokens), bytes per cached element, sequences held.
    layer_limit : sequence of int, optional
        Tokens each layer caches at most (a sliding window); default T for every layer.

    Examples
    --------
    >>> b = kv_budget(np.full((2, 4), 63), sink=1, n_kv_heads=2, head_dim=8, context=1024, dtype_bytes=2)
    >>> b.budget_bytes, b.full_bytes, b.ratio
    (8192, 131072, 0.0625)
    """
    window = np.asarray(window)
    if window.ndim != 2 or window.shape[1] % n_kv_heads:
        raise TheoryError(f"window must have shape (layers, q_heads) with q_heads a multiple of n_kv_heads="
                          f"{n_kv_heads} (got {window.shape})")
    context = _check_context(context)
    n_layers, q_heads = window.shape
    limit = np.full(n_layers, context) if layer_limit is None else np.minimum(np.asarray(layer_limit), context)
    per_head = np.minimum(np.broadcast_to(sink, window.shape) + window, limit[:, None])  # (layers, q_heads)
    tokens = per_head.reshape(n_layers, n_kv_heads, q_heads // n_kv_heads).max(axis=2)  # (layers, kv_heads)
    per_token = 2 * head_dim * dtype_bytes * batch  # keys + values of one KV head, one token
    return KVBudget(budget_bytes=round(per_token * tokens.sum()),
                    full_bytes=round(per_token * n_kv_heads * limit.sum()), tokens=tokens)
