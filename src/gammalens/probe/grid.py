"""The distance grid of a stored profile: every distance up to E, then log-spaced bins (docs/run_format.md).

A long run's exact per-distance sums outgrow any disk: an 8B model (32 layers × 32 heads) at 128K tokens
with 8 documents holds about 6 GB of float64 profile arrays, most of them per-document copies for the
bootstrap. The *compact* layout keeps every distance d ≤ E one by one and sums the distances beyond into
bins whose edges grow geometrically, ``per_octave`` bins per doubling of d, so that a bin's width is at
most 2^(1/per_octave) − 1 of its start (2.2 % at 32 per octave). A bin holds the **sum** over its
distances, so every sum over a union of bins — a window's mass, a tail, a total — is kept exactly, and
the per-distance values read back inside a bin are the bin's mean (:func:`expand`).

>>> grid_edges(12, exact_to=3, per_octave=2).tolist()
[0, 1, 2, 3, 4, 6, 8, 12]
"""

from __future__ import annotations

import math

import numpy as np

# distances 0..EXACT_TO are kept one by one in a compact profile: the short range where A(d) changes fastest
EXACT_TO = 512
# bins per doubling of d beyond EXACT_TO: a bin spans at most 2^(1/32) − 1 ≈ 2.2 % of its start distance
PER_OCTAVE = 32
# `--profile-layout auto` keeps the full layout while its profile.npz stays under this many bytes
AUTO_FULL_LIMIT = 64 * 2**20


def grid_edges(n: int, exact_to: int = EXACT_TO, per_octave: int = PER_OCTAVE) -> np.ndarray:
    """Integer bin edges over the distances 0..n−1.  # (G+1,)

    Parameters
    ----------
    n : int
        Number of distances (tokens): the grid covers d = 0..n−1.
    exact_to : int
        Largest distance kept on its own (a width-1 bin); every d ≤ ``exact_to`` is exact.
    per_octave : int
        Bins per doubling of d beyond ``exact_to``.

    Returns
    -------
    np.ndarray
        Strictly increasing int64 edges e_0 = 0 < e_1 < … < e_G = n; bin g holds e_g ≤ d < e_{g+1}.
    """
    if n < 1 or exact_to < 0 or per_octave < 1:
        raise ValueError(f"grid_edges needs n ≥ 1, exact_to ≥ 0 and per_octave ≥ 1 (got {n}, {exact_to}, {per_octave})")
    dense = np.arange(min(exact_to + 1, n) + 1, dtype=np.int64)
    start = exact_to + 1
    if n <= start:
        return dense
    steps = np.arange(1, math.ceil(per_octave * math.log2(n / start)) + 1)
    tail = np.ceil(start * 2.0 ** (steps / per_octave)).astype(np.int64)
    return np.unique(np.concatenate([dense, tail[tail < n], [n]]))


def bin_sums(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum ``values`` (..., n) over the bins of ``edges`` along the last axis.  # (..., G)

    Width-1 bins copy their value bit for bit; wider bins are float64 sums in distance order.
    """
    values = np.asarray(values)
    if values.shape[-1] != int(edges[-1]):
        raise ValueError(f"values cover {values.shape[-1]} distances but the grid {int(edges[-1])}")
    return np.add.reduceat(values, edges[:-1], axis=-1)


def expand(binned: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-distance values from bin sums: each distance gets its bin's mean.  # (..., n) float64

    The inverse of :func:`bin_sums` on width-1 bins, and sum-preserving on every bin.
    """
    widths = np.diff(edges)
    if binned.shape[-1] != widths.size:
        raise ValueError(f"{binned.shape[-1]} bins but the grid has {widths.size}")
    return np.repeat(np.asarray(binned, np.float64) / widths, widths, axis=-1)


def parse_layout(spec: str) -> tuple[str, int]:
    """``'auto'``, ``'full'``, ``'compact'`` or ``'compact:E'`` → (layout, exact_to); ValueError otherwise."""
    name, _, exact = str(spec).partition(":")
    if name not in ("auto", "full", "compact") or (exact and name != "compact"):
        raise ValueError(f"--profile-layout must be auto, full, compact or compact:E (got {spec!r})")
    if not exact:
        return name, EXACT_TO
    if not exact.isdigit() or int(exact) < 1:
        raise ValueError(f"--profile-layout compact:E needs a whole number of tokens E ≥ 1 (got {spec!r})")
    return name, int(exact)
