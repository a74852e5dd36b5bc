"""Receipts measured on the embedded models: ``gammalens-tiny`` (the zoo's θ = 10⁵, T = 512 Llama) and MiniLM.

Each runs gammalens's full pipeline (probe, null-corrected fit) on a few windows of the embedded stdlib
corpus or random tokens — seconds on a CPU. Nothing is written and nothing is recorded in the atlas.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

TINY = "gammalens-tiny"


def _model_row(model: str, **settings) -> dict:
    from gammalens.measurement import measure

    return measure(model, record=False, **settings).model_fit


def tiny_pade_error(windows: int = 4, bootstrap: int = 20, seed: int = 0) -> dict[str, float]:
    """γ of gammalens-tiny at its training context T = 512 against γ_Padé(θ = 10⁵, T = 512).

    Returns
    -------
    dict
        ``gamma`` (measured, model level), ``gamma_pade``, ``rel_error_obs`` = |γ − γ_Padé|/γ and
        ``rel_error_pade`` = |γ − γ_Padé|/|γ_Padé| (the convention of ``fits.csv``).
    """
    m = _model_row(TINY, windows=windows, bootstrap=bootstrap, seed=seed)
    g, gp = float(m["gamma"]), float(m["gamma_pade"])
    return {"gamma": g, "gamma_pade": gp, "rel_error_obs": abs(g - gp) / abs(g), "rel_error_pade": abs(g - gp) / abs(gp)}


def tiny_delta_gamma(windows: int = 4, bootstrap: int = 20, seed: int = 0) -> dict[str, float]:
    """The induction probe on gammalens-tiny: Δγ = γ(stdlib text) − γ(random tokens), same settings.

    Returns
    -------
    dict
        ``delta_gamma``, ``gamma_text``, ``gamma_random``.
    """
    text = float(_model_row(TINY, corpus="stdlib", windows=windows, bootstrap=bootstrap, seed=seed)["gamma"])
    rand = float(_model_row(TINY, corpus="random", windows=windows, bootstrap=bootstrap, seed=seed)["gamma"])
    return {"delta_gamma": text - rand, "gamma_text": text, "gamma_random": rand}


def tiny_theta_rescale(factors: tuple[float, ...] = (1.0, 256.0), windows: int = 4, bootstrap: int = 20,
                       seed: int = 0) -> dict[str, float]:
    """The within-model θ-rescale control on gammalens-tiny: same weights, θ multiplied at inference.

    A copy of the shipped model directory gets ``rope_theta × factor`` (transformers rebuilds
    ``inv_freq`` from it) and is measured on stdlib text.

    Returns
    -------
    dict
        ``gamma_x{f}`` and ``sink_x{f}`` per factor f, ``delta_gamma`` (last factor − first) and
        ``sink_ratio`` (largest over smallest sink mass across the factors: 1 when flat).
    """
    from gammalens.models import resolve_model
    from gammalens.zoo.rescale import rescaled_copy

    src = resolve_model(TINY).path
    out: dict[str, float] = {}
    sinks = []
    with tempfile.TemporaryDirectory(prefix="gammalens-claims-") as tmp:
        for f in factors:
            dest = Path(tmp) / f"x{f:g}"
            rescaled_copy(src, f, dest)
            m = _model_row(str(dest), windows=windows, bootstrap=bootstrap, seed=seed)
            out[f"gamma_x{f:g}"], out[f"sink_x{f:g}"] = float(m["gamma"]), float(m["sink_mass"])
            sinks.append(float(m["sink_mass"]))
    out["delta_gamma"] = out[f"gamma_x{factors[-1]:g}"] - out[f"gamma_x{factors[0]:g}"]
    out["sink_ratio"] = max(sinks) / min(sinks)
    return out


def minilm_sinks(context: int = 64, windows: int = 4) -> dict[str, float]:
    """Sinks and massive activations of the real all-MiniLM-L6-v2 (Sun et al. 2024 criterion).

    Returns
    -------
    dict
        ``massive_count`` (coordinates with |h| ≥ 100 and ≥ 1000× the layer median), ``max_abs_h`` (the
        largest |h| of any layer), ``max_ratio`` (that |h| over its layer's median |h|), ``sink_rate`` (share of heads whose first key gets > 0.3 of the
        attention) and ``sink_mass_k1`` (mean attention on the first token).
    """
    from gammalens.sinks.run import measure_sinks

    r = measure_sinks("minilm", context=context, windows=windows, bootstrap=20, bos_variant=False)
    layer = int(r.massive.top_abs[:, 0].argmax())
    top = float(r.massive.top_abs[layer, 0])
    return {"massive_count": float(r.massive.count.sum()), "max_abs_h": top,
            "max_ratio": top / float(r.massive.median_abs[layer]),
            "sink_rate": r.sink_rate, "sink_mass_k1": float(r.baseline.mass_k(1).mean())}
