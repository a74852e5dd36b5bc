"""Publishing a measurement: the run directory, its ``report.html`` and the atlas record, in one step.

Measuring (:func:`gammalens.measurement.measure`, :func:`gammalens.sinks.measure_sinks`) produces results;
this step, shared by both, writes them. It sits below the report and the atlas in the data flow, and nothing
it imports measures, so the package's import graph has no circle through it.

>>> run_dir = write_run(RunWriter(Path("runs")), manifest, fits, profile, record=True)   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def write_run(writer: Any, manifest: dict, fits: list[dict], profile: Any, *, report: bool = True,
              record: bool = False, atlas: Path | str | None = None, files: dict[str, str] | None = None) -> Path:
    """Write a run directory atomically, with ``report.html`` inside, then record it in the atlas.

    Parameters
    ----------
    writer : RunWriter
        Owns the parent directory.
    manifest, fits, profile
        What :func:`gammalens.measurement.measure` produced.
    report : bool
        Write ``report.html`` (after ``files``, so report panels can read them).
    record : bool
        Record the finished run in the atlas; a busy or unusable atlas only warns (the run is safe on disk).
    atlas : Path or str, optional
        The atlas to record into and to draw the report's map from.
    files : dict of str to str, optional
        Extra text files (name → content) written into the run directory before the rename.

    Returns
    -------
    Path
        The run directory.
    """

    def extras(partial: Path, manifest: dict) -> None:
        for name, text in (files or {}).items():
            (partial / name).write_text(text, encoding="utf-8")
        if report:
            from gammalens.report import write_report

            # a missing, busy or foreign atlas only drops the reference points from the report's map
            write_report([partial], partial / "report.html", atlas=atlas, atlas_required=False)

    run_dir = writer.write(manifest, fits, profile, extras=extras)
    if record:
        from gammalens.atlas import AtlasError, record_run

        try:
            record_run(run_dir, atlas)
        except AtlasError as err:
            print(f"gammalens: warning: {run_dir} was not recorded in the atlas ({err}); "
                  f"record it later with `gammalens atlas record {run_dir}`", file=sys.stderr)
    return run_dir
