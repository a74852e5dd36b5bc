"""Receipts recomputed from the book's published γ atlas (the copy shipped in ``gammalens/atlas/reference``).

The table has 96 rows; some (model, corpus) measurements appear twice, under two source tags with the
same γ and R² (``e4_gamma`` and ``master``). A *measurement* here is a distinct (model, corpus, γ, R²):
79 of them. These receipts check the book's arithmetic on its own data; they cannot re-measure it.
"""

from __future__ import annotations

from typing import Any

from gammalens.atlas.taf import read_taf


def _measurements() -> list[dict[str, Any]]:

    seen, out = set(), []
    for r in read_taf():
        key = (r["model_id"], r["corpus"], r["gamma"], r["r2"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def r2_count(threshold: float = 0.95) -> dict[str, float]:
    """How many of the atlas's measurements have a log-log fit R² above ``threshold``.

    Returns
    -------
    dict
        ``above`` and ``measurements`` (distinct (model, corpus, γ, R²)), ``rows_above`` and ``rows``
        (every row of the file, duplicates included).
    """

    m, rows = _measurements(), read_taf()
    return {"above": float(sum(r["r2"] > threshold for r in m)), "measurements": float(len(m)),
            "rows_above": float(sum(r["r2"] > threshold for r in rows)), "rows": float(len(rows))}


def delta_gamma_text_random() -> dict[str, float]:
    """Δγ = γ_text − γ_random across the atlas (corpus 'mongo' is text), with its two-sided p-values.

    Returns
    -------
    dict
        ``p_student`` (two-sample t test, equal variances, over the distinct measurements: 44 text, 35
        random), ``p_welch`` (unequal variances), ``p_paired`` (paired t test over the 32 models measured
        on both, first row of each), ``mean_delta`` (mean text − mean random) and ``n_text``, ``n_random``.
    """
    import numpy as np
    from scipy import stats

    m = _measurements()
    text = np.array([r["gamma"] for r in m if r["corpus"] == "mongo"])
    rand = np.array([r["gamma"] for r in m if r["corpus"] == "random"])
    first: dict[tuple[str, str], float] = {}
    for r in m:
        first.setdefault((r["model_id"], r["corpus"]), r["gamma"])
    both = sorted({mid for mid, c in first if c == "mongo"} & {mid for mid, c in first if c == "random"})
    paired = stats.ttest_rel([first[(b, "mongo")] for b in both], [first[(b, "random")] for b in both])
    return {"p_student": float(stats.ttest_ind(text, rand).pvalue),
            "p_welch": float(stats.ttest_ind(text, rand, equal_var=False).pvalue),
            "p_paired": float(paired.pvalue), "mean_delta": float(text.mean() - rand.mean()),
            "n_text": float(len(text)), "n_random": float(len(rand))}


def coverage() -> dict[str, float]:
    """Models and families in the atlas (family: the leading word of the name, as ``gammalens atlas`` groups).

    Returns
    -------
    dict
        ``models`` (distinct model ids), ``name_families``, ``rope_models`` (models with a RoPE θ) and
        ``phase_a_share`` (share of the measurements with γ < 1).
    """

    rows = read_taf()
    m = _measurements()
    return {"models": float(len({r["model_id"] for r in rows})), "name_families": float(len({r["family"] for r in rows})),
            "rope_models": float(len({r["model_id"] for r in rows if r["rope_theta"] is not None})),
            "phase_a_share": sum(r["gamma"] < 1 for r in m) / len(m)}
