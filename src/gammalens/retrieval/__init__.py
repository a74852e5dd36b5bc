"""Retrieval heads, measured: echo and induction attention on repeated random tokens, and the far mass of the
ordinary profile (RazorAttention, Tang et al. 2024, for echo and induction; docs/retrieval.md).

Importing this package loads neither torch nor transformers; a measurement does.

- :mod:`~gammalens.retrieval.config` — :class:`RetrievalConfig`, the settings (CLI flags map onto its fields).
- :mod:`~gammalens.retrieval.sequences` — the probe input: random tokens x_0…x_{L−1} twice, after the prefix.
- :mod:`~gammalens.retrieval.observer` — the probe observer that sums echo and induction probabilities.
- :mod:`~gammalens.retrieval.scores` — :class:`RetrievalScores` and :func:`far_mass`.
- :mod:`~gammalens.retrieval.run` — :func:`measure_retrieval` (the extra forward) and
  :func:`measure_with_retrieval` (``gammalens measure --retrieval``).

>>> from gammalens.retrieval import far_mass
>>> import numpy as np
>>> far_mass(np.array([[[0.5, 0.25, 0.25]]]), distance=1)   # (L, H, D) mass → (L, H) share beyond d = 1
array([[0.25]])
"""

from gammalens.retrieval.config import RetrievalConfig
from gammalens.retrieval.scores import RETRIEVAL_COLUMNS, RetrievalScores, far_mass

__all__ = ["RETRIEVAL_COLUMNS", "RetrievalConfig", "RetrievalScores", "far_mass"]
