"""Attention mass lost outside a window, per head, from a run's exact profiles (glossary: D_f, sink).

A KV head that keeps the ``s`` sink tokens and the last ``w`` tokens (distances 0..w−1, the query's own key
included) loses, for a query at the end of a context of T tokens, the non-sink mass at distances w..n−1,
n = T − s. With a(d) the measured null-corrected mean attention at distance d (``mass_cs / queries_cs``,
a query that sees every distance up to the run's ``cs_horizon`` H) the lost fraction of non-sink mass is

    tail(w) = Σ_{w≤d<n} a(d) / Σ_{0≤d<n} a(d),

and the expected attention mass lost per query is ``lost(w) = (1 − sink_mass)·tail(w)``. Beyond H the
profile is extended with the head's fitted power law a(d) = c·d^−γ, c anchored on the measured upper half
[H/2, H] of the profile; its sums are closed-form Hurwitz / Euler–Maclaurin partial sums
(:func:`gammalens.theory.kv_window.power_sum`), never a loop over T.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gammalens.errors import GammalensError
from gammalens.probe.profile import read_array
from gammalens.theory.kv_window import power_sum


class KVError(GammalensError):
    """A KV plan, cache or press that cannot be built from what was given."""


@dataclass(frozen=True)
class HeadTails:
    """Measured non-sink attention profiles of every query head, with their fitted extension.

    Attributes
    ----------
    profile : np.ndarray, shape (L, Hq, H+1)
        Mean non-sink attention at distance d = 0..H per query (dimensionless).
    gamma : np.ndarray, shape (L, Hq)
        Fitted decay exponent of each head (``fits.csv``), used beyond H.
    anchor : np.ndarray, shape (L, Hq)
        c of the extension a(d) = c·d^−γ for d > H.
    sink_mass : np.ndarray, shape (L, Hq)
        Mean attention mass on the sink keys per query (0–1).
    sink_tokens : int
        Sink keys per sequence in the run (kept by every plan).
    """

    profile: np.ndarray
    gamma: np.ndarray
    anchor: np.ndarray
    sink_mass: np.ndarray
    sink_tokens: int

    @property
    def horizon(self) -> int:
        """H, the largest measured distance (tokens)."""
        return self.profile.shape[-1] - 1

    def cumulative(self, context: int) -> np.ndarray:
        """Σ_{0≤d<w} a(d) for w = 0..n, n = context − sink_tokens; shape (L, Hq, n+1)."""
        n = context - self.sink_tokens
        if n < 1:
            raise KVError(f"the context ({context}) must exceed the {self.sink_tokens} sink tokens")
        n_layers, n_heads, _ = self.profile.shape
        measured = np.concatenate([np.zeros((n_layers, n_heads, 1)), np.cumsum(self.profile, -1)], -1)
        if n <= self.horizon + 1:
            return measured[..., : n + 1]
        out = np.empty((n_layers, n_heads, n + 1))
        out[..., : self.horizon + 2] = measured
        last = np.arange(self.horizon + 1, n)  # the largest distance d = w − 1 inside windows w = H+2..n
        for layer in range(n_layers):
            for head in range(n_heads):
                g = float(self.gamma[layer, head])
                extra = power_sum(g, last) - power_sum(g, self.horizon)  # Σ_{H<d≤w−1} d^−γ
                out[layer, head, self.horizon + 2:] = measured[layer, head, -1] + self.anchor[layer, head] * extra
        return out

    def tail(self, context: int) -> np.ndarray:
        """Fraction of non-sink mass outside windows w = 0..n (tail[..., 0] = 1), shape (L, Hq, n+1)."""
        cum = self.cumulative(context)
        total = cum[..., -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 1.0 - cum / np.where(total > 0, total, 1.0), 0.0).clip(0.0, 1.0)

    def lost(self, context: int) -> np.ndarray:
        """Expected attention mass lost per query for windows w = 0..n, shape (L, Hq, n+1) (0–1)."""
        return (1.0 - np.nan_to_num(self.sink_mass, nan=0.0))[..., None] * self.tail(context)


def head_tails(profile_path: Path, gamma: np.ndarray, sink_tokens: int) -> HeadTails:
    """Build :class:`HeadTails` from a run's ``profile.npz`` and its per-head γ.

    Parameters
    ----------
    profile_path : Path
        The run's ``profile.npz`` (reads ``mass_cs``, ``queries_cs``, ``sink_mass``).
    gamma : np.ndarray, shape (L, Hq)
        Per-head γ from ``fits.csv``; NaN entries fall back to the layer's median γ, then to 1.
    sink_tokens : int
        Sink keys per document in the run (its ``settings.sink_tokens``).
    """
    try:
        with np.load(profile_path) as z:  # a compact profile is read per distance (bin means beyond its exact range)
            mass_cs, queries_cs, sink_mass = (read_array(z, k).astype(np.float64) for k in ("mass_cs", "queries_cs", "sink_mass"))
    except (OSError, KeyError, ValueError) as err:
        raise KVError(f"{profile_path} is not a readable gammalens profile ({err})") from None
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = mass_cs / queries_cs[:, None, None]
    mean = np.nan_to_num(mean, nan=0.0, posinf=0.0).clip(0.0, None)  # (L, Hq, H+1)
    if gamma.shape != mean.shape[:2]:
        raise KVError(f"fits.csv has γ for {gamma.shape} (layers, heads) but profile.npz for {mean.shape[:2]}")
    gamma = gamma.astype(np.float64).copy()
    for layer in range(gamma.shape[0]):
        row = gamma[layer]
        fallback = np.nanmedian(row) if np.isfinite(row).any() else 1.0
        row[~np.isfinite(row)] = fallback
    horizon = mean.shape[-1] - 1
    lo = max(1, horizon // 2)
    d = np.arange(lo, horizon + 1, dtype=np.float64)
    law = (d[None, None, :] ** -gamma[..., None]).sum(-1)  # (L, Hq)
    anchor = mean[..., lo:].sum(-1) / law
    return HeadTails(profile=mean, gamma=gamma, anchor=anchor, sink_mass=sink_mass, sink_tokens=int(sink_tokens))
