"""The self-contained HTML report: one file, inline SVG and CSS, a few lines of JS, no network.

A Content-Security-Policy forbids every external load, so the report provably opens offline. The page's
script only records errors (``window.onerror``, CSP violations, ``console.error``) into ``#gl-errors`` and
writes a sentinel into ``#gl-status`` once the figures are laid out; the browser test reads both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gammalens.atlas.store import AtlasError
from gammalens.errors import GammalensError
from gammalens.report.atlas_map import atlas_map, atlas_points
from gammalens.report.comparison import flagged_table, layer_chart, prediction_table, summary_table
from gammalens.report.decay import decay_overlay, decay_panels
from gammalens.report.distributions import gamma_histogram, quality_scatter
from gammalens.report.heatmaps import gamma_heatmap, has_retrieval, retrieval_heatmap, sink_heatmap
from gammalens.report.sinks_panel import sinks_panel
from gammalens.report.svg import esc, fmt
from gammalens.runs.reader import RunFiles, read_run
from gammalens.version import __version__

CSS = """
:root { --ink:#1b1b1b; --muted:#5f6368; --line:#e3e3e3; --bg:#fafaf8; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 64px; }
header.top { border-bottom:2px solid var(--ink); margin-bottom:18px; padding-bottom:8px; }
h1 { font-size:26px; margin:0 0 4px; } h2 { font-size:21px; margin:36px 0 8px; border-bottom:1px solid var(--line); }
h3 { font-size:16px; margin:24px 0 4px; } p { margin:6px 0; max-width:80ch; }
.sub, .note { color:var(--muted); font-size:13px; } .ok { color:#1b7f3b; }
nav a { margin-right:14px; font-size:14px; color:#0b57d0; text-decoration:none; }
.headline { font-size:18px; margin:10px 0 14px; padding:10px 14px; background:#fff; border-left:4px solid #0072b2; }
.facts { display:grid; grid-template-columns:repeat(auto-fill,minmax(260px,1fr)); gap:2px 24px; font-size:13.5px;
         background:#fff; border:1px solid var(--line); padding:10px 14px; }
.facts div.wide { grid-column:1 / -1; justify-content:flex-start; }
.facts div { display:flex; justify-content:space-between; gap:12px; border-bottom:1px dotted var(--line); }
.facts span:first-child { color:var(--muted); } .facts span:last-child { text-align:right; overflow-wrap:anywhere; }
.panels, .figrow { display:flex; flex-wrap:wrap; gap:10px; align-items:flex-start; }
svg { max-width:100%; height:auto; background:#fff; } .swatch, .colorbar { background:none; }
.legend { display:flex; flex-wrap:wrap; gap:4px 18px; font-size:13px; margin:6px 0 8px; }
.legend-item { display:inline-flex; align-items:center; gap:6px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; font-size:13.5px; background:#fff; margin:6px 0; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
th { background:#f0f0ee; } td.num { text-align:right; font-variant-numeric:tabular-nums; }
details summary { cursor:pointer; margin:6px 0; }
code { background:#f0f0ee; padding:1px 4px; border-radius:3px; font-size:13px; }
#gl-errors { color:#b00020; white-space:pre-wrap; }
footer { margin-top:40px; color:var(--muted); font-size:13px; }
"""

ERROR_TRAP = """
window.__glErrors = [];
(function () {
  function record(message) { window.__glErrors.push(String(message)); }
  window.__glRecord = record;
  window.addEventListener('error', function (e) { record('error: ' + (e.message || e.type)); }, true);
  window.addEventListener('unhandledrejection', function (e) { record('unhandled rejection: ' + e.reason); });
  document.addEventListener('securitypolicyviolation', function (e) {
    record('blocked load (offline report): ' + e.blockedURI); });
  var original = console.error;
  console.error = function () { record('console.error: ' + Array.prototype.join.call(arguments, ' '));
                                return original.apply(console, arguments); };
})();
"""

SENTINEL = """
(function () {
  var figures = document.querySelectorAll('svg.plot, svg.heatmap');
  var empty = 0;
  figures.forEach(function (svg) { var b = svg.getBoundingClientRect(); if (b.width < 1 || b.height < 1) empty++; });
  if (empty) window.__glRecord(empty + ' figure(s) laid out with zero size');
  function finish() {
    var status = document.getElementById('gl-status'), errors = document.getElementById('gl-errors');
    errors.textContent = window.__glErrors.join('\\n');
    errors.hidden = window.__glErrors.length === 0;
    status.setAttribute('data-figures', String(figures.length));
    status.setAttribute('data-status', window.__glErrors.length ? 'error' : 'ok');
  }
  finish();
  window.addEventListener('load', finish);
})();
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _labels(runs: list[RunFiles]) -> list[str]:
    labels = []
    for run in runs:
        corpus = (run.manifest.get("corpus") or {}).get("name") or "?"
        base = f"{run.model_id.split('/')[-1]} · {corpus}"
        labels.append(base if base not in labels else f"{base} · {run.run_id[-8:]}")
    return labels


def _facts(run: RunFiles) -> str:
    m, arch, s = run.manifest, run.arch, run.settings
    corpus = m.get("corpus") or {}
    timings, versions = m.get("timings") or {}, m.get("versions") or {}
    theta = fmt(run.rope_theta) if run.rope_theta else f"none ({arch.get('position_encoding') or '?'} positions)"
    pairs = [
        ("model", run.model_id), ("source", (m.get("model") or {}).get("source")), ("run id", run.run_id),
        ("finished (UTC)", m.get("created")), ("architecture", arch.get("model_type")),
        ("layers × heads", f"{run.n_layers} × {run.n_heads}"), ("KV heads", arch.get("n_kv_heads")),
        ("causal", arch.get("causal")), ("RoPE base θ", theta),
        ("parameters", fmt(arch["n_params"]) if arch.get("n_params") else None),
        ("corpus", corpus.get("spec") or corpus.get("name")),
        ("windows × tokens", f"{corpus.get('n_windows', s.get('windows'))} × {s.get('context')}"),
        ("sink tokens", s.get("sink_tokens")), ("fit range d (tokens)", s.get("fit_range") or
                                                 f"{run.model_fit.get('fit_d_min')}:{run.model_fit.get('fit_d_max')}"),
        ("bootstrap resamples", s.get("bootstrap")), ("dtype / device", f"{s.get('dtype')} / {s.get('device')}"),
        ("time total (s)", fmt(timings.get("total_s")) if timings.get("total_s") is not None else None),
        ("tokens / s", fmt(timings.get("tokens_per_s")) if timings.get("tokens_per_s") is not None else None),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    wide = {"run id", "versions", "corpus"}
    cells = "".join(f'<div{" class=wide" if k in wide else ""}><span>{esc(k)}</span><span>{esc(v)}</span></div>'
                    for k, v in pairs if v is not None)
    return f'<div class="facts">{cells}</div>'


def _headline(run: RunFiles) -> str:
    fit = run.model_fit
    words = {"A": "Phase A (γ < 1): attention looks far", "B": "Phase B (γ > 1): attention concentrates",
             "boundary": "at the Hagedorn boundary (the CI contains γ = 1)"}
    ci = (f" [95% CI {fmt(fit['gamma_ci_low'])}, {fmt(fit['gamma_ci_high'])}]"
          if fit.get("gamma_ci_low") is not None else "")
    sink = f" · sink mass {fmt(fit['sink_mass'])}" if fit.get("sink_mass") is not None else ""
    return (f'<div class="headline">γ = <b>{esc(fmt(fit["gamma"]))}</b>{esc(ci)} · R² {esc(fmt(fit.get("r2")))}'
            f" · {esc(words.get(str(fit.get('phase')), str(fit.get('phase'))))}{esc(sink)}</div>")


def _claims(links: Sequence[Any]) -> str:
    """The claims of the ledger a run's numbers bear on (γ_Padé error, Δγ, sink mass …), given as data."""
    items = "".join(f"<li><code>{esc(c.claim_id)}</code>: {esc(c.figure)} — book: {esc(c.book_figure)}; ledger "
                    f"verdict: {esc(c.verdict)}</li>" for c in links)
    return ('<h3>Claims this run bears on</h3><p class="sub">From the claims ledger: <code>gammalens claims show '
            f'ID</code> prints the evidence, docs/claims.md has them all.</p><ul class="claims">{items}</ul>'
            if links else "")


def _retrieval(run: RunFiles, uid: str) -> str:
    """The retrieval maps of a run measured with ``--retrieval``; nothing for other runs."""
    if not has_retrieval(run):
        return ""
    r = run.manifest.get("retrieval") or {}
    return ("<h3>Retrieval heads: induction and echo per head</h3>"
            f'<p class="sub">Random tokens x<sub>0</sub>…x<sub>L−1</sub> repeated twice (L = {esc(str(r.get("length")))}, '
            f'{esc(str(r.get("sequences")))} sequences, the first {esc(str(r.get("skip")))} second-copy queries left '
            "out): a second-copy query's mean attention on the token after its earlier copy (induction) and on the "
            "earlier copy itself (echo). The tooltip adds the far mass: the share of the head's non-sink mass on the "
            f'corpus beyond distance {esc(str(r.get("far_distance")))}.</p>'
            f'<div class="scroll">{retrieval_heatmap(run, uid + "-i", "induction")}</div>'
            f'<div class="scroll">{retrieval_heatmap(run, uid + "-e", "echo")}</div>')


def _run_section(run: RunFiles, k: int, label: str, single: bool, points: list[dict[str, Any]] | None,
                 links: Sequence[Any] = ()) -> str:
    uid = f"r{k}"
    parts = [f'<section id="run-{k}"><h2>{esc(label)}</h2>', _headline(run), _facts(run),
             "<h3>Decay profiles A(d), per layer</h3>",
             '<p class="sub">Log-log axes. The null-corrected profile counts only queries that see every '
             "distance up to the fit range's end, so uniform attention is flat there; a straight line of slope −γ "
             "is a power law. The naive mean over all query positions decays even for uniform attention "
             "(muted).</p>",
             decay_panels(run, uid),
             "<h3>γ per head</h3>", f'<div class="scroll">{gamma_heatmap(run, uid + "-g")}</div>',
             "<h3>Distribution of γ over heads</h3>", gamma_histogram([run], [label], uid + "-h"),
             "<h3>Sink mass per head</h3>",
             '<p class="sub">Attention on the first sink tokens, measured apart from the decay and kept out of '
             "the fit.</p>", f'<div class="scroll">{sink_heatmap(run, uid + "-s")}</div>',
             sinks_panel(run, uid + "-k"), _retrieval(run, uid),
             "<h3>Fit quality</h3>", quality_scatter(run, uid + "-q"), flagged_table(run),
             prediction_table(run)]
    if single:
        parts += ["<h3>On the atlas map</h3>", atlas_map([run], [label], points, uid + "-m")]
    parts.append(_claims(links))
    parts += [f'<p class="note">Receipt: <code>gammalens verify {esc(run.run_id)}</code> re-runs this '
              "measurement from its manifest and checks γ.</p></section>"]
    return "".join(parts)


def render_report(runs: list[RunFiles], points: list[dict[str, Any]] | None = None,
                  claim_links: Callable[[RunFiles], Sequence[Any]] | None = None) -> str:
    """The report's HTML text for ``runs`` (``points``: atlas map references, ``None`` when no atlas;
    ``claim_links``: a run → the claims it bears on, each with ``claim_id``, ``figure``, ``book_figure``,
    ``verdict``; ``None``: no claims section)."""

    labels = _labels(runs)
    single = len(runs) == 1
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#run-{k}">{esc(label)}</a>' for k, label in enumerate(labels))
    body = []
    if not single:
        nav = '<a href="#comparison">comparison</a>' + nav
        body += ['<section id="comparison"><h2>Comparison</h2>', summary_table(runs, labels),
                 "<h3>Per-layer γ</h3>", layer_chart(runs, labels, "c-layers"),
                 "<h3>Decay profiles</h3>", decay_overlay(runs, labels, "c-decay"),
                 "<h3>Distribution of γ over heads</h3>", gamma_histogram(runs, labels, "c-hist"),
                 "<h3>On the atlas map</h3>", atlas_map(runs, labels, points, "c-map"), "</section>"]
    body += [_run_section(run, k, labels[k], single, points, claim_links(run) if claim_links else ())
             for k, run in enumerate(runs)]
    title = f"gammalens report: {labels[0]}" if single else f"gammalens report: {len(runs)} runs"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<script>{ERROR_TRAP}</script>
<style>{CSS}</style></head>
<body><main>
<header class="top"><h1>{esc(title)}</h1>
<p class="sub">How attention decays with query–key distance, A(d) ∝ d^−γ, measured per head by gammalens
{esc(__version__)} · report written {esc(stamp)} · self-contained, opens offline.</p>
<nav>{nav}</nav></header>
<pre id="gl-errors" hidden></pre>
{"".join(body)}
<footer>Phase A (γ &lt; 1) looks far; Phase B (γ &gt; 1) concentrates; γ = 1 is the Hagedorn boundary. R² &gt; 0.95
is reliable, ≈ 0.85 coarse (<i>How Transformers Attend</i>, Marín 2026).
<div id="gl-status" data-status="pending"></div></footer>
</main><script>{SENTINEL}</script></body></html>
"""


def write_report(run_dirs: list[Path], out: Path, *, atlas: Path | str | None = None,
                 atlas_required: bool = True, claim_links: Callable[[RunFiles], Sequence[Any]] | None = None) -> Path:
    """Write the self-contained HTML report of one or several runs.

    Parameters
    ----------
    run_dirs : list of Path
        Run directories (only ``manifest.json``, ``fits.csv`` and ``profile.npz`` are read, so a run
        directory still being written by ``measure`` works).
    out : Path
        The HTML file to write (a directory: ``out/report.html``). Written atomically.
    atlas : Path, optional
        An atlas whose reference rows and other runs are drawn on the atlas map; ``None``: no atlas.
    atlas_required : bool
        When False, an atlas that is missing, busy or unreadable only costs the map its reference points
        (a warning is logged) instead of failing the report — for ``measure``, whose run must not be lost.
    claim_links : callable, optional
        A run → the claims of the ledger it bears on (:func:`gammalens.claims.links.links_for_run`);
        None: no claims section.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> write_report([Path("runs/minilm-20260101-000000-0123abcd")], Path("report.html"))  # doctest: +SKIP
    """
    if not run_dirs:
        raise GammalensError("no run directory given; pass one or more directories written by `gammalens measure`")
    runs = [read_run(d) for d in run_dirs]
    points = None
    if atlas is not None:
        try:
            points = atlas_points(atlas, {r.run_id for r in runs})
        except AtlasError as err:
            if atlas_required:
                raise
            logging.getLogger("gammalens.report").warning("atlas map without reference points: %s", err)
    html = render_report(runs, points, claim_links)
    out = Path(out)
    if out.is_dir():
        out = out / "report.html"
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(html, encoding="utf-8")
        os.replace(partial, out)
    except OSError as err:  # disk full, no permission, a file where a folder should be
        raise GammalensError(f"cannot write the report {out} ({err.strerror or err}); nothing was written") from None
    finally:
        partial.unlink(missing_ok=True)
    return out
