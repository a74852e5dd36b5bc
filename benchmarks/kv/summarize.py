"""Tables and Pareto plots (quality vs real KV bytes) from the head-to-head CSV (docs/kv.md).

    .venv/bin/python benchmarks/kv/summarize.py docs/kv_head_to_head.csv [more.csv …] --out docs

writes ``docs/kv_results.md`` (one table per task: mean score with a 95% interval, the paired difference
from the full cache on the same samples with its 95% interval, kept fraction, real MiB held, decode ms/token) and ``docs/kv_pareto_<task>.svg``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

COLORS = {"full": "#000000", "gamma_budget": "#d62728", "gamma_eps": "#ff7f0e", "streaming_llm": "#1f77b4",
          "snapkv": "#2ca02c", "expected_attention": "#9467bd", "adakv_expected_attention": "#8c564b",
          "duo_attention": "#e377c2", "tova": "#17becf", "knorm": "#bcbd22", "random": "#7f7f7f"}


def family(policy: str) -> str:
    return "gamma_eps" if policy.startswith("gamma_eps") else policy


def interval(scores: pd.Series, binary: bool) -> tuple[float, float, float]:
    """Mean and a 95% interval: Wilson for 0/1 scores, mean ± 1.96·s/√n otherwise."""
    n, m = len(scores), float(scores.mean())
    if n == 0:
        return math.nan, math.nan, math.nan
    if binary:
        z = 1.96
        centre = (m + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(m * (1 - m) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return m, centre - half, centre + half
    s = float(scores.std(ddof=1)) if n > 1 else math.nan
    return m, m - 1.96 * s / math.sqrt(n), m + 1.96 * s / math.sqrt(n)


def table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    binary = df["task"].iloc[0] != "nll"
    key = ["context", "sample", "depth"]
    full = df[df["policy"] == "full"].set_index(key)["score"]
    for (policy, ratio), g in df.groupby(["policy", "ratio"], sort=False):
        m, lo, hi = interval(g["score"], binary)
        delta = g.set_index(key)["score"] - full.reindex(g.set_index(key).index)
        dm, dlo, dhi = interval(delta.dropna(), False)
        rows.append({"policy": policy, "ratio": ratio, "n": len(g), "score": m, "ci_low": lo, "ci_high": hi,
                     "delta_vs_full": dm, "delta_ci_low": dlo, "delta_ci_high": dhi,
                     "kept_fraction": g["kept_fraction"].mean(), "held_MiB": g["held_bytes"].mean() / 2**20,
                     # what GammaWindowCache holds for the same windows: only the kept (unmasked) tokens
                     "gamma_cache_MiB": (g["kept_tokens"] * g["held_bytes"] / g["held_tokens"]).mean() / 2**20
                     if policy.startswith("gamma") else math.nan,
                     "decode_ms": 1000 * g["decode_s_per_token"].mean() if g["decode_s_per_token"].notna().any()
                     else math.nan})
    return pd.DataFrame(rows).sort_values(["ratio", "score"], ascending=[True, not binary])


def markdown(t: pd.DataFrame) -> str:
    """A Markdown table (no tabulate dependency); floats to 4 significant digits."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns)
    return head + "\n" + "\n".join("| " + " | ".join(cell(v) for v in row) + " |" for row in t.itertuples(index=False))


def matrix(t: pd.DataFrame) -> str:
    """Policies × ratios, each cell the mean score (the ε plans and the full cache on their own rows)."""
    fixed = t[~t["policy"].str.startswith("gamma_eps") & (t["policy"] != "full")]
    ratios = sorted(fixed["ratio"].unique())
    head = "| policy | " + " | ".join(f"r = {r:g}" for r in ratios) + " |\n|---|" + "---|" * len(ratios)
    body = []
    for policy, g in fixed.groupby("policy", sort=False):
        cells = {r: f"{v:.3g}" for r, v in zip(g["ratio"], g["score"], strict=True)}
        body.append(f"| {policy} | " + " | ".join(cells.get(r, "—") for r in ratios) + " |")
    for _, row in t[t["policy"].str.startswith("gamma_eps") | (t["policy"] == "full")].iterrows():
        body.append(f"| {row['policy']} (r = {row['ratio']:.2f}) | {row['score']:.3g} |" + " |" * (len(ratios) - 1))
    return head + "\n" + "\n".join(sorted(body, key=lambda b: (not b.startswith("| full"), b)))


def pareto_svg(t: pd.DataFrame, title: str, ylabel: str, path: Path) -> None:
    from gammalens.report.svg import Plot, Scale

    t = t.assign(held_MiB=t["gamma_cache_MiB"].fillna(t["held_MiB"]))  # γ policies: the bytes their cache holds
    xs = t["held_MiB"].tolist()
    ys = t["score"].tolist()
    lo_y, hi_y = min(ys), max(ys)
    pad = 0.05 * (hi_y - lo_y or 1.0)
    plot = Plot("kv", 720, 420, x=Scale(0, max(xs) * 1.05), y=Scale(lo_y - pad, hi_y + pad),
                xlabel="real KV bytes held after the prefill (MiB, fp32; γ: GammaWindowCache)", ylabel=ylabel, title=title)
    for fam, g in t.assign(fam=t["policy"].map(family)).groupby("fam"):
        g = g.sort_values("held_MiB")
        color = COLORS.get(fam, "#444")
        plot.line(g["held_MiB"].tolist(), g["score"].tolist(), stroke=color, width=1.2, opacity=0.7)
        plot.markers(g["held_MiB"].tolist(), g["score"].tolist(), fill=color, size=4,
                     titles=[f"{p} r={r}: {s:.3f}" for p, r, s in zip(g["policy"], g["ratio"], g["score"], strict=True)])
    for i, fam in enumerate(dict.fromkeys(t["policy"].map(family))):
        plot.label(max(xs) * 0.78, hi_y + pad - (i + 1) * (hi_y - lo_y + 2 * pad) / 16, fam, size=10)
        plot.markers([max(xs) * 0.76], [hi_y + pad - (i + 1) * (hi_y - lo_y + 2 * pad) / 16 + 0.004 * (hi_y - lo_y)],
                     fill=COLORS.get(fam, "#444"), size=4)
    path.write_text(plot.render())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args(argv)
    df = pd.concat([pd.read_csv(p) for p in args.csv], ignore_index=True)
    df = df.drop_duplicates(["task", "context", "sample", "depth", "query_aware", "policy", "ratio"])
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# KV head-to-head: results tables (generated by benchmarks/kv/summarize.py)", ""]
    # ε plans reach slightly different ratios at each context: one row per plan, at its mean ratio
    eps = df["policy"].str.startswith("gamma_eps")
    df.loc[eps, "ratio"] = df[eps].groupby("policy")["ratio"].transform("mean").round(3)
    groups = [((task, qa, "all"), d) for (task, qa), d in df.groupby(["task", "query_aware"])]
    groups += [((task, qa, c), d) for (task, qa, c), d in df.groupby(["task", "query_aware", "context"])
               if df[(df["task"] == task) & (df["query_aware"] == qa)]["context"].nunique() > 1]
    for (task, qa, ctx), d in groups:
        name = f"{task}{'_query_aware' if qa else ''}{'' if ctx == 'all' else f'_{ctx}'}"
        t = table(d)
        what = "mean NLL of the next 256 tokens (nats; lower is better)" if task == "nll" else "accuracy"
        contexts = ", ".join(str(c) for c in sorted(d["context"].unique()))
        n_inst = int((d["policy"] == "full").sum())
        lines += [f"## {name} — {what}; contexts {contexts}; {n_inst} instances (samples × needle depths); "
                  "95% intervals: Wilson for accuracy, normal for NLL and for paired differences", "",
                  matrix(t), "", markdown(t), ""]
        if ctx == "all":
            pareto_svg(t, f"{name}: quality vs real KV bytes", "NLL (nats)" if task == "nll" else "accuracy",
                       args.out / f"kv_pareto_{name}.svg")
    (args.out / "kv_results.md").write_text("\n".join(lines) + "\n")
    print(args.out / "kv_results.md")


if __name__ == "__main__":
    main()
