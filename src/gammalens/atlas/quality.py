"""Fit-quality flags shared by the atlas comparisons and the report (glossary: R² of the log-log fit).

The book treats R² > 0.95 as reliable and R² ≈ 0.85 as coarse; a head below 0.85, or one whose profile an
exponential or a cut-off power law describes better (lowest AIC), is flagged — its γ is a summary, not a law.

>>> fit_flags({"r2": 0.8, "preferred_model": "exponential"})
['R² < 0.85', 'exponential preferred']
"""

from __future__ import annotations

import math
from typing import Any

R2_LOW = 0.85        # below: flagged as a poor power-law fit
R2_RELIABLE = 0.95   # above: the book's "reliable"


def fit_flags(row: dict[str, Any]) -> list[str]:
    """Human-readable quality flags of one fits row (empty when the fit is fine)."""
    flags = []
    r2 = row.get("r2")
    if r2 is not None and math.isfinite(r2) and r2 < R2_LOW:
        flags.append(f"R² < {R2_LOW}")
    preferred = row.get("preferred_model")
    if preferred not in (None, "", "power_law"):
        flags.append(f"{str(preferred).replace('_', ' ')} preferred")
    return flags
