"""The multi-seed verdict: detection rate, false alarms, Fisher's exact test and lead times, as a table.

Runs are classified by **outcome**, as in the published pilot: a *grokking* run reached test accuracy
≥ threshold within its budget; a *non-grokking* run did not. The main test uses the modular-addition
runs without the CKA penalty (the grokking condition and both controls); sparse parity and the
penalty intervention are reported on their own rows.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gammalens.grok.experiment import RunResult
from gammalens.grok.plots import write_plots
from gammalens.grok.sweep import load_results
from gammalens.runs import atomic

PUBLISHED = {"detected": "16/16", "false_alarms": "0/5", "fisher_p": "≈ 5×10⁻⁵", "lead": "3,300 ± 460"}
MAIN_CONDITIONS = ("grok", "wd0", "smallfrac")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def condition_of(name: str) -> str:
    return name.split("_seed")[0]


def curve_facts(runs_dir: Path, name: str, grok_step: int | None) -> dict[str, float | int | None]:
    """Descriptive facts from a run's CSV (not used by the detector or the test).

    ``memorised``: first step with train accuracy ≥ 0.99; ``cka_memorised``, ``cka_grok``: CKA at that step
    and at the grokking step (else at the last evaluation).
    """
    import csv

    path = Path(runs_dir) / f"{name}.csv"
    if not path.exists():
        return {"memorised": None, "cka_memorised": None, "cka_grok": None}
    with path.open() as f:
        rows = list(csv.DictReader(f))
    mem = next((r for r in rows if float(r["train_acc"]) >= 0.99), None)
    end = next((r for r in rows if int(r["step"]) == grok_step), rows[-1])
    return {"memorised": None if mem is None else int(mem["step"]),
            "cka_memorised": None if mem is None else float(mem["cka"]), "cka_grok": float(end["cka"])}


def _num(v: float | int | None, fmt: str = "{}") -> str:
    return "–" if v is None else fmt.format(v)


@dataclass(frozen=True)
class Verdict:
    """Counts and statistics of the main test (see module docstring).

    Attributes
    ----------
    grokked, detected : int
        Grokking runs, and those in which the detector fired strictly before the grokking step.
    fired_after : int
        Grokking runs in which it fired only at or after the grokking step (counted as missed).
    silent_controls, controls, false_alarms : int
        Non-grokking runs, and those in which the detector fired at all.
    fisher_p : float
        Two-sided Fisher exact p of [[detected, missed], [false alarms, silent]] (NaN if a margin is 0).
    leads : list[int]
        Lead times (grok step − fire step, in steps) of the detected runs.
    """

    grokked: int
    detected: int
    fired_after: int
    controls: int
    false_alarms: int
    fisher_p: float
    leads: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verdict(results: dict[str, RunResult]) -> Verdict:
    from scipy.stats import fisher_exact

    main = [r for n, r in results.items() if condition_of(n) in MAIN_CONDITIONS]
    grok = [r for r in main if r.grok_step is not None]
    ctrl = [r for r in main if r.grok_step is None]
    detected = [r for r in grok if r.fire_step is not None and r.fire_step < r.grok_step]
    after = [r for r in grok if r.fire_step is not None and r.fire_step >= r.grok_step]
    alarms = [r for r in ctrl if r.fire_step is not None]
    table = [[len(detected), len(grok) - len(detected)], [len(alarms), len(ctrl) - len(alarms)]]
    p = float(fisher_exact(table)[1]) if grok and ctrl else float("nan")
    return Verdict(grokked=len(grok), detected=len(detected), fired_after=len(after), controls=len(ctrl),
                   false_alarms=len(alarms), fisher_p=p, leads=sorted(r.lead for r in detected))


def _lead_text(leads: list[int]) -> str:
    if not leads:
        return "–"
    sd = statistics.stdev(leads) if len(leads) > 1 else float("nan")
    return f"{statistics.mean(leads):,.0f} ± {sd:,.0f} (median {statistics.median(leads):,.0f})"


def condition_rows(results: dict[str, RunResult]) -> list[dict[str, Any]]:
    """One row per condition: runs, grokked, detector fired (before grokking), grokking step and lead."""
    rows = []
    for cond in dict.fromkeys(condition_of(n) for n in results):
        rs = [r for n, r in results.items() if condition_of(n) == cond]
        grok_steps = [r.grok_step for r in rs if r.grok_step is not None]
        before = [r for r in rs if r.fire_step is not None and (r.grok_step is None or r.fire_step < r.grok_step)]
        rows.append({
            "condition": cond, "runs": len(rs), "grokked": len(grok_steps),
            "fired": sum(r.fire_step is not None for r in rs),
            "fired_before_grok": sum(r.grok_step is not None for r in before),
            "grok_step_median": statistics.median(grok_steps) if grok_steps else None,
            "lead": _lead_text(sorted(r.lead for r in rs if r.lead is not None and r.lead > 0)),
            "final_test_acc_median": statistics.median(r.final_test_acc for r in rs),
        })
    return rows


def markdown(results: dict[str, RunResult], command: str, runs_dir: Path | None = None) -> str:
    """The results block of docs/grokking.md."""
    v = verdict(results)
    source = "the runs' JSON files" if runs_dir is None else f"`{Path(runs_dir).as_posix()}/*.json`"
    lines = [BEGIN, "", f"Regenerate with `{command}` (finished runs are kept; the table is rebuilt from "
             f"{source}).", "",
             "| | this sweep | published pilot |", "|---|---|---|",
             f"| grokking runs with the re-rise before the jump | {v.detected}/{v.grokked} | {PUBLISHED['detected']} |",
             f"| of which it fired only at/after the jump | {v.fired_after}/{v.grokked} | – |",
             f"| non-grokking runs with a (false) alarm | {v.false_alarms}/{v.controls} | {PUBLISHED['false_alarms']} |",
             f"| Fisher exact p (two-sided) | {v.fisher_p:.3g} | {PUBLISHED['fisher_p']} |",
             f"| lead time, steps: mean ± sd (median) | {_lead_text(v.leads)} | {PUBLISHED['lead']} |",
             "", "Per condition:", "",
             "| condition | runs | grokked | detector fired | fired before grokking | median grokking step "
             "| lead (steps) | median final test acc |", "|---|---|---|---|---|---|---|---|"]
    for r in condition_rows(results):
        gs = "–" if r["grok_step_median"] is None else f"{r['grok_step_median']:,.0f}"
        lines.append(f"| {r['condition']} | {r['runs']} | {r['grokked']} | {r['fired']} | {r['fired_before_grok']} "
                     f"| {gs} | {r['lead']} | {r['final_test_acc_median']:.3f} |")
    lines += ["", "Per run (memorised: first step with train accuracy ≥ 0.99; CKA at that step and at the grokking "
              "step, or at the last evaluation when the run did not grok — descriptive, not part of the test):", "",
              "| run | memorised step | grokking step | detector fired | lead | CKA memorised | CKA grokking/end "
              "| detector's minimum | final test acc |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        f = curve_facts(runs_dir, n, r.grok_step) if runs_dir is not None else {}
        ev = r.event or {}
        lines.append(f"| {n} | {_num(f.get('memorised'))} | {_num(r.grok_step)} | {_num(r.fire_step)} | {_num(r.lead)} "
                     f"| {_num(f.get('cka_memorised'), '{:.3f}')} | {_num(f.get('cka_grok'), '{:.3f}')} "
                     f"| {_num(ev.get('minimum'), '{:.3f}')} | {r.final_test_acc:.3f} |")
    lines += ["", "![CKA and test accuracy per condition](grokking/curves.svg)", "",
              "![lead times](grokking/leads.svg)", "", END]
    return "\n".join(lines)


def write_report(runs_dir: str | Path, doc: str | Path, command: str) -> Verdict:
    """Rebuild the results block of ``doc`` and the plots next to it from the runs in ``runs_dir``.

    The document is written atomically (:mod:`gammalens.runs.atomic`) after the plots, with Ctrl-C and SIGTERM
    held until both are in place (then the stage ``reported``); a full disk leaves the document as it was and
    no temporary file (:class:`~gammalens.runs.atomic.AtomicWriteError` names the file).
    """
    results = load_results(runs_dir)
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else ""
    block = markdown(results, command, Path(runs_dir))
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    staged = atomic.prepare(doc, text)  # a full disk fails here, before any plot is replaced
    plots_dir = doc.parent / doc.stem
    try:
        with atomic.deferred_signals():
            try:
                plots = write_plots(runs_dir, results, plots_dir)
            except OSError as err:  # the plots' own temporary files (curves.svg.tmp …) are not left behind
                for leftover in plots_dir.glob("*.svg.tmp") if plots_dir.is_dir() else ():
                    leftover.unlink(missing_ok=True)
                target = Path(err.filename) if getattr(err, "filename", None) else plots_dir
                if target.name.endswith(".tmp"):
                    target = target.with_name(target.name[: -len(".tmp")])
                raise atomic.AtomicWriteError(target, err) from None
            atomic.commit(staged, then=lambda: atomic.stage("reported", report=doc, files=[doc, *plots]))
    finally:
        atomic.discard(staged)
    return verdict(results)
