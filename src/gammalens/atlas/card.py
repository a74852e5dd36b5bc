"""The dataset card (README.md) written with an atlas export: schema, units and provenance.

Its YAML header declares one ``datasets`` config per table, so both
``load_dataset("parquet", data_files="data/fits.parquet")`` and ``load_dataset(export_dir, "fits")`` work.
"""

from __future__ import annotations

from gammalens.atlas.schema import DATA_TABLES, SCHEMA_VERSION, TABLES

TABLE_DOCS = {
    "models": "One row per model (identified by its weights): architecture facts from the run manifest.",
    "runs": "One row per measurement (`gammalens measure`): the manifest, verbatim in `manifest`, and the "
            "model-level result.",
    "fits": "One row per head (`scope = head`), per layer (heads pooled) and per model (all pooled) of each run: "
            "the run's fits.csv.",
    "fit_extras": "fits.csv columns outside run format 1 (e.g. predictions such as `gamma_pade`), one row per cell.",
    "profiles": "Decay profiles A(d) per (run, layer, head), sampled at every d ≤ 64 and 48 log-spaced distances "
                "per decade beyond: `null_corrected` = mass_cs / queries_cs (uniform attention is flat), "
                "`naive` = mass / pairs (biased by causal masking; kept to show the pitfall).",
    "reference_fits": "Published reference values (e.g. the book's γ atlas), one row per published row, with "
                      "provenance.",
}

COLUMN_DOCS = {
    "model_key": "model identity: `sha256:` + 16 hex of the weight-file hashes, else `id:<model id>`",
    "model_id": "hub id, local path or short name the model was measured as",
    "family": "leading word of the model name (Qwen2.5-7B → qwen)",
    "rope_theta": "RoPE base θ; empty without rotary positions",
    "created": "time the run finished (UTC)",
    "context": "tokens per window; distances reach context − 1 (tokens)",
    "sink_tokens": "number of leading key positions treated as attention sinks (tokens)",
    "gamma": "decay exponent γ of A(d) ∝ d^−γ (dimensionless)",
    "gamma_ci_low": "lower end of the 95% bootstrap CI of γ",
    "gamma_ci_high": "upper end of the 95% bootstrap CI of γ",
    "r2": "R² of the log-log fit (> 0.95 reliable, ≈ 0.85 coarse)",
    "gamma_mle": "discrete maximum-likelihood γ of the same profile",
    "fit_d_min": "first distance of the fit (tokens)",
    "fit_d_max": "last distance of the fit (tokens)",
    "phase": "A (γ < 1), B (γ > 1) or boundary (CI contains 1)",
    "sink_mass": "mean attention mass on the sink keys per query (probability)",
    "preferred_model": "power_law, exponential or power_law_cutoff (lowest AIC)",
    "delta_aic_exponential": "AIC(exponential) − AIC(power law) (nats); > 0 favours the power law",
    "delta_aic_cutoff": "AIC(power law with cutoff) − AIC(power law) (nats)",
    "r2_exponential": "R² of the exponential (log-linear) fit",
    "cutoff_lambda": "λ of A(d) ∝ d^−γ e^−λd (1/token)",
    "delta_r2_pow_exp": "R²(power law) − R²(exponential)",
    "name": "stable dotted key: layers.3.heads.5, layers.3 or model",
    "scope": "head, layer (heads pooled) or model (all heads pooled)",
    "estimator": "null: gammalens's null-corrected fit (every fits.csv row); taf: the book's estimator (row `taf`: "
                 "last query's weight on key 49 in windows of d + 50 tokens, OLS of ln A on ln d; not null-corrected)",
    "profiles.kind": "null_corrected or naive",
    "distance": "query–key distances d (tokens)",
    "profiles.value": "mean attention at each distance (probability per query; per query–key pair for `naive`)",
    "fit_extras.column_name": "the fits.csv column",
    "fit_extras.value": "the cell as a number (empty when text)",
    "fit_extras.text": "the cell as text (empty when a number)",
    "manifest": "the run's manifest.json: model weights sha256, corpus sha256, settings and versions — "
                "enough to re-run it with `gammalens verify`",
    "source": "the reference table's own source tag",
    "provenance": "where the reference row comes from",
    "file_sha256": "sha256 of the imported file",
    "line": "line of the row in the imported file (header = 1)",
}


def dataset_card(counts: dict[str, int], exported_at: str, version: str) -> str:
    """Markdown dataset card for an export with ``counts`` rows per table."""
    configs = "\n".join(f"- config_name: {t}\n  data_files: data/{t}.parquet" + ("\n  default: true" if t == "fits"
                                                                              else "") for t in DATA_TABLES)
    lines = [
        "---", "pretty_name: gammalens atlas", "tags:", "- attention", "- interpretability", "configs:", configs,
        "---", "", "# gammalens atlas export", "",
        f"Exported {exported_at} (UTC) by gammalens {version}; atlas schema v{SCHEMA_VERSION}. "
        f"{counts.get('runs', 0)} measured runs of {counts.get('models', 0)} models, "
        f"{counts.get('reference_fits', 0)} reference rows.", "",
        "## Provenance", "",
        "- `runs`, `fits`, `fit_extras`, `profiles`: measured by gammalens. Each run's `manifest` holds the "
        "sha256 of the model weights and of the token windows, every setting and every library version: "
        "`gammalens verify` re-runs it. γ is fitted per head on the null-corrected profile "
        "(uniform attention over visible keys gives γ ≈ 0); sinks are excluded from the tail and reported "
        "as `sink_mass`.",
        "- `reference_fits`: published values, imported with `gammalens atlas import-taf`; `provenance`, "
        "`file_name`, `file_sha256` and `line` say where each row comes from.", "",
        "## Loading", "",
        "```python",
        "from datasets import load_dataset",
        'fits = load_dataset("parquet", data_files="data/fits.parquet")["train"]',
        "```", "",
        "or `gammalens atlas import DIR` to merge it into your own atlas.", "",
        "## Tables", "",
    ]
    for table in DATA_TABLES:
        lines += [f"### {table} ({counts.get(table, 0)} rows)", "", TABLE_DOCS[table], "",
                  "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{c}` | {t} | {COLUMN_DOCS.get(f'{table}.{c}', COLUMN_DOCS.get(c, ''))} |"
                  for c, t in TABLES[table].items()]
        lines.append("")
    return "\n".join(lines)
