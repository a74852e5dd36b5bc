"""Thermodynamic lens: attention decay read as a Gibbs distribution (glossary: Z, Hagedorn; Ch. 21, 22).

p(d) = d^−γ·e^−λd / Z on d = 1..N: "energy" ln d, inverse temperature γ, optional cutoff λ ≥ 0.

    Z       = Σ_{d≤N} d^−γ e^−λd          (= Li_γ(e^−λ) for N → ∞)
    ⟨ln d⟩  = −∂ ln Z/∂γ                   (nats)
    S       = −Σ p ln p = γ⟨ln d⟩ + λ⟨d⟩ + ln Z   (nats)
    C_V     = γ²·Var(ln d)                 (dimensionless)
    I(γ)    = Var(ln d) = C_V/γ²           (Fisher information of one distance about γ, λ held fixed)

Erratum (receipt: ``docs/theory.md``, ``tests/test_theory_thermo.py``): at the Hagedorn point γ = 1 and
λ = 0, ln d is uniform on [0, ln N] in the continuum limit, so C_V(γ=1, N) → (ln N)²/12; it was once
published as (ln N)²/4.

Sums up to d = 2^12 are explicit; beyond, an Euler–Maclaurin tail (integral by quadrature in u = ln d,
or the incomplete gamma function when N = ∞ and λ = 0, plus the first derivative correction) keeps
N up to 10^15 and N = ∞ exact to ~1e-12 relative.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import integrate, special

from gammalens.errors import TheoryError

_HEAD = 2**12  # explicit terms; the rest is an Euler–Maclaurin tail
ERRATUM_CV = "C_V(γ=1, N) → (ln N)²/12 as N → ∞ (once published as (ln N)²/4)"


@lru_cache(maxsize=8)
def _log_d(m: int) -> np.ndarray:
    out = np.log(np.arange(1, m + 1, dtype=np.float64))  # (m,)
    out.flags.writeable = False
    return out


def _tail(s: float, k: int, m: int, n: int | None, lam: float) -> float:
    """Σ_{d=m+1}^{n} (ln d)^k d^−s e^−λd by Euler–Maclaurin (m ≥ 2^12: the g''' term, ~g(m)·(γ+λm)³/(720·m³), is below 1e-13 of Z)."""
    def g(x: float) -> float:
        return math.log(x) ** k * x**-s * math.exp(-lam * x)

    def g_prime(x: float) -> float:
        return g(x) * ((k / (x * math.log(x)) if k else 0.0) - s / x - lam)

    a = math.log(m)
    if n is None and lam == 0.0:
        c = s - 1.0  # ∫_a^∞ u^k e^{−cu} du = Γ(k+1)·Q(k+1, c·a)/c^{k+1}
        integral = special.gamma(k + 1) * special.gammaincc(k + 1, c * a) / c ** (k + 1)
        return integral - g(m) / 2 - g_prime(m) / 12
    upper = math.log(n) if n is not None else max(a, math.log(800.0 / lam))
    integral, _ = integrate.quad(lambda u: u**k * math.exp((1.0 - s) * u - lam * math.exp(u)), a, upper,
                                 epsabs=0.0, epsrel=1e-13, limit=200)
    end = (g(n) / 2 + g_prime(n) / 12) if n is not None else 0.0
    return integral + end - g(m) / 2 - g_prime(m) / 12


def _sum(s: float, k: int, n: int | None, lam: float) -> float:
    """Σ_{d=1}^{n} (ln d)^k d^−s e^−λd (n = None: to infinity)."""
    m = _HEAD if n is None else min(n, _HEAD)
    log_d = _log_d(m)
    total = float(np.sum(log_d**k * np.exp(-s * log_d - lam * np.exp(log_d))))
    if n is None or n > m:
        total += _tail(s, k, m, n, lam)
    return total


@dataclass(frozen=True)
class ThermoState:
    """The thermodynamic lens of p(d) ∝ d^−γ e^−λd on d = 1..N.

    Attributes
    ----------
    gamma, n, lam
        Inverse temperature γ, largest distance N (``None`` = ∞), cutoff λ (per token).
    z : float
        Partition function Z.
    mean_log_d : float
        ⟨ln d⟩ (nats).
    var_log_d : float
        Var(ln d) (nats²) — the Fisher information in γ.
    entropy : float
        Shannon entropy of p (nats).
    heat_capacity : float
        C_V = γ²·Var(ln d).
    """

    gamma: float
    n: int | None
    lam: float
    z: float
    mean_log_d: float
    var_log_d: float
    entropy: float
    heat_capacity: float

    @property
    def fisher_gamma(self) -> float:
        """Fisher information about γ of one distance, Var(ln d) = C_V/γ² (per observation)."""
        return self.var_log_d

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self) | {"fisher_gamma": self.fisher_gamma}


def thermo(gamma: float, n: int | None = None, lam: float = 0.0) -> ThermoState:
    """Z, ⟨ln d⟩, entropy, C_V and Fisher information of p(d) ∝ d^−γ e^−λd on d = 1..N.

    Parameters
    ----------
    gamma : float
        Decay exponent γ (inverse temperature).
    n : int or None
        Largest distance N (tokens, ≥ 1); ``None`` for N = ∞ (needs γ > 1 or λ > 0).
    lam : float
        Exponential cutoff λ ≥ 0 (per token).

    Examples
    --------
    >>> s = thermo(1.0, 10**6)
    >>> round(s.heat_capacity / math.log(10**6) ** 2, 4)  # → 1/12 ≈ 0.0833, slowly (O(1/ln N))
    0.09
    """
    if not math.isfinite(gamma):
        raise TheoryError(f"γ must be a finite number (got {gamma})")
    if not (math.isfinite(lam) and lam >= 0.0):
        raise TheoryError(f"the cutoff λ must be ≥ 0 (got {lam})")
    if n is not None:
        if not n >= 1:
            raise TheoryError(f"N, the largest distance, must be at least 1 (got {n})")
        n = int(n)
    elif lam == 0.0 and gamma <= 1.0:
        raise TheoryError(f"Z diverges for N = ∞ with γ = {gamma} ≤ 1 and no cutoff; give N or λ > 0")
    z = float(_sum(gamma, 0, n, lam))
    mean = float(_sum(gamma, 1, n, lam)) / z
    var = max(float(_sum(gamma, 2, n, lam)) / z - mean**2, 0.0)
    mean_d = float(_sum(gamma - 1.0, 0, n, lam)) / z if lam > 0.0 else 0.0
    entropy = gamma * mean + lam * mean_d + math.log(z)
    return ThermoState(gamma=float(gamma), n=n, lam=float(lam), z=z, mean_log_d=mean, var_log_d=var,
                       entropy=entropy, heat_capacity=gamma**2 * var)


def partition_function(gamma: float, n: int | None = None, lam: float = 0.0) -> float:
    """Z = Σ_{d≤N} d^−γ e^−λd; Li_γ(e^−λ) for N = ∞.

    >>> round(partition_function(2.0), 12)  # ζ(2) = π²/6
    1.644934066848
    """
    return thermo(gamma, n, lam).z


def heat_capacity(gamma: float, n: int | None = None, lam: float = 0.0) -> float:
    """C_V = γ²·Var(ln d) (dimensionless)."""
    return thermo(gamma, n, lam).heat_capacity


def fisher_information(gamma: float, n: int | None = None, lam: float = 0.0) -> float:
    """Fisher information about γ of one distance, Var(ln d) = C_V/γ² (nats²)."""
    return thermo(gamma, n, lam).var_log_d


def cv_hagedorn_limit(n: float) -> float:
    """Leading behaviour at the Hagedorn point, C_V(γ=1, N) ≈ (ln N)²/12 (the erratum: not /4).

    >>> round(cv_hagedorn_limit(math.e ** 6), 12)
    3.0
    """
    if not n >= 1:
        raise TheoryError(f"N must be at least 1 (got {n})")
    return math.log(n) ** 2 / 12.0
