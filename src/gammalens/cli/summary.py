"""The terminal summary of a measurement: per-layer γ and R², phase counts, sink mass, model γ with CI."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


def _f(x: Any, nd: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def print_summary(result: Any, console: Any = None) -> None:
    """Print a rich summary of a :class:`~gammalens.measuring.pipeline.MeasureResult`."""
    from rich.table import Table

    from gammalens import terminal

    console = console or terminal.console()
    man, fits = result.manifest, result.fits
    arch, s = man["model"]["arch"], man["settings"]
    heads = [r for r in fits if r["scope"] == "head"]
    layers = [r for r in fits if r["scope"] == "layer"]
    m = result.model_fit
    console.print(
        f"[bold]{man['model']['id']}[/] · {arch['model_type']} · {arch['n_layers']} layers × {arch['n_heads']} heads "
        f"({arch['n_kv_heads']} KV) · {'causal' if arch['causal'] else 'bidirectional'} · "
        f"positions: {arch['position_encoding']}" + (f" θ={arch['rope_theta']:g}" if arch["rope_theta"] else "")
    )
    console.print(f"corpus {man['corpus']['name']} · {man['corpus']['n_windows']} windows × {s['context']} tokens · "
                  f"fit d∈[{s['fit_range'].replace(':', ', ')}] · sink tokens {s['sink_tokens']} · "
                  f"{man['timings']['tokens_per_s']:,.0f} tok/s")
    t = Table(title="per layer (heads pooled)", title_justify="left")
    for col in ("layer", "γ", "95% CI", "R²", "phase", "heads A/≈1/B", "sink mass", "best law"):
        t.add_column(col, justify="right" if col not in ("phase", "best law") else "left")
    for r in layers:
        c = Counter(h["phase"] for h in heads if h["layer"] == r["layer"])
        t.add_row(str(r["layer"]), _f(r["gamma"]), f"[{_f(r['gamma_ci_low'])}, {_f(r['gamma_ci_high'])}]",
                  _f(r["r2"]), r["phase"], f"{c['A']}/{c['boundary']}/{c['B']}", _f(r["sink_mass"]),
                  r["preferred_model"])
    console.print(t)
    c = Counter(h["phase"] for h in heads)
    console.print(f"heads: Phase A {c['A']} · boundary {c['boundary']} · Phase B {c['B']}"
                  + (f" · undetermined {c['undetermined']}" if c["undetermined"] else ""))
    console.print(f"[bold]model γ = {_f(m['gamma'])}[/] (95% CI {_f(m['gamma_ci_low'])}–{_f(m['gamma_ci_high'])}, "
                  f"R² {_f(m['r2'])}, MLE {_f(m['gamma_mle'])}) · phase {m['phase']} · sink mass {_f(m['sink_mass'])}")
    if m.get("ci_note"):  # too few windows for the bootstrap (fit.bootstrap.few_windows_note): one line, never wrapped
        console.print(f"[yellow]note:[/] {m['ci_note']}", soft_wrap=True, highlight=False)
    theory = f"KV window D_f(ε={s['eps']}) = {m['D_f']} tokens (empirical, d ≤ {s['fit_range'].split(':')[1]}: " \
             f"{m['D_f_empirical']})"
    if m.get("gamma_pade") is not None:
        theory += (f" · γ_Padé(θ={arch['rope_theta']:g}, T={s['context']}) = {_f(m['gamma_pade'])}, "
                   f"error {_f(m['gamma_pade_rel_error'], 2)} · regime {m['regime']}")
    console.print(theory)
    if man.get("taf"):
        from gammalens.taf.alongside import summary_line

        console.print(summary_line(man["taf"], m["gamma"]))
    from gammalens.claims.links import claims_line, related_claims

    console.print(claims_line(related_claims(m, man["corpus"]["name"], man.get("taf"))))
    if result.run_dir is not None:
        files = ", ".join(sorted(p.name for p in result.run_dir.iterdir()))
        console.print(f"outputs: {result.run_dir}/ ({files})")
        layout = man.get("profile_layout", "full")
        if layout != "full":  # say so when the stored profile is binned beyond E (docs/run_format.md)
            size = (result.run_dir / "profile.npz").stat().st_size / 2**20
            console.print(f"profile.npz: {layout} layout, {size:.1f} MiB (distances beyond "
                          f"{layout.partition(':')[2]} stored as log-spaced bin sums; fits use the exact sums)")


def summary_dict(result: Any) -> dict:
    """The summary for scripts (``gammalens measure --json``): run directory, model, settings, the model's
    result and one row per layer. Non-finite numbers become ``null``.

    >>> json.dumps(summary_dict(result))          # doctest: +SKIP
    """
    from gammalens.runs.encode import to_jsonable

    man = result.manifest
    keep = ("name", "layer", "gamma", "gamma_ci_low", "gamma_ci_high", "r2", "phase", "sink_mass", "preferred_model")
    return to_jsonable({
        "run_dir": str(result.run_dir) if result.run_dir is not None else None,
        # settings.model is None for the default model: report the model measured (the manifest's model.id)
        "model": man["model"]["id"], "corpus": man["corpus"]["name"],
        "settings": man["settings"] | {"model": man["settings"].get("model") or man["model"]["id"]},
        "result": man["result"], "model_fit": result.model_fit,
        "layers": [{k: r.get(k) for k in keep} for r in result.fits if r["scope"] == "layer"],
        **({"taf": man["taf"]} if man.get("taf") else {}),  # the book's estimator, with --estimator taf
    })
