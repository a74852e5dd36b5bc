"""Fractional lens: attention decay read as Lévy diffusion (glossary: Fractional (order); Ch. 23).

A jump law p(d) ∝ d^−γ = d^−(1+α) is the tail of a Lévy flight with stability index α = γ − 1, whose
generator is the fractional Laplacian (−Δ)^s of order s = α/2 = (γ − 1)/2. The reading is meaningful
only for α ∈ (0, 2) (γ ∈ (1, 3)): α ≤ 0 is not a normalisable jump law on an infinite line, and
α ≥ 2 has finite variance, i.e. ordinary (Gaussian) diffusion. Outside that window the numbers are
still returned but flagged ``valid=False``; the lens is a labelled analogy, not a derivation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ALPHA_RANGE = (0.0, 2.0)  # open interval where the Lévy reading holds


@dataclass(frozen=True)
class FractionalLens:
    """Lévy index and fractional order of a decay exponent.

    Attributes
    ----------
    alpha : float
        Lévy stability index α = γ − 1 (dimensionless).
    s : float
        Fractional order s = (γ − 1)/2 of the fractional Laplacian.
    valid : bool
        True when α ∈ (0, 2), where the Lévy reading applies.
    """

    alpha: float
    s: float
    valid: bool

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def fractional(gamma: float) -> FractionalLens:
    """α = γ − 1, s = (γ − 1)/2, valid iff 0 < α < 2.

    >>> fractional(1.6)
    FractionalLens(alpha=0.6000000000000001, s=0.30000000000000004, valid=True)
    >>> fractional(0.7).valid
    False
    """
    alpha = gamma - 1.0
    valid = math.isfinite(alpha) and ALPHA_RANGE[0] < alpha < ALPHA_RANGE[1]
    return FractionalLens(alpha=alpha, s=alpha / 2.0, valid=bool(valid))
