"""Retrieval scores per head: :class:`RetrievalScores` (echo, induction) and :func:`far_mass` (from a profile).

Echo and induction are measured on repeated random tokens (:mod:`gammalens.retrieval.observer`); the far mass
needs no new forward: it is the share of a head's non-sink attention mass, in the run's ordinary distance profile,
at query–key distances beyond D.

>>> import numpy as np
>>> s = RetrievalScores(length=4, prefix_len=0, skip=1, seed=0, doc_echo=np.full((2, 1, 2), 0.1),
...                     doc_induction=np.array([[[0.2, 0.6]], [[0.4, 0.8]]]))
>>> s.induction
array([[0.3, 0.7]])
>>> RetrievalScores.from_dict(s.to_dict()) == s
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# the per-head fits.csv columns of a run measured with --retrieval (gammalens.runs.schema.FIT_COLUMNS)
RETRIEVAL_COLUMNS = ("echo", "induction", "far_mass")


@dataclass(frozen=True, eq=False)
class RetrievalScores:
    """Echo and induction attention of every head on N repeated random sequences (L layers, H heads).

    Attributes
    ----------
    length : int
        Tokens of one copy of the random sequence.
    prefix_len : int
        Special tokens before the first copy (the BOS).
    skip : int
        Second-copy queries left out at the start of the copy (query P + L + i counts for i ≥ skip).
    seed : int or None
        Seed of the random draw.
    doc_echo : np.ndarray
        (N, L, H) mean attention probability (0–1) of a second-copy query on its counterpart in the first copy,
        per sequence.
    doc_induction : np.ndarray
        (N, L, H) the same on the token after the counterpart.
    """

    length: int
    prefix_len: int
    skip: int
    seed: int | None
    doc_echo: np.ndarray
    doc_induction: np.ndarray

    @property
    def n_sequences(self) -> int:
        return int(self.doc_echo.shape[0])

    @property
    def echo(self) -> np.ndarray:
        """(L, H) echo score: mean over sequences and counted queries (probability, 0–1)."""
        return self.doc_echo.mean(0)

    @property
    def induction(self) -> np.ndarray:
        """(L, H) induction score: mean over sequences and counted queries (probability, 0–1)."""
        return self.doc_induction.mean(0)

    def top(self, score: str = "induction", n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` heads with the highest ``score`` (``'echo'`` or ``'induction'``), as (dotted name, value)."""
        values = getattr(self, score)  # (L, H)
        order = np.argsort(-values, axis=None, kind="stable")[:n]
        return [(f"layers.{li}.heads.{hi}", float(values[li, hi]))
                for li, hi in zip(*np.unravel_index(order, values.shape), strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings and the per-sequence arrays as nested lists."""
        return {"length": self.length, "prefix_len": self.prefix_len, "skip": self.skip, "seed": self.seed,
                "doc_echo": self.doc_echo.tolist(), "doc_induction": self.doc_induction.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetrievalScores:
        """Inverse of :meth:`to_dict`."""
        return cls(length=int(d["length"]), prefix_len=int(d["prefix_len"]), skip=int(d["skip"]),
                   seed=None if d.get("seed") is None else int(d["seed"]),
                   doc_echo=np.asarray(d["doc_echo"], dtype=np.float64),
                   doc_induction=np.asarray(d["doc_induction"], dtype=np.float64))

    def to_pandas(self) -> Any:
        """One row per head: ``name``, ``layer``, ``head``, ``echo``, ``induction``."""
        import pandas as pd

        L, H = self.echo.shape
        layer, head = np.divmod(np.arange(L * H), H)
        return pd.DataFrame({"name": [f"layers.{li}.heads.{hi}" for li, hi in zip(layer, head, strict=True)],
                             "layer": layer, "head": head, "echo": self.echo.ravel(),
                             "induction": self.induction.ravel()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetrievalScores):
            return NotImplemented
        return ((self.length, self.prefix_len, self.skip, self.seed)
                == (other.length, other.prefix_len, other.skip, other.seed)
                and np.array_equal(self.doc_echo, other.doc_echo)
                and np.array_equal(self.doc_induction, other.doc_induction))

    def __repr__(self) -> str:
        (name, value), = self.top("induction", 1)
        return (f"RetrievalScores({self.echo.shape[0]} layers × {self.echo.shape[1]} heads, L={self.length}, "
                f"{self.n_sequences} sequences, max induction {value:.3f} at {name}, "
                f"max echo {float(self.echo.max()):.3f})")


def far_mass(mass: np.ndarray, distance: int) -> np.ndarray:
    """Share of each head's non-sink attention mass at query–key distances > ``distance``.

    Parameters
    ----------
    mass : np.ndarray
        (L, H, D) sink-excluded mass per distance d = 0 … D−1, summed over queries
        (:attr:`gammalens.probe.profile.DistanceProfile.mass`).
    distance : int
        D_far in tokens, ≥ 0.

    Returns
    -------
    np.ndarray
        (L, H) Σ_{d > D_far} mass / Σ_d mass, in [0, 1]; NaN for a head with no non-sink mass.

    >>> far_mass(np.array([[[1.0, 2.0, 1.0], [0.0, 0.0, 0.0]]]), distance=0)
    array([[0.75,  nan]])
    """
    if distance < 0:
        raise ValueError(f"distance must be ≥ 0 (got {distance})")
    total = mass.sum(-1)  # (L, H)
    beyond = mass[..., distance + 1:].sum(-1)  # (L, H)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, beyond / total, np.nan)


def with_retrieval_columns(fits: list[dict], scores: RetrievalScores, far: np.ndarray) -> list[dict]:
    """Copies of the fits rows with ``echo``, ``induction`` and ``far_mass`` filled in on the head rows (None on
    the layer and model rows: a layer does not retrieve, its heads do).

    Parameters
    ----------
    fits : list of dict
        Rows of ``fits.csv`` (``scope``, ``layer``, ``head`` …).
    scores : RetrievalScores
        Echo and induction, (L, H).
    far : np.ndarray
        (L, H) far mass (:func:`far_mass`).
    """
    echo, induction = scores.echo, scores.induction
    out = []
    for row in fits:
        head = row.get("head") if row.get("scope") == "head" else None
        values = (None, None, None) if head is None else (
            float(echo[row["layer"], head]), float(induction[row["layer"], head]), float(far[row["layer"], head]))
        out.append(row | dict(zip(RETRIEVAL_COLUMNS, values, strict=True)))
    return out
