"""The measured distance profiles of a run: exact sums, stored as ``profile.npz`` (see docs/run_format.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DistanceProfile:
    """Attention mass against query–key distance for every layer and head (L layers, H heads, N documents).

    Attributes
    ----------
    mass : np.ndarray
        (L, H, D) sink-excluded mass at distance d = |q − k| summed over every valid query.
    pairs : np.ndarray
        (L, D) number of visible non-sink (query, key) pairs at d; ``mass / pairs`` is the naive mean.
    doc_mass_cs : np.ndarray
        (N, L, H, cs_horizon+1) null-corrected common-support mass per document (see
        :mod:`gammalens.probe.accumulate`).
    doc_queries_cs : np.ndarray
        (N, L) query-sides behind ``doc_mass_cs``.
    doc_sink_sum : np.ndarray
        (N, L, H) summed attention mass on the sink keys.
    doc_sink_queries : np.ndarray
        (N, L) queries behind ``doc_sink_sum``.
    layer_window : np.ndarray
        (L,) sliding-window size of each layer, 0 for full attention.
    cs_horizon : int
        Largest distance of the common support (tokens).
    sink_tokens : int
        Number of sink keys per document.
    """

    mass: np.ndarray
    pairs: np.ndarray
    doc_mass_cs: np.ndarray
    doc_queries_cs: np.ndarray
    doc_sink_sum: np.ndarray
    doc_sink_queries: np.ndarray
    layer_window: np.ndarray
    cs_horizon: int
    sink_tokens: int

    @property
    def n_layers(self) -> int:
        return self.mass.shape[0]

    @property
    def n_heads(self) -> int:
        return self.mass.shape[1]

    @property
    def mass_cs(self) -> np.ndarray:
        """(L, H, cs_horizon+1) null-corrected mass summed over documents."""
        return self.doc_mass_cs.sum(0)

    @property
    def queries_cs(self) -> np.ndarray:
        """(L,) query-sides behind :attr:`mass_cs`."""
        return self.doc_queries_cs.sum(0)

    @property
    def sink_mass(self) -> np.ndarray:
        """(L, H) mean attention mass on the sink keys per query (dimensionless, 0–1)."""
        q = self.doc_sink_queries.sum(0)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(q > 0, self.doc_sink_sum.sum(0) / q, np.nan)

    def mean_attention_cs(self) -> np.ndarray:
        """(L, H, cs_horizon+1) null-corrected A(d): mean attention at d per common-support query-side."""
        q = self.queries_cs[:, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(q > 0, self.mass_cs / q, np.nan)

    def save(self, path: Path) -> None:
        """Write ``profile.npz`` (uncompressed: exact float64 sums)."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        arrays["mass_cs"] = self.mass_cs
        arrays["queries_cs"] = self.queries_cs
        arrays["sink_mass"] = self.sink_mass
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> DistanceProfile:
        """Read a ``profile.npz`` written by :meth:`save`."""
        with np.load(path) as z:
            kw = {f.name: z[f.name] for f in fields(cls)}
        kw["cs_horizon"], kw["sink_tokens"] = int(kw["cs_horizon"]), int(kw["sink_tokens"])
        return cls(**kw)
