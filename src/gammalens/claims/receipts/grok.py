"""Receipt of the grokking claim: the pre-registered re-rise rule re-run on the recorded training curves.

The grokking sweep (``gammalens grok sweep``, docs/grokking.md) stores every run's curve — step, train and
test accuracy, inter-layer CKA — as CSV. This receipt recomputes the verdict from those raw curves alone:
the grokking step from test accuracy, the firing step by feeding the CKA series to a fresh
:class:`~gammalens.grok.detector.ReRiseDetector` with its pre-registered defaults, then the counts and
Fisher's exact test. Re-training the runs themselves is ``gammalens grok sweep`` (hours on a CPU).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from gammalens.grok.detector import ReRiseDetector
from gammalens.grok.sweep import SweepConfig, run_sweep

REPO = Path(__file__).resolve().parents[4]
MAIN_CONDITIONS = ("grok", "wd0", "smallfrac")  # modular addition without the CKA penalty


def _runs_dir(runs_dir: str) -> Path:
    path = Path(runs_dir)
    return path if path.is_absolute() or path.is_dir() else REPO / path


def cka_rerise_from_curves(runs_dir: str = "docs/grokking/runs", threshold: float = 0.95,
                           sweep: bool = False) -> dict[str, float]:
    """Detection rate, false alarms, Fisher p and lead times of the CKA re-rise rule, from stored curves.

    With ``sweep`` the runs of the committed sweep's conditions (``gammalens grok sweep`` defaults: 16
    grokking seeds, 4 + 4 controls) that are missing from ``runs_dir`` are trained first (about 1.5 h of
    one CPU core; finished runs are kept).

    Returns
    -------
    dict
        ``grokked`` and ``detected`` (fired strictly before the grokking step), ``controls`` and
        ``false_alarms`` (non-grokking runs where it fired), ``fisher_p`` (two-sided), ``median_lead``
        (steps; NaN without detections) and ``runs``.
    """
    from scipy.stats import fisher_exact


    if sweep:

        run_sweep(SweepConfig(), _runs_dir(runs_dir), only=MAIN_CONDITIONS)
    grokked = detected = controls = alarms = 0
    leads = []
    files = sorted(p for p in _runs_dir(runs_dir).glob("*.csv") if p.stem.split("_seed")[0] in MAIN_CONDITIONS)
    for path in files:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        grok = next((int(r["step"]) for r in rows if float(r["test_acc"]) >= threshold), None)
        det = ReRiseDetector()
        for r in rows:
            det.update(step=int(r["step"]), value=float(r["cka"]))
        fired = det.fired_step
        if grok is None:
            controls += 1
            alarms += fired is not None
        else:
            grokked += 1
            if fired is not None and fired < grok:
                detected += 1
                leads.append(grok - fired)
    table = [[detected, grokked - detected], [alarms, controls - alarms]]
    p = float(fisher_exact(table)[1]) if grokked and controls else float("nan")
    return {"grokked": float(grokked), "detected": float(detected), "controls": float(controls),
            "false_alarms": float(alarms), "fisher_p": p,
            "median_lead": float(statistics.median(leads)) if leads else float("nan"), "runs": float(len(files))}
