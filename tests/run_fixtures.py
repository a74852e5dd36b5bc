"""Synthetic, format-valid run directories (docs/run_format.md) with known γ per head.

Each query q of a causal model attends with weights ∝ d^−γ to the keys at distance d ≥ 1, weight 1 to
itself and weight ``sink_weight`` to each sink key, normalised per query. Then the null-corrected
profile ``mass_cs`` is an exact power law d^−γ on 1..cs_horizon, while the naive mean ``mass/pairs``
is bent by the per-query normalisation — the pitfall the report shows.

>>> run_dir = write_run(tmp_path)                           # doctest: +SKIP
>>> run_dir.name
'fixture-tiny-rope-20260102-030405-…'
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime
from pathlib import Path

import numpy as np

from gammalens.atlas.taf import TAF_FILE
from gammalens.runs.schema import FIT_COLUMNS, FORMAT
from gammalens.theory.phases import phase

# the book's published γ atlas: the copy shipped inside the package as reference data
TAF_CSV = TAF_FILE


def taf_csv() -> Path:
    assert TAF_CSV.is_file(), f"the published atlas ships with the package at {TAF_CSV}"
    return TAF_CSV

FITS_HEADER = list(FIT_COLUMNS)  # the format's own column table


def default_gammas(n_layers: int, n_heads: int) -> np.ndarray:
    """γ = 0.4 + 0.25·head + 0.3·layer: both phases and the boundary in a 2 × 4 model.  # (L, H)"""
    return 0.4 + 0.25 * np.arange(n_heads)[None, :] + 0.3 * np.arange(n_layers)[:, None]


def write_run(
    parent: Path,
    *,
    model_id: str = "fixture/tiny-rope",
    n_layers: int = 2,
    n_heads: int = 4,
    context: int = 64,
    windows: int = 4,
    gammas: np.ndarray | None = None,
    rope_theta: float | None = 10000.0,
    sink_tokens: int = 1,
    sink_weight: float = 3.0,
    created: str = "2026-01-02T03:04:05Z",
    low_r2_heads: tuple[tuple[int, int], ...] = ((1, 3),),
    exponential_heads: tuple[tuple[int, int], ...] = ((0, 0),),
    extra_columns: dict[str, np.ndarray] | None = None,
    corpus: str = "stdlib",
) -> Path:
    """Write one run directory under ``parent`` and return its path.

    Parameters
    ----------
    gammas : ndarray, optional
        True γ per head, shape (n_layers, n_heads); default :func:`default_gammas`.
    rope_theta : float, optional
        RoPE base θ; ``None`` writes a model with learned positions.
    low_r2_heads, exponential_heads : tuple of (layer, head)
        Heads written with R² = 0.8 (below the 0.85 flag), or with the exponential preferred.
    extra_columns : dict, optional
        Extra fits.csv columns, e.g. ``{"gamma_pade": array (L, H)}``; layer/model rows get the mean.
    """
    gammas = default_gammas(n_layers, n_heads) if gammas is None else np.asarray(gammas, dtype=np.float64)
    assert gammas.shape == (n_layers, n_heads)
    D, s, horizon = context, sink_tokens, context // 2
    d = np.arange(D)
    w = np.where(d[None, None, :] == 0, 1.0, np.maximum(d, 1)[None, None, :] ** -gammas[..., None])  # (L, H, D)
    mass = np.zeros((n_layers, n_heads, D))
    mass_cs = np.zeros((n_layers, n_heads, D))
    sink_sum = np.zeros((n_layers, n_heads))
    pairs = np.zeros((n_layers, D))
    n_queries, q_cs = 0, 0
    for q in range(s, D):                     # queries whose keys include every sink
        visible = q - s                       # largest non-sink distance
        z = w[..., : visible + 1].sum(-1) + s * sink_weight          # (L, H)
        p = w[..., : visible + 1] / z[..., None]                      # (L, H, visible+1)
        mass[..., : visible + 1] += p
        pairs[:, : visible + 1] += 1
        sink_sum += s * sink_weight / z
        n_queries += 1
        if visible >= horizon:
            mass_cs[..., : horizon + 1] += p[..., : horizon + 1]
            q_cs += 1
    mass, mass_cs, pairs, sink_sum = mass * windows, mass_cs * windows, pairs * windows, sink_sum * windows
    sink_mass = sink_sum / (n_queries * windows)

    stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
    settings = {"context": context, "windows": windows, "sink_tokens": s, "fit_range": f"1:{horizon}",
                "dtype": "fp32", "device": "cpu", "seed": 0, "batch_size": 4, "chunk_size": None,
                "bootstrap": 0, "allow_extrapolation": False, "corpus": corpus}
    digest = hashlib.sha256(json.dumps([model_id, settings, gammas.tolist()]).encode()).hexdigest()[:8]
    slug = model_id.replace("/", "-").lower()
    run_id = f"{slug}-{stamp:%Y%m%d-%H%M%S}-{digest}"
    run_dir = parent / run_id
    run_dir.mkdir(parents=True)

    rows = []
    extra_columns = extra_columns or {}

    def row(name: str, scope: str, layer: object, head: object, g: float, r2: float, pref: str, sm: float,
            extras: dict[str, float]) -> dict[str, object]:
        lo, hi = g - 0.05, g + 0.05
        return {"name": name, "scope": scope, "layer": layer, "head": head, "gamma": g, "gamma_ci_low": lo,
                "gamma_ci_high": hi, "r2": r2, "gamma_mle": g + 0.01, "method": "wls-loglog", "fit_d_min": 1,
                "fit_d_max": horizon, "phase": phase(g, lo, hi), "sink_mass": sm, "preferred_model": pref,
                "delta_aic_exponential": 40.0 if pref == "power_law" else -12.0, "delta_aic_cutoff": 1.5,
                "r2_exponential": 0.7, "cutoff_lambda": 0.001, "n_docs": windows, **extras}

    for layer in range(n_layers):
        for head in range(n_heads):
            r2 = 0.8 if (layer, head) in low_r2_heads else 1.0
            pref = "exponential" if (layer, head) in exponential_heads else "power_law"
            extras = {k: float(v[layer, head]) for k, v in extra_columns.items()}
            rows.append(row(f"layers.{layer}.heads.{head}", "head", layer, head, float(gammas[layer, head]), r2,
                            pref, float(sink_mass[layer, head]), extras))
    for layer in range(n_layers):
        extras = {k: float(v[layer].mean()) for k, v in extra_columns.items()}
        rows.append(row(f"layers.{layer}", "layer", layer, "", float(gammas[layer].mean()), 0.99, "power_law",
                        float(sink_mass[layer].mean()), extras))
    extras = {k: float(v.mean()) for k, v in extra_columns.items()}
    model_row = row("model", "model", "", "", float(gammas.mean()), 0.98, "power_law", float(sink_mass.mean()), extras)
    rows.append(model_row)
    with (run_dir / "fits.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FITS_HEADER + list(extra_columns))
        writer.writeheader()
        writer.writerows(rows)

    n_docs = windows
    per_doc = mass_cs[..., : horizon + 1] / n_docs
    np.savez(
        run_dir / "profile.npz", mass=mass, pairs=pairs, mass_cs=mass_cs,
        queries_cs=np.full(n_layers, float(q_cs * windows)), cs_horizon=np.array(horizon),
        doc_mass_cs=np.repeat(per_doc[None], n_docs, axis=0), doc_queries_cs=np.full((n_docs, n_layers), float(q_cs)),
        sink_mass=sink_mass, doc_sink_sum=np.repeat((sink_sum / n_docs)[None], n_docs, axis=0),
        doc_sink_queries=np.full((n_docs, n_layers), float(n_queries)),
    )
    manifest = {
        "format": FORMAT, "run_id": run_id, "created": created,
        "model": {"id": model_id, "source": "local", "path": f"/models/{slug}",
                  "weights_sha256": {"model.safetensors": hashlib.sha256(model_id.encode()).hexdigest()},
                  "arch": {"model_type": "llama" if rope_theta else "bert", "architectures": ["LlamaForCausalLM"],
                           "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_heads, "head_dim": 16,
                           "hidden_size": 16 * n_heads, "causal": True,
                           "position_encoding": "rope" if rope_theta else "learned", "rope_theta": rope_theta,
                           "rope_scaling": None, "partial_rotary_factor": 1.0, "max_positions": 2048,
                           "sliding_window": None, "layer_types": None, "n_params": 123456}},
        "corpus": {"name": corpus, "spec": corpus, "sha256": hashlib.sha256(corpus.encode()).hexdigest(),
                   "n_windows": windows, "n_tokens": windows * context, "tokens_per_window": context},
        "settings": settings,
        "versions": {"gammalens": "0.1.0", "python": "3.11", "torch": "2.13", "transformers": "5.2",
                     "numpy": np.__version__, "scipy": "1.x"},
        "timings": {"load_s": 0.1, "forward_s": 0.2, "fit_s": 0.05, "total_s": 0.35, "tokens_per_s": 1000.0},
        "layer_modules": [f"model.layers.{i}.self_attn" for i in range(n_layers)],
        "result": {k: model_row[k] for k in ("gamma", "gamma_ci_low", "gamma_ci_high", "r2", "phase", "sink_mass")},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run_dir
