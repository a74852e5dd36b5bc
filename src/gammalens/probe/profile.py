"""The measured distance profiles of a run: exact sums, stored as ``profile.npz``, full or compact (docs/run_format.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.probe.grid import AUTO_FULL_LIMIT, PER_OCTAVE, bin_sums, expand, grid_edges, parse_layout


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

    def save(self, path: Path, layout: str = "auto") -> str:
        """Write ``profile.npz`` in the full or the compact layout; returns the layout written.

        Parameters
        ----------
        path : Path
            The file to write (uncompressed ``.npz``).
        layout : str
            ``'full'``: every distance, float64, exact sums. ``'compact'`` or ``'compact:E'``: distances
            0..E exact (default E = :data:`gammalens.probe.grid.EXACT_TO`), bin sums beyond
            (:mod:`gammalens.probe.grid`), per-document arrays in float32. ``'auto'``: full while it stays
            under :data:`gammalens.probe.grid.AUTO_FULL_LIMIT` bytes, compact otherwise.
        """
        name, exact_to = resolve_layout(layout, self.shape)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        arrays["mass_cs"] = self.mass_cs
        arrays["queries_cs"] = self.queries_cs
        arrays["sink_mass"] = self.sink_mass
        if name == "compact":
            edges = grid_edges(self.mass.shape[-1], exact_to, PER_OCTAVE)
            edges_cs = grid_edges(self.cs_horizon + 1, exact_to, PER_OCTAVE)
            arrays |= {
                "layout": np.array("compact"), "exact_to": np.array(exact_to), "per_octave": np.array(PER_OCTAVE),
                "edges": edges, "edges_cs": edges_cs,
                "mass": bin_sums(self.mass, edges), "pairs": bin_sums(self.pairs, edges),
                "mass_cs": bin_sums(arrays["mass_cs"], edges_cs),
                "doc_mass_cs": bin_sums(self.doc_mass_cs, edges_cs).astype(np.float32),
            }
        np.savez(path, **arrays)
        return name

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(L layers, H heads, N documents, D distances, cs_horizon) — what sizes its stored file."""
        n_docs, n_layers, n_heads, _ = self.doc_mass_cs.shape
        return n_layers, n_heads, n_docs, self.mass.shape[-1], self.cs_horizon

    @classmethod
    def load(cls, path: Path) -> DistanceProfile:
        """Read a ``profile.npz`` written by :meth:`save`; a compact one comes back per distance (bin means)."""
        with np.load(path) as z:
            kw = {f.name: read_array(z, f.name) for f in fields(cls)}
        kw["cs_horizon"], kw["sink_tokens"] = int(kw["cs_horizon"]), int(kw["sink_tokens"])
        return cls(**kw)


# arrays the compact layout stores as bin sums, and the grid each one is binned on
BINNED = {"mass": "edges", "pairs": "edges", "mass_cs": "edges_cs", "doc_mass_cs": "edges_cs"}


def stored_layout(npz: Any) -> str:
    """``'compact'`` or ``'full'``: the layout of an open ``profile.npz`` (files before the layout key are full)."""
    return "compact" if "layout" in npz.files and str(npz["layout"]) == "compact" else "full"


def read_array(npz: Any, key: str) -> np.ndarray:
    """One array of an open ``profile.npz``, per distance whatever the layout (compact bins → bin means)."""
    if key not in npz.files:
        raise KeyError(key)
    values = np.asarray(npz[key])
    if key in BINNED and stored_layout(npz) == "compact":
        if BINNED[key] not in npz.files:
            raise KeyError(BINNED[key])
        return expand(values, np.asarray(npz[BINNED[key]]))
    return values


def resolve_layout(layout: str, shape: tuple[int, int, int, int, int]) -> tuple[str, int]:
    """``(layout, exact_to)`` for a profile of ``shape`` (see :meth:`DistanceProfile.save`); ``auto`` decided."""
    name, exact_to = parse_layout(layout)
    if name == "auto":
        name = "full" if profile_nbytes(*shape, layout="full") <= AUTO_FULL_LIMIT else "compact"
    return name, exact_to


def profile_nbytes(n_layers: int, n_heads: int, n_docs: int, n_distances: int, cs_horizon: int,
                   layout: str = "full") -> int:
    """Bytes of array data in a ``profile.npz`` of this size (the file adds ~0.3 kB per array).

    Parameters
    ----------
    n_layers, n_heads, n_docs : int
        L, H (query heads) and N (documents).
    n_distances : int
        D, the distances 0..D−1 of ``mass`` (the context in tokens).
    cs_horizon : int
        The common support's largest distance (the fit range's upper end).
    layout : str
        As :meth:`DistanceProfile.save` takes it (``'auto'`` counts whichever it picks).

    >>> round(profile_nbytes(32, 32, 8, 131072, 65536, "full") / 2**30, 2)   # GiB: an 8B model at 128K
    5.53
    >>> round(profile_nbytes(32, 32, 8, 131072, 65536, "compact") / 2**20, 1)  # MiB
    35.1
    """
    L, H, N = n_layers, n_heads, n_docs
    name, exact_to = resolve_layout(layout, (L, H, N, n_distances, cs_horizon))
    small = 8 * (N * L + N * L * H + N * L + L + 2 + L + L * H)  # doc sink/query sums, windows, scalars, queries_cs, sink
    if name == "full":
        return small + 8 * (L * H * n_distances + L * n_distances + (N + 1) * L * H * (cs_horizon + 1))
    g = grid_edges(n_distances, exact_to, PER_OCTAVE).size - 1
    gc = grid_edges(cs_horizon + 1, exact_to, PER_OCTAVE).size - 1
    return small + 8 * (L * H * g + L * g + L * H * gc + g + gc + 2 + 2) + 4 * N * L * H * gc + 28
