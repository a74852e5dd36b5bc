"""Publishing a measurement: the run directory, its ``report.html`` and the atlas record, in one step.

Measuring (:func:`gammalens.measuring.pipeline.measure`, :func:`gammalens.sinks.measure_sinks`) returns results
and writes nothing; the caller (the CLI, the sweep, the Python facade ``gammalens.measure(out=...)``)
publishes them here. This package sits above the report and the atlas and below the commands.

>>> writer = run_writer("runs")        # doctest: +SKIP
>>> result = publish(measure("minilm"), writer, record=True)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gammalens.atlas import AtlasError, record_run
from gammalens.measuring.config import MeasureResult
from gammalens.report import write_report
from gammalens.runs import atomic
from gammalens.runs.writer import RunWriter
from gammalens.sinks.result import SINK_FILE, SinkResult

ClaimLinks = Callable[[Any], Sequence[Any]]  # RunFiles → the claim links its report shows


def run_writer(out: Path | str | RunWriter) -> RunWriter:
    """A :class:`~gammalens.runs.writer.RunWriter` for ``out``; checks writability now, makes the folder later."""
    return out if isinstance(out, RunWriter) else RunWriter(Path(out), lazy=True)


def publish(result: MeasureResult, out: Path | str | RunWriter, *, report: bool = True, record: bool = False,
            atlas: Path | str | None = None, files: dict[str, str] | None = None,
            claim_links: ClaimLinks | None = None) -> MeasureResult:
    """Write ``result`` as a run directory (with ``report.html`` unless ``report`` is False), then record it.

    Returns
    -------
    MeasureResult
        ``result`` with ``run_dir`` set.
    """
    run_dir = write_run(run_writer(out), result.manifest, result.fits, result.profile, report=report,
                        record=record, atlas=atlas, files=files, claim_links=claim_links)
    return dataclasses.replace(result, run_dir=run_dir)


def publish_sinks(result: SinkResult, out: Path | str | RunWriter, *, report: bool = True, record: bool = False,
                  atlas: Path | str | None = None, claim_links: ClaimLinks | None = None) -> SinkResult:
    """Write a :func:`~gammalens.sinks.measure_sinks` result: its baseline run plus ``sinks.json``.

    Returns
    -------
    SinkResult
        ``result`` with ``run_dir`` set (also on ``result.measurement``).
    """
    sinks_json = json.dumps(result.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    measured = publish(result.measurement, out, report=report, record=record, atlas=atlas,
                       files={SINK_FILE: sinks_json}, claim_links=claim_links)
    return dataclasses.replace(result, run_dir=measured.run_dir, measurement=measured)


def write_run(writer: RunWriter, manifest: dict, fits: list[dict], profile: Any, *, report: bool = True,
              record: bool = False, atlas: Path | str | None = None, files: dict[str, str] | None = None,
              claim_links: ClaimLinks | None = None) -> Path:
    """Write a run directory atomically, with ``report.html`` inside, then record it in the atlas.

    Parameters
    ----------
    writer : RunWriter
        Owns the parent directory.
    manifest, fits, profile
        What :func:`gammalens.measuring.pipeline.measure` produced.
    report : bool
        Write ``report.html`` (after ``files``, so report panels can read them).
    record : bool
        Record the finished run in the atlas; a busy or unusable atlas only warns (the run is safe on disk).
    atlas : Path or str, optional
        The atlas to record into and to draw the report's map from.
    files : dict of str to str, optional
        Extra text files (name → content) written into the run directory before the rename.
    claim_links : callable, optional
        The claims of the ledger a run bears on (:func:`gammalens.claims.links.links_for_run`), shown in
        the report; None: the report has no claims section.

    Returns
    -------
    Path
        The run directory.
    """

    def extras(partial: Path, manifest: dict) -> None:
        for name, text in (files or {}).items():
            atomic.write_text(partial / name, text)
        if report:
            # a missing, busy or foreign atlas only drops the reference points from the report's map
            write_report([partial], partial / "report.html", atlas=atlas, atlas_required=False,
                         claim_links=claim_links)

    # the stages of the run's life (gammalens.runs.atomic.STAGES): an interrupt at any of them is told truly
    atomic.stage("measured", record=record, atlas=atlas)
    run_dir = writer.write(manifest, fits, profile, extras=extras)  # → "staged", then the commit → "written"
    if record:
        with atomic.deferred_signals():  # the transaction is short; Ctrl-C or SIGTERM waits for its end
            atomic.stage("recording")
            try:
                record_run(run_dir, atlas)
            except AtlasError as err:
                print(f"gammalens: warning: {run_dir} was not recorded in the atlas ({err}); "
                      f"record it later with `gammalens atlas record {run_dir}`", file=sys.stderr)
            else:
                atomic.stage("recorded", recorded=True)
    return run_dir
