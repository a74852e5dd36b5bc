"""The terminal summary of ``gammalens sinks``: per-layer table, the sink's token, massive activations,
the BOS and ablation comparisons, γ ⟂ sink, and the heads with the strongest sinks."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from gammalens import terminal
from gammalens.runs.encode import to_jsonable
from gammalens.sinks.correlation import Correlation
from gammalens.sinks.result import SinkResult


def _f(x: Any, nd: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def _n(n: int, noun: str) -> str:
    """``1 head``, ``2 heads``: a count with its noun in the singular or the plural."""
    n = int(n)
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _g(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.3g}"


def print_sinks(result: SinkResult, *, heads: int = 12, models: Correlation | None = None,
                console: Any = None) -> None:
    """Print a rich summary of a :class:`SinkResult`.

    Parameters
    ----------
    result : SinkResult
        What :func:`~gammalens.sinks.measure_sinks` returned.
    heads : int
        Rows of the per-head table, strongest sinks (peak key share) first; 0: every head.
    models : Correlation, optional
        γ ⟂ sink across the atlas's models, printed when given.
    """
    from rich.table import Table


    console = console or terminal.console()
    b, m, eps, k = result.baseline, result.massive, result.eps, result.sink_k
    man = result.measurement.manifest if result.measurement is not None else None
    if man is not None:
        arch, corpus = man["model"]["arch"], man["corpus"]
        console.print(f"[bold]{result.model}[/] · {arch['model_type']} · {arch['n_layers']} layers × "
                      f"{arch['n_heads']} heads · {'causal' if arch['causal'] else 'bidirectional'} · corpus "
                      f"{corpus['name']} · {corpus['n_windows']} windows × {b.context} tokens")
    console.print(f"sink = attention on the first k tokens per query (k = {', '.join(map(str, b.ks))}); "
                  f"α₀ = mean attention the first token receives; sink rate = heads with α₀ > {eps:g} "
                  "(Gu et al. 2024); kept out of the γ fit")
    layers = result.layers()
    t = Table(title="per layer (heads averaged; γ pooled)", title_justify="left")
    cols = ["layer", "γ", *[f"sink k={kk}" for kk in b.ks], "α₀", "sink rate", "peak share", "sink on",
            "massive n", "max |h|"]
    if result.bos is not None:
        cols += [f"{result.bos.label.replace('_', ' ')}: sink k={k}"]
    if result.ablated is not None:
        cols += ["ablated: Δsink", "Δγ"]
    for c in cols:
        t.add_column(c, justify="left" if c == "sink on" else "right")
    for i, row in layers.iterrows():
        kinds = Counter(b.sink_kind[i])
        cells = [str(i), _f(row["gamma"]), *[_f(row[f"sink_mass_k{kk}"]) for kk in b.ks], _f(row["first_key_share"]),
                 _f(row["sink_rate"], 2), _f(row["peak_key_share"]), kinds.most_common(1)[0][0],
                 str(int(row["massive_count"])), _g(row["massive_max_abs"])]
        if result.bos is not None:
            cells.append(_f(row[f"sink_mass_k{k}_{result.bos.label}"]))
        if result.ablated is not None:
            cells += [_f(row["delta_sink_ablated"], sign=True), _f(row["delta_gamma_ablated"], sign=True)]
        t.add_row(*cells)
    console.print(t)

    n_heads = b.first_key_share.size
    tokens = Counter(zip(b.sink_token.ravel(), b.sink_kind.ravel(), strict=True)).most_common(3)
    console.print(f"[bold]sink rate {result.sink_rate:.2f}[/] ({int((b.first_key_share > eps).sum())}/"
                  f"{_n(n_heads, 'head')}) · sink mass k={k} {b.mass_k(k).mean():.3f} · sink token: "
                  + ", ".join(f"{tok!r} ({kind}) in {_n(n, 'head')}" for (tok, kind), n in tokens))
    console.print(_massive_line(result))
    console.print(f"BOS: {result.bos_note}" + (_variant_line(result, result.bos) if result.bos is not None else ""))
    if result.ablated is not None:
        mc = result.model_columns()
        where = ", ".join(f"layer {lay}: dims {sorted(d)}" for lay, d in m.arising().items())
        console.print(f"ablation ({result.settings['ablate']}, where they arise — {where}): "
                      f"{_n(sum(result.ablated_count), 'coordinate')} replaced · Δsink k={k} "
                      f"{_f(mc['delta_sink_ablated'], sign=True)} · Δγ {_f(mc['delta_gamma_ablated'], sign=True)} "
                      f"(model) · sink rate {result.sink_rate:.2f} → "
                      f"{float((result.ablated.first_key_share > eps).mean()):.2f}")
    elif result.settings.get("ablate"):
        console.print("ablation: no massive activations, nothing to ablate")
    console.print(f"γ ⟂ sink: {result.correlation}")
    if models is not None:
        console.print(f"across the atlas: {models}")
    if heads != 0:
        _head_table(result, heads, console)
    if result.run_dir is not None:
        files = ", ".join(sorted(p.name for p in result.run_dir.iterdir()))
        console.print(f"outputs: {result.run_dir}/ ({files})")


def _massive_line(result: SinkResult) -> str:
    m = result.massive
    crit = f"|h| ≥ {m.abs_threshold:g} and ≥ {m.ratio:g}× the median"
    if not m.any:
        i = int(max(range(len(m.top_abs)), key=lambda j: m.top_abs[j, 0]))
        return (f"massive activations: none ({crit}); largest |h| {_g(m.top_abs[i, 0])} at layer {i}, "
                f"{m.top_abs[i, 0] / m.median_abs[i]:.0f}× its median")
    sites = [s for s in m.sites if s["layer"] == m.first_layer]
    where = ", ".join(f"dim {s['dim']} at position {s['position']} (|h| ≤ {_g(s['max_abs'])}, "
                      f"{_n(s['n'], 'window')})"
                      for s in sites[:4]) + (" …" if len(sites) > 4 else "")
    return (f"massive activations ({crit}): {_n(m.count.sum(), 'coordinate')}, first at layer {m.first_layer}: "
            f"{where}" + (" — truncated: thresholds too low?" if m.truncated else ""))


def _variant_line(result: SinkResult, v: Any) -> str:
    b, k, eps = result.baseline, result.sink_k, result.eps
    moved = Counter(v.sink_kind.ravel()).most_common(2)
    return (f" → sink rate {result.sink_rate:.2f} → {float((v.first_key_share > eps).mean()):.2f}, sink k={k} "
            f"{b.mass_k(k).mean():.3f} → {v.mass_k(k).mean():.3f}, γ {_f(b.model_gamma)} → {_f(v.model_gamma)}; "
            "the sink then sits on " + ", ".join(f"{kind} ({_n(n, 'head')})" for kind, n in moved))


def _strongest(n: int) -> str:
    return "the strongest sink" if n == 1 else f"{n} strongest sinks"


def _head_table(result: SinkResult, heads: int, console: Any) -> None:
    from rich.table import Table

    df = result.to_pandas().sort_values("peak_key_share", ascending=False)
    if heads > 0:
        df = df.head(heads)
    k = result.sink_k
    title = "per head" + (f", {_strongest(len(df))}" if heads > 0 else "")
    t = Table(title=title, title_justify="left")
    extra = {}
    if result.bos is not None:
        extra[f"sink_mass_k{k}_{result.bos.label}"] = f"{result.bos.label.replace('_', ' ')}: k={k}"
    if result.ablated is not None:
        extra["delta_sink_ablated"] = "ablated: Δsink"
    for c in ["head", "γ", *[f"k={kk}" for kk in result.baseline.ks], "α₀", "peak", "position", "token", "kind",
              *extra.values()]:
        t.add_column(c, justify="left" if c in ("head", "token", "kind") else "right")
    for _, r in df.iterrows():
        t.add_row(r["name"], _f(r["gamma"]), *[_f(r[f"sink_mass_k{kk}"]) for kk in result.baseline.ks],
                  _f(r["first_key_share"]), _f(r["peak_key_share"]), str(r["sink_position"]), repr(r["sink_token"]),
                  f"{r['sink_kind']} ({r['sink_kind_share']:.0%})",
                  *[_f(r[c], sign=c.startswith("delta")) for c in extra])
    console.print(t)


def sinks_summary(result: SinkResult) -> dict:
    """The summary for scripts (``gammalens sinks --json``): run directory, model, the model-level sink columns
    and one row per layer. Non-finite numbers become ``null``."""

    return to_jsonable({"run_dir": str(result.run_dir) if result.run_dir is not None else None, "model": result.model,
                      "settings": result.settings, "model_columns": result.model_columns(),
                      "layers": result.layers().to_dict("records")})
