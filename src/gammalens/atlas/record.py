"""Recording a finished run directory in the atlas: one transaction, idempotent.

Profiles are stored compactly: for every (layer, head) two rows, ``null_corrected``
(``mass_cs / queries_cs`` for d ≤ ``cs_horizon``) and ``naive`` (``mass / pairs`` where ``pairs > 0``),
each sampled at every distance d ≤ 64 and at 48 log-spaced distances per decade beyond — exact point
values of the run's fp64 sums, about 190 numbers per row for a 32k context instead of 32k.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.atlas.family import family_of
from gammalens.atlas.store import connect, insert_rows, scalar, transaction
from gammalens.runs.reader import FIT_COLUMNS, RunFiles, read_run

DENSE_UP_TO = 64          # tokens: every distance up to here is kept
PER_DECADE = 48           # log-spaced samples per decade beyond DENSE_UP_TO
_PAUSE_ENV = "_GAMMALENS_ATLAS_PAUSE_IN_TRANSACTION"  # test hook: seconds to sleep before COMMIT


def record_run(run_dir: Path | str, atlas: Path | str | None = None) -> str:
    """Record a finished run in the atlas and return its run id.

    Recording is idempotent (the same run directory twice is one run; a changed directory with the same
    run id replaces the old rows) and atomic (one transaction: a crash or kill leaves the atlas as it was).

    Parameters
    ----------
    run_dir : Path
        A run directory written by ``gammalens measure``.
    atlas : Path, optional
        Atlas file; default ``$GAMMALENS_ATLAS`` or ``~/.local/share/gammalens/atlas.duckdb``.

    Returns
    -------
    str
        The run id.

    Raises
    ------
    RunFormatError
        ``run_dir`` is not a valid run directory (nothing is written to the atlas).
    AtlasError
        The atlas cannot be opened, read or written (whatever DuckDB or the file system raised, through
        :func:`gammalens.atlas.store.atlas_errors`): the transaction is rolled back, so no row of the run is kept.

    Examples
    --------
    >>> record_run("runs/minilm-20260101-000000-0123abcd")   # doctest: +SKIP
    'minilm-20260101-000000-0123abcd'
    """
    run = read_run(run_dir)
    digest = content_sha256(run.path)
    rows = run_rows(run, digest)
    run_id = run.run_id
    with connect(atlas) as con, transaction(con):
        old = scalar(con, "SELECT content_sha256 FROM runs WHERE run_id = ?", [run_id])
        if old == digest:
            return run_id
        if old is not None:
            for table in ("profiles", "fit_extras", "fits", "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        insert_rows(con, "models", [rows["model"]], skip_existing=True)
        insert_rows(con, "runs", [rows["run"]])
        insert_rows(con, "fits", rows["fits"])
        pause = float(os.environ.get(_PAUSE_ENV, "0") or 0)
        if pause > 0:  # lets a test kill the process inside the transaction
            print(f"gammalens-atlas: in transaction for {run_id}", flush=True)
            time.sleep(pause)
        insert_rows(con, "fit_extras", rows["fit_extras"])
        insert_rows(con, "profiles", rows["profiles"])
    return run_id


def content_sha256(run_dir: Path) -> str:
    """sha256 over the three measured files (manifest.json, fits.csv, profile.npz), in that order."""
    h = hashlib.sha256()
    for name in ("manifest.json", "fits.csv", "profile.npz"):
        with (run_dir / name).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return stamp


def model_key(manifest: dict[str, Any]) -> str:
    """``sha256:<16 hex>`` of the model's weight hashes; ``id:<model id>`` when the manifest has none."""
    model = manifest.get("model", {})
    weights = model.get("weights_sha256") or {}
    if weights:
        text = json.dumps(weights, sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"id:{model.get('id')}"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def run_rows(run: RunFiles, digest: str) -> dict[str, Any]:
    """The atlas rows of one run: ``model``, ``run`` (dicts) and ``fits``, ``fit_extras``, ``profiles`` (lists)."""
    manifest, arch = run.manifest, run.arch
    corpus, settings = manifest.get("corpus") or {}, run.settings
    result = manifest.get("result") or {}
    model_fit = run.model_fit
    model = {
        "model_key": model_key(manifest), "model_id": run.model_id, "family": family_of(run.model_id),
        "model_type": arch.get("model_type"), "architectures": _json(arch.get("architectures")),
        "rope_scaling": _json(arch.get("rope_scaling")), "arch": _json(arch),
        "weights_sha256": _json(manifest.get("model", {}).get("weights_sha256")),
        "rope_theta": run.rope_theta,
        **{k: arch.get(k) for k in ("n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_size", "causal",
                                     "position_encoding", "partial_rotary_factor", "max_positions",
                                     "sliding_window", "n_params")},
    }
    record = {
        "run_id": run.run_id, "model_key": model["model_key"], "model_id": run.model_id,
        "created": _utc(manifest.get("created")), "corpus": corpus.get("name"), "corpus_spec": corpus.get("spec"),
        "corpus_sha256": corpus.get("sha256"), "n_windows": corpus.get("n_windows"),
        "n_tokens": corpus.get("n_tokens"),
        "context": settings.get("context") or corpus.get("tokens_per_window"),
        "sink_tokens": settings.get("sink_tokens"), "rope_theta": run.rope_theta,
        "gamma": result.get("gamma", model_fit["gamma"]),
        "gamma_ci_low": result.get("gamma_ci_low", model_fit["gamma_ci_low"]),
        "gamma_ci_high": result.get("gamma_ci_high", model_fit["gamma_ci_high"]),
        "r2": result.get("r2", model_fit["r2"]), "phase": result.get("phase", model_fit["phase"]),
        "sink_mass": result.get("sink_mass", model_fit["sink_mass"]),
        "gammalens_version": (manifest.get("versions") or {}).get("gammalens"),
        "manifest": json.dumps(manifest, sort_keys=True), "content_sha256": digest,
        "recorded_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }
    record = {k: _finite(v) for k, v in record.items()}
    fits, extras = [], []
    for row in run.fits:
        fits.append({"run_id": run.run_id, **{c: _finite(row[c]) for c in FIT_COLUMNS}, "estimator": "null"})
        for column, value in row["extras"].items():
            number = value if isinstance(value, float) else None
            extras.append({"run_id": run.run_id, "name": row["name"], "column_name": column,
                           "value": _finite(number), "text": None if number is not None else str(value)})
    if manifest.get("taf"):  # the book's estimator, run next to ours (gammalens.taf)
        fits.append(taf_row(run.run_id, manifest["taf"]))
    return {"model": model, "run": record, "fits": fits, "fit_extras": extras, "profiles": profile_rows(run)}


def taf_row(run_id: str, taf: dict[str, Any]) -> dict[str, Any]:
    """The ``fits`` row of the book's estimator (manifest ``taf``): name ``taf``, scope model, no CI or phase."""
    used = taf.get("fit_distances") or []
    return {"run_id": run_id, "name": "taf", "scope": "model", "layer": None, "head": None,
            "gamma": _finite(taf.get("gamma")), "r2": _finite(taf.get("r2")), "method": "taf_ols_loglog",
            "fit_d_min": min(used) if used else None, "fit_d_max": max(used) if used else None,
            "n_docs": taf.get("n_windows"), "estimator": "taf"}


def sample_distances(n: int) -> np.ndarray:
    """Distances kept of a profile defined on 0..n−1: all up to 64, then 48 log-spaced per decade.  # (k,)"""
    if n <= DENSE_UP_TO + 1:
        return np.arange(n)
    decades = np.log10((n - 1) / DENSE_UP_TO)
    tail = np.geomspace(DENSE_UP_TO, n - 1, max(int(np.ceil(PER_DECADE * decades)) + 1, 2))
    return np.unique(np.concatenate([np.arange(DENSE_UP_TO + 1), np.round(tail).astype(np.int64)]))


def profile_rows(run: RunFiles) -> list[dict[str, Any]]:
    """Sampled null-corrected and naive profiles, two rows per (layer, head)."""
    mass_cs, queries_cs = run.profile("mass_cs"), run.profile("queries_cs")   # (L, H, D), (L,)
    mass, pairs = run.profile("mass"), run.profile("pairs")                   # (L, H, D), (L, D)
    horizon = min(int(run.profile("cs_horizon")), mass_cs.shape[2] - 1)
    d_cs = sample_distances(horizon + 1)
    rows = []
    for layer in range(mass.shape[0]):
        d_naive = sample_distances(mass.shape[2])
        d_naive = d_naive[pairs[layer, d_naive] > 0]
        for head in range(mass.shape[1]):
            a_cs = mass_cs[layer, head, d_cs] / max(float(queries_cs[layer]), 1.0)
            a_naive = mass[layer, head, d_naive] / pairs[layer, d_naive]
            rows.append({"run_id": run.run_id, "layer": layer, "head": head, "kind": "null_corrected",
                         "distance": d_cs.tolist(), "value": a_cs.tolist()})
            rows.append({"run_id": run.run_id, "layer": layer, "head": head, "kind": "naive",
                         "distance": d_naive.tolist(), "value": a_naive.tolist()})
    return rows
