"""Sweeps: many measurements (models × corpora × contexts × seeds …) as one resumable job, run on this
machine or on a Ray cluster, recorded into one atlas by the driver alone (docs/sweep.md).

>>> from gammalens.sweep import run_sweep
>>> result = run_sweep("examples/sweep-tiny.toml", executor="local")    # doctest: +SKIP
>>> result.to_pandas()[["index", "status", "gamma", "run_id"]]           # doctest: +SKIP
"""

from gammalens.sweep.driver import CellStatus, SweepResult, run_sweep
from gammalens.sweep.plan import PlannedCell, plan_cell, settings_hash
from gammalens.sweep.spec import SweepError, SweepOptions, SweepSpec, load_spec

__all__ = [
    "CellStatus",
    "PlannedCell",
    "SweepError",
    "SweepOptions",
    "SweepResult",
    "SweepSpec",
    "load_spec",
    "plan_cell",
    "run_sweep",
    "settings_hash",
]
