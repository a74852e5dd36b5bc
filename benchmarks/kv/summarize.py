"""Tables, verdict inputs and Pareto plots (quality vs real KV bytes) from head-to-head CSVs (docs/kv.md).

    .venv/bin/python benchmarks/kv/summarize.py docs/kv_hybrid_smollm2.csv docs/kv_hybrid_qwen2.5-coder-0.5b.csv \\
        --out docs --name kv_hybrid

writes ``docs/<name>_results.md`` and ``docs/<name>_pareto_<model>_<task>.svg``. One table per (model, task,
query-aware or not, context) and one per (model, task) over all contexts. Every policy is a row of every table
(a dash where it was not run). Per row: n instances, the score with a 95% interval (Wilson for accuracy; a
bootstrap over instances for NLL), the paired difference from the full cache on the same instances with a 95%
bootstrap interval, tokens kept and **bytes really held** (MiB in per-context tables; % of the full cache's bytes
when contexts are pooled, so that a policy run only at long contexts is not made to look bigger than the full
cache), retrieval heads of the hybrid, and decode ms per token. A task whose full cache scores below
``--rank-floor`` (0.9) is reported but flagged *not ranked*.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

POLICIES = ["full", "gamma_budget", "gamma_eps0.05", "gamma_eps0.2", "hybrid_s0.5", "hybrid_s0.8",
            "hybrid_far_s0.5", "hybrid_random_s0.5", "gamma_ea", "hybrid_ea_s0.25", "hybrid_ea_s0.5", "hybrid_ea_uniform_s0.5", "streaming_llm", "snapkv", "expected_attention",
            "adakv_expected_attention", "duo_attention", "tova", "knorm", "random"]
COLORS = {"full": "#000000", "gamma_budget": "#d62728", "gamma_eps": "#ff7f0e", "hybrid": "#e6550d",
          "hybrid_ablation": "#fdae6b", "gamma_ea": "#843c39", "hybrid_ea": "#ad494a", "hybrid_ea_uniform": "#e7969c", "streaming_llm": "#1f77b4", "snapkv": "#2ca02c",
          "expected_attention": "#9467bd", "adakv_expected_attention": "#8c564b", "duo_attention": "#e377c2",
          "tova": "#17becf", "knorm": "#bcbd22", "random": "#7f7f7f"}
KEY = ["context", "sample", "depth"]
BOOT = 2000


def family(policy: str) -> str:
    if policy.startswith("gamma_eps"):
        return "gamma_eps"
    if policy.startswith(("hybrid_far", "hybrid_random")):
        return "hybrid_ablation"
    if policy.startswith(("gamma_ea", "hybrid_ea")):
        return policy.rsplit("_s", 1)[0]
    return "hybrid" if policy.startswith("hybrid") else policy


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of k successes in n trials."""
    if n == 0:
        return math.nan, math.nan
    m = k / n
    centre = (m + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(m * (1 - m) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def bootstrap(x: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of x (instances resampled with replacement)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(x), (BOOT, len(x)))
    means = x[idx].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def table(df: pd.DataFrame, pooled: bool) -> pd.DataFrame:
    """One row per (policy, ratio) of ``df`` (one model, task, query-aware setting; one or several contexts)."""
    binary = df["task"].iloc[0] != "nll"
    full = df[df["policy"] == "full"].set_index(KEY)
    full_bytes = full["held_bytes"]
    rows = []
    ratios = sorted(r for r in df["ratio"].unique() if r > 0 and not _is_eps_ratio(df, r))
    for policy in POLICIES + sorted(set(df["policy"]) - set(POLICIES)):
        g_all = df[df["policy"] == policy]
        pairs = [(policy, r, g) for r, g in g_all.groupby("ratio")] if len(g_all) else []
        if not pairs:
            for r in ([0.0] if policy == "full" or policy.startswith("gamma_eps") else ratios):
                rows.append({"policy": policy, "ratio": r, "n": 0})
            continue
        for _policy, ratio, g in pairs:
            s = g["score"].to_numpy(float)
            lo, hi = wilson(s.sum(), len(s)) if binary else bootstrap(s)
            gi = g.set_index(KEY)
            delta = (gi["score"] - full["score"].reindex(gi.index)).dropna().to_numpy(float)
            dlo, dhi = bootstrap(delta, seed=1)
            frac = (gi["held_bytes"] / full_bytes.reindex(gi.index)).mean()
            row = {"policy": policy, "ratio": ratio, "n": len(g), "score": s.mean(), "ci_low": lo, "ci_high": hi,
                   "delta_vs_full": delta.mean() if len(delta) else math.nan, "delta_ci_low": dlo,
                   "delta_ci_high": dhi, "kept_tokens_%": 100 * g["kept_fraction"].mean(),
                   "held_bytes_%": 100 * frac}
            if not pooled:
                row["held_MiB"] = g["held_bytes"].mean() / 2**20
            row["retrieval_heads"] = g["retrieval_heads"].mean() if "retrieval_heads" in g else math.nan
            row["decode_ms"] = 1000 * g["decode_s_per_token"].mean() if g["decode_s_per_token"].notna().any() \
                else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _is_eps_ratio(df: pd.DataFrame, r: float) -> bool:
    return bool(df[(df["ratio"] == r)]["policy"].str.startswith("gamma_eps").all())


def markdown(t: pd.DataFrame) -> str:
    """A Markdown table (no tabulate dependency); floats to 4 significant digits, a dash where not run."""
    def cell(v):
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    cols = list(t.columns)
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = []
    for row in t.itertuples(index=False):
        cells = [cell(v) for v in row]
        if row.n == 0:
            cells = [cells[0], cells[1], "0"] + ["—"] * (len(cols) - 3)
        body.append("| " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(body)


def best_press(t: pd.DataFrame, ratio: float, binary: bool, max_bytes: float | None = None) -> pd.Series | None:
    """The best kvpress policy at ``ratio`` (highest accuracy / lowest NLL) among the rows that ran, holding at
    most ``max_bytes`` (% of the full cache's bytes) if given."""
    ours = t["policy"].str.startswith(("gamma", "hybrid")) | (t["policy"] == "full")
    cand = t[~ours & (t["ratio"] == ratio) & (t["n"] > 0)]
    if max_bytes is not None:
        cand = cand[cand["held_bytes_%"] <= max_bytes + 1e-6]
    if cand.empty:
        return None
    return cand.sort_values("score", ascending=not binary).iloc[0]


def paired(df: pd.DataFrame, a: str, b: str, ratio: float) -> tuple[float, float, float, int]:
    """Mean of score(a) − score(b) over the instances both ran at ``ratio``, its 95% bootstrap interval, n."""
    pick = lambda p: df[(df["policy"] == p) & (df["ratio"] == ratio)].set_index(KEY)["score"]  # noqa: E731
    d = (pick(a) - pick(b)).dropna().to_numpy(float)
    lo, hi = bootstrap(d, seed=2)
    return (float(d.mean()) if len(d) else math.nan), lo, hi, len(d)


def verdict(t: pd.DataFrame, binary: bool, df: pd.DataFrame) -> list[str]:
    """One line per (ratio, our policy): against the best press holding no more bytes, and the best at any bytes,
    with the paired difference on the instances both ran (95% bootstrap interval)."""
    out = []
    for ratio in sorted(r for r in t["ratio"].unique() if r in (0.25, 0.5, 0.75, 0.875)):
        for name in ("hybrid_s0.5", "hybrid_s0.8", "hybrid_ea_s0.25", "hybrid_ea_s0.5", "hybrid_ea_uniform_s0.5", "gamma_ea",
                     "gamma_budget"):
            h = t[(t["policy"] == name) & (t["ratio"] == ratio) & (t["n"] > 0)]
            if h.empty:
                continue
            h = h.iloc[0]
            for label, bp in (("at ≤ its bytes", best_press(t, ratio, binary, h["held_bytes_%"])),
                              ("at any bytes", best_press(t, ratio, binary))):
                if bp is None:
                    continue
                diff, lo, hi, n = paired(df, name, bp["policy"], ratio)
                better = (lo > 0) if binary else (hi < 0)
                worse = (hi < 0) if binary else (lo > 0)
                word = "better" if better else "worse" if worse else "no significant difference"
                out.append(f"- r = {ratio:g}, {name} ({h['held_bytes_%']:.1f}% of the full bytes): {h['score']:.4g} vs "
                           f"the best press {label}, {bp['policy']} ({bp['held_bytes_%']:.1f}%): {bp['score']:.4g}; "
                           f"paired difference {diff:+.3g} [{lo:+.3g}, {hi:+.3g}] over {n} instances → {word}"
                           f"{'' if binary else ' (NLL: lower is better)'}")
    return out


def headline(df: pd.DataFrame, ratio: float) -> str:
    """Policies × (task, context) at ``ratio`` for one model: the score (NLL: paired Δ vs full, nats) and n."""
    cells = [(t, qa, c) for (t, qa, c), _ in df.groupby(["task", "query_aware", "context"])]
    head = ["policy", "bytes held (% of full)"] + [
        f"{'Δ NLL' if t == 'nll' else t}{' (query-aware)' if qa else ''} {c}" for t, qa, c in cells]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for policy in POLICIES:
        row, frac = [policy], []
        for t, qa, c in cells:
            d = df[(df["task"] == t) & (df["query_aware"] == qa) & (df["context"] == c)]
            g = d[(d["policy"] == policy) & ((d["ratio"] == ratio) | d["policy"].isin(["full"])
                                             | d["policy"].str.startswith("gamma_eps"))]
            if g.empty:
                row.append("—")
                continue
            full = d[d["policy"] == "full"].set_index(KEY)
            gi = g.set_index(KEY)
            frac.append((gi["held_bytes"] / full["held_bytes"].reindex(gi.index)).mean())
            if t == "nll":
                delta = (gi["score"] - full["score"].reindex(gi.index)).dropna()
                row.append(f"{delta.mean():+.3f} (n={len(delta)})")
            else:
                row.append(f"{g['score'].mean():.2f} (n={len(g)})")
        lines.append("| " + " | ".join([row[0], f"{100 * np.mean(frac):.1f}" if frac else "—", *row[1:]]) + " |")
    return "\n".join(lines)


def pareto_svg(t: pd.DataFrame, title: str, ylabel: str, path: Path) -> None:
    from gammalens.report.svg import Plot, Scale

    t = t[t["n"] > 0]
    xs, ys = t["held_bytes_%"].tolist(), t["score"].tolist()
    lo_y, hi_y = min(ys), max(ys)
    pad = 0.05 * (hi_y - lo_y or 1.0)
    plot = Plot("kv", 720, 420, x=Scale(0, max(105.0, max(xs) * 1.05)), y=Scale(lo_y - pad, hi_y + pad),
                xlabel="real KV bytes held after the prefill (% of the full cache)", ylabel=ylabel, title=title)
    fams = list(dict.fromkeys(t["policy"].map(family)))
    for fam in fams:
        g = t[t["policy"].map(family) == fam].sort_values("held_bytes_%")
        color = COLORS.get(fam, "#444")
        plot.line(g["held_bytes_%"].tolist(), g["score"].tolist(), stroke=color, width=1.2, opacity=0.7)
        plot.markers(g["held_bytes_%"].tolist(), g["score"].tolist(), fill=color, size=4,
                     titles=[f"{p} r={r}: {s:.3f}" for p, r, s in zip(g["policy"], g["ratio"], g["score"], strict=True)])
    step = (hi_y - lo_y + 2 * pad) / 18
    for i, fam in enumerate(fams):
        y = hi_y + pad - (i + 1) * step
        plot.label(86, y, fam, size=10)
        plot.markers([84], [y + 0.004 * (hi_y - lo_y)], fill=COLORS.get(fam, "#444"), size=4)
    svg = plot.render()  # inline-HTML markup: a file of its own needs the namespace to render as an image
    path.write_text(svg if "xmlns=" in svg else svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--name", default="kv_hybrid", help="prefix of the written files")
    ap.add_argument("--rank-floor", type=float, default=0.9, help="full-cache accuracy below which a task is not ranked")
    args = ap.parse_args(argv)
    frames = []
    for p in args.csv:
        d = pd.read_csv(p)
        if "model" not in d:
            d["model"] = "smollm2"
        if "retrieval_heads" not in d:
            d["retrieval_heads"] = np.nan
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)
    df["depth"] = df["depth"].fillna(-1)
    df = df.drop_duplicates(["model", "task", "context", "sample", "depth", "query_aware", "policy", "ratio"])
    eps = df["policy"].str.startswith("gamma_eps")  # ε plans reach their own ratio at each context: its mean
    df.loc[eps, "ratio"] = df[eps].groupby(["model", "policy"])["ratio"].transform("mean").round(3)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"# KV head-to-head: results tables (generated by benchmarks/kv/summarize.py from "
             f"{', '.join(p.name for p in args.csv)})", ""]
    for model, d in df.groupby("model", sort=False):
        for ratio in sorted(r for r in d["ratio"].unique() if r in (0.25, 0.5, 0.75, 0.875)):
            lines += [f"## {model} · every policy at r = {ratio:g} (ε plans at their own ratio)", "",
                      "Accuracy, or for NLL the paired difference from the full cache (nats/token); n instances.", "",
                      headline(d, ratio), ""]
    for (model, task, qa), d in df.groupby(["model", "task", "query_aware"], sort=False):
        binary = task != "nll"
        name = f"{task}{'_query_aware' if qa else ''}"
        what = "mean NLL of the next 256 tokens (nats; lower is better)" if not binary else "accuracy"
        contexts = sorted(d["context"].unique())
        full_score = d[d["policy"] == "full"]["score"].mean()
        ranked = not binary or full_score >= args.rank_floor
        setting = "query-aware (the question is in the compressed prefill)" if qa else "query-agnostic"
        lines += [f"## {model} · {name} — {what}; {setting}", ""]
        if not ranked:
            lines += [f"**Not ranked**: the full cache scores {full_score:.3f} < {args.rank_floor} on this task.", ""]
        for ctx in ([*contexts, None] if len(contexts) > 1 else contexts):
            sub = d if ctx is None else d[d["context"] == ctx]
            t = table(sub, pooled=ctx is None)
            n_inst = int((sub["policy"] == "full").sum())
            label = f"all contexts ({', '.join(map(str, contexts))})" if ctx is None else f"context {ctx}"
            lines += [f"### {model} · {name} · {label} — {n_inst} instances", "", markdown(t), ""]
            if ranked:
                v = verdict(t, binary, sub)
                if v:
                    lines += ["Hybrid vs the best press at equal ratio:", "", *v, ""]
            if ctx is None or len(contexts) == 1:
                pareto_svg(t, f"{model} · {name}: quality vs real KV bytes",
                           "NLL (nats)" if not binary else "accuracy",
                           args.out / f"{args.name}_pareto_{model}_{name}.svg")
    path = args.out / f"{args.name}_results.md"
    path.write_text("\n".join(lines) + "\n")
    print(path)


if __name__ == "__main__":
    main()
