"""The book's estimator of γ (tafagent ``diagnose_model.py``), run next to gammalens's null-corrected one.

- :mod:`gammalens.taf.estimator`: the method, step for step, on a model (:func:`taf_gamma`).
- :mod:`gammalens.taf.synthetic`: both estimators on synthetic uniform and power-law attention.
- :mod:`gammalens.taf.alongside`: ``gammalens measure --estimator taf`` (manifest ``taf`` entry, summary line).

(The book's published γ atlas is imported by :mod:`gammalens.atlas.taf`.)
"""

from gammalens.taf.estimator import TAF_DISTANCES, TafError, TafResult, TafSettings, estimate, taf_gamma

__all__ = ["TAF_DISTANCES", "TafError", "TafResult", "TafSettings", "estimate", "taf_gamma"]
