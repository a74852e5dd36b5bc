"""Receipts that run the book's own estimator (:mod:`gammalens.taf`) where a claim was made with it.

A figure of the book that does not reproduce under gammalens's null-corrected estimator may still
reproduce under the book's: running both separates "the model does not do this" from "the estimator
does not measure this".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gammalens.claims.receipts.models import model_directory, rescaled_link_copy
from gammalens.taf.estimator import taf_gamma


def taf_theta_rescale(model: str = "smollm2", factors: tuple[float, ...] = (1.0, 256.0), windows: int = 8,
                      corpus: str = "stdlib", fit_min_distance: int = 30, seed: int = 42) -> dict[str, float]:
    """The θ-rescale control read with the book's fixed-key estimator (key 49, windows of d + 50).

    ``fit_min_distance`` 30 fits d ≥ 30 as the book's atlas rows; 0 fits every measured d.

    Returns
    -------
    dict
        ``gamma_taf_x{f}`` per factor f and ``delta_gamma_taf`` (last factor − first).
    """

    src = model_directory(model)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gammalens-claims-") as tmp:
        for f in factors:
            dest = Path(tmp) / f"x{f:g}"
            rescaled_link_copy(src, f, dest)
            r = taf_gamma(str(dest), windows=windows, corpus=corpus, seeds=(seed,),
                          fit_min_distance=fit_min_distance or None)
            out[f"gamma_taf_x{f:g}"] = float(r.gamma)
    out["delta_gamma_taf"] = out[f"gamma_taf_x{factors[-1]:g}"] - out[f"gamma_taf_x{factors[0]:g}"]
    return out
