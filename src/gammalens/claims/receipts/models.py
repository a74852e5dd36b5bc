"""Receipts measured on the embedded models: ``gammalens-tiny`` (the zoo's θ = 10⁵, T = 512 Llama) and MiniLM.

Each runs gammalens's full pipeline (probe, null-corrected fit) on a few windows of the embedded stdlib
corpus or random tokens — seconds on a CPU. Nothing is written and nothing is recorded in the atlas.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from gammalens.measuring.pipeline import measure
from gammalens.model.gguf_cache import converted_dir, read_gguf_info
from gammalens.model.load import resolve_model
from gammalens.sinks.run import measure_sinks
from gammalens.zoo.rescale import rescaled_copy

TINY = "gammalens-tiny"


def _model_row(model: str, **settings) -> dict:

    return measure(model, **settings).model_fit


def delta_gamma(model: str = TINY, context: int | None = None, windows: int = 4, bootstrap: int = 20,
                seed: int = 0) -> dict[str, float]:
    """The induction probe: Δγ = γ(stdlib text) − γ(random tokens), same model and settings.

    Returns
    -------
    dict
        ``delta_gamma``, ``gamma_text``, ``gamma_random``.
    """
    common = {"context": context, "windows": windows, "bootstrap": bootstrap, "seed": seed}
    text = float(_model_row(model, corpus="stdlib", **common)["gamma"])
    rand = float(_model_row(model, corpus="random", **common)["gamma"])
    return {"delta_gamma": text - rand, "gamma_text": text, "gamma_random": rand}


def model_directory(model: str) -> Path:
    """The local Hugging Face directory of a model argument (a GGUF model's converted, cached directory)."""

    src = resolve_model(model)
    if src.gguf_path is None:
        return Path(src.path)

    return converted_dir(src.gguf_path, read_gguf_info(src.gguf_path))


def rescaled_link_copy(src: Path, factor: float, dest: Path) -> None:
    """``dest``: ``src`` with RoPE θ × ``factor`` in its config; the other files are symlinks (no weight copy)."""

    only_config = dest.with_name(dest.name + "-config")
    only_config.mkdir(parents=True)
    shutil.copy2(src / "config.json", only_config / "config.json")
    rescaled_copy(only_config, factor, dest)
    for f in src.iterdir():
        if f.name != "config.json" and not (dest / f.name).exists():
            (dest / f.name).symlink_to(f.resolve())


def theta_rescale(model: str = TINY, factors: tuple[float, ...] = (1.0, 256.0), context: int | None = None,
                  windows: int = 4, bootstrap: int = 20, seed: int = 0) -> dict[str, float]:
    """The within-model θ-rescale control: same weights, RoPE θ multiplied at inference, measured on stdlib text.

    A copy of the model directory gets ``rope_theta × factor`` (transformers rebuilds ``inv_freq`` from it;
    the weights are symlinked, not copied). ``context`` None: the model's maximum positions (or 512).

    Returns
    -------
    dict
        ``gamma_x{f}`` and ``sink_x{f}`` per factor f, ``delta_gamma`` (last factor − first) and
        ``sink_ratio`` (largest over smallest sink mass across the factors: 1 when flat).
    """
    src = model_directory(model)
    out: dict[str, float] = {}
    sinks = []
    with tempfile.TemporaryDirectory(prefix="gammalens-claims-") as tmp:
        for f in factors:
            dest = Path(tmp) / f"x{f:g}"
            rescaled_link_copy(src, f, dest)
            m = _model_row(str(dest), context=context, windows=windows, bootstrap=bootstrap, seed=seed)
            out[f"gamma_x{f:g}"], out[f"sink_x{f:g}"] = float(m["gamma"]), float(m["sink_mass"])
            sinks.append(float(m["sink_mass"]))
    out["delta_gamma"] = out[f"gamma_x{factors[-1]:g}"] - out[f"gamma_x{factors[0]:g}"]
    out["sink_ratio"] = max(sinks) / min(sinks)
    return out


def pade_error(model: str = TINY, context: int | None = None, windows: int = 4, bootstrap: int = 20,
               seed: int = 0) -> dict[str, float]:
    """γ of ``model`` on stdlib text at ``context`` against γ_Padé(θ, T = context).

    Returns
    -------
    dict
        ``gamma`` (measured, model level), ``r2``, ``sink_mass``, ``gamma_pade``, ``rel_error_obs`` =
        |γ − γ_Padé|/γ and ``rel_error_pade`` = |γ − γ_Padé|/|γ_Padé| (the convention of ``fits.csv``).
    """
    m = _model_row(model, context=context, windows=windows, bootstrap=bootstrap, seed=seed)
    g, gp = float(m["gamma"]), float(m["gamma_pade"])
    return {"gamma": g, "r2": float(m["r2"]), "sink_mass": float(m["sink_mass"]), "gamma_pade": gp,
            "rel_error_obs": abs(g - gp) / abs(g), "rel_error_pade": abs(g - gp) / abs(gp)}


def sinks_and_massive(model: str = "minilm", context: int = 64, windows: int = 4, ablate: str = "zero") -> dict[str, float]:
    """Sinks and massive activations of ``model`` (Sun et al. 2024 criterion), and the ablation's effect.

    Returns
    -------
    dict
        ``massive_count`` (coordinates with |h| ≥ 100 and ≥ 1000× the layer median), ``max_abs_h`` (the
        largest |h| of any layer), ``max_ratio`` (that |h| over its layer's median |h|), ``sink_rate`` (share
        of heads whose first key gets > 0.3 of the attention), ``sink_mass_k1`` (mean attention on the first
        token) and, when there was something to ablate, ``sink_mass_k1_ablated`` and ``delta_sink`` (ablated
        − baseline) with the massive activations set to zero (``ablate='zero'``) or their mean.
    """

    r = measure_sinks(model, context=context, windows=windows, bootstrap=20, bos_variant=False, ablate=ablate)
    layer = int(r.massive.top_abs[:, 0].argmax())
    top = float(r.massive.top_abs[layer, 0])
    out = {"massive_count": float(r.massive.count.sum()), "max_abs_h": top,
           "max_ratio": top / float(r.massive.median_abs[layer]), "sink_rate": r.sink_rate,
           "sink_mass_k1": float(r.baseline.mass_k(1).mean())}
    if r.ablated is not None:
        out["sink_mass_k1_ablated"] = float(r.ablated.mass_k(1).mean())
        out["delta_sink"] = out["sink_mass_k1_ablated"] - out["sink_mass_k1"]
    return out
