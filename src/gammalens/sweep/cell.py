"""One cell of a sweep: an ordinary measurement written as a run directory, never recorded here.

:func:`run_cell` is what every executor runs (in this process, in a process pool, or as a Ray task). It
goes through :func:`gammalens.measuring.pipeline.measure` like ``gammalens measure`` does; the run directory is
written atomically, and the atlas is left to the driver.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.measuring.config import MeasureConfig
from gammalens.measuring.pipeline import measure
from gammalens.model.load import load_model, resolve_model
from gammalens.publish import publish
from gammalens.sweep.plan import canonical, settings_hash

CRASH_ONCE_ENV = "_GAMMALENS_SWEEP_CRASH_ONCE"  # test hook: a marker path; the first cell to run dies hard
_LOADED: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # (model, gguf_file, dtype, device) → (model, tokenizer)


@dataclass(frozen=True)
class CellOutcome:
    """What a worker sends back to the driver.

    Attributes
    ----------
    ok : bool
        The run directory was written.
    run_dir : str or None
        Its path.
    error : str or None
        One line: why the cell failed.
    seconds : float
        Wall time of the cell inside the worker, model loading included (s).
    """

    ok: bool
    run_dir: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellOutcome:
        return cls(**d)


def one_line(err: BaseException, limit: int = 300) -> str:
    """``str(err)``'s first non-empty line; the exception's type is named unless it is a gammalens error."""

    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if not isinstance(err, GammalensError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text[:limit]


def _loaded(config: Any) -> tuple[Any, Any]:
    """The model of ``config``, loaded once per worker process for consecutive cells of the same model.

    One slot: a cell of another model (or dtype, device) frees it first, so a worker never holds two.
    """

    key = (config.model, getattr(config, "gguf_file", None), config.dtype, config.device)
    if key not in _LOADED:
        forget_model()
        src = resolve_model(config.model, getattr(config, "gguf_file", None))
        _LOADED[key] = load_model(src, config.dtype, config.device)
    return _LOADED[key]


def forget_model() -> None:
    """Free the model kept by :func:`_loaded` (and its GPU memory)."""
    import gc

    _LOADED.clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def existing_run(out: str, settings: dict[str, Any]) -> Path | None:
    """A finished run directory in ``out`` with exactly these settings (found by its settings-hash suffix)."""

    parent = Path(out)
    if not parent.is_dir():
        return None
    key, want = settings_hash(settings), canonical(settings)
    for run_dir in sorted(parent.glob(f"*-{key}*")):
        if run_dir.name.startswith(".") or not (run_dir / "fits.csv").is_file():
            continue
        try:
            theirs = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")).get("settings")
        except (OSError, ValueError):
            continue
        if isinstance(theirs, dict) and canonical(theirs) == want:
            return run_dir
    return None


def run_cell(settings: dict[str, Any], out: str, report: bool = False, threads: int | None = None,
             claim_links: Any = None) -> dict[str, Any]:
    """Measure one cell into ``out`` and return a :class:`CellOutcome` as a dict (picklable, version-proof).

    Parameters
    ----------
    settings : dict
        :class:`~gammalens.measuring.pipeline.MeasureConfig` fields of the cell.
    out : str
        Parent directory of the run directory (shared by all workers of a sweep).
    report : bool
        Also write ``report.html`` into the run directory.
    threads : int, optional
        torch CPU threads for this cell (restored afterwards).
    claim_links : callable, optional
        Passed to :func:`gammalens.publish.publish` for the cell's report.

    Any ``Exception`` becomes a failed outcome with its one-line error; ``KeyboardInterrupt`` (Ctrl-C, a
    cancelled Ray task) propagates after the run writer has removed its partial folder.
    """
    t0 = time.perf_counter()
    marker = os.environ.get(CRASH_ONCE_ENV)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(17)  # simulate a worker lost mid-cell (OOM killer, preempted node)
    try:
        done = existing_run(out, settings)
        if done is not None:  # an earlier attempt of this cell (a retried task) finished it
            return CellOutcome(ok=True, run_dir=str(done), seconds=time.perf_counter() - t0).to_dict()
        import torch


        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            config = MeasureConfig(**settings)
            result = publish(measure(config=config, loaded=_loaded(config)), out, report=report, record=False,
                             claim_links=claim_links)
        finally:
            torch.set_num_threads(before)
        return CellOutcome(ok=True, run_dir=str(result.run_dir), seconds=time.perf_counter() - t0).to_dict()
    except Exception as err:
        return CellOutcome(ok=False, error=one_line(err), seconds=time.perf_counter() - t0).to_dict()
