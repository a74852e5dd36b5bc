"""The run directory's format (docs/run_format.md), defined once.

The writer (:mod:`gammalens.runs.writer`), the reader (:mod:`gammalens.runs.reader`), ``verify``, the report,
the atlas and the test fixtures all take the format's version, file names, the typed ``fits.csv`` column
table and the ``profile.npz`` arrays from here; ``tests/test_run_format.py`` writes a run with the writer
and reads it back with the reader.

>>> FIT_COLUMNS["gamma"], FIT_COLUMNS["layer"]
('float', 'int')
>>> FORMAT
'gammalens.run/1'
"""

from __future__ import annotations

FORMAT = "gammalens.run/1"  # the manifest's "format"; a reader refuses any other
MANIFEST, FITS, PROFILE = "manifest.json", "fits.csv", "profile.npz"  # the measured files (report.html is extra)

# fits.csv columns of format version 1, in file order, and how each is parsed (str, int or float; an empty
# cell is None). Columns beyond these (the theory columns, sink columns …) follow in first-seen order and are
# kept by the reader as extras.
FIT_COLUMNS: dict[str, str] = {
    "name": "str",                    # stable dotted name: layers.3.heads.5, layers.3, model
    "scope": "str",                   # head, layer or model
    "layer": "int",
    "head": "int",
    "gamma": "float",                 # γ of A(d) ∝ d^-γ (dimensionless)
    "gamma_ci_low": "float",          # 95% bootstrap CI over documents
    "gamma_ci_high": "float",
    "r2": "float",                    # R² of the log-log fit
    "gamma_mle": "float",
    "method": "str",
    "fit_d_min": "int",               # fit range, tokens
    "fit_d_max": "int",
    "phase": "str",                   # A, boundary, B or undetermined
    "sink_mass": "float",             # mean attention on the sink keys per query (probability)
    "preferred_model": "str",         # power_law, exponential or power_law_cutoff (AIC)
    "delta_aic_exponential": "float",
    "delta_aic_cutoff": "float",
    "r2_exponential": "float",
    "cutoff_lambda": "float",
    "n_docs": "int",
}
INT_COLUMNS = frozenset(c for c, kind in FIT_COLUMNS.items() if kind == "int")
REQUIRED_FIT_COLUMNS = ("name", "scope", "layer", "head", "gamma")
SCOPES = ("head", "layer", "model")
PROFILE_ARRAYS = ("mass", "pairs", "mass_cs", "queries_cs", "cs_horizon", "sink_mass")  # at least these
