"""The atlas schema: tables, their column types, the version stamp and the migrations between versions.

Version history
---------------
v0
    Pre-release layout: no ``profiles`` table; extra ``fits.csv`` columns kept as one JSON text column
    ``fits.extras``. Kept here (``SCHEMA_V0``) because the v0 → v1 migration and its test need it.
v1
    ``fit_extras`` (one row per extra column, so new predicted quantities need no schema change) and
    ``profiles`` (sampled decay profiles).
v2
    ``fits.estimator``: ``'null'`` (gammalens's null-corrected estimator: every row of ``fits.csv``) or
    ``'taf'`` (the book's estimator, :mod:`gammalens.taf`: one row named ``taf`` per run measured with
    ``--estimator taf``). Older rows become ``'null'``.
v3
    ``fits.echo``, ``fits.induction``, ``fits.far_mass``: the retrieval scores of head rows measured with
    ``gammalens measure --retrieval`` (docs/retrieval.md); NULL elsewhere and in older rows.

A migration is a function ``(connection) -> None`` registered in :data:`MIGRATIONS` under the version it
upgrades *from*; :func:`migrate` applies them in order inside the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 3
ATLAS_FORMAT = "gammalens.atlas"

# table -> {column: DuckDB type}; the order is the column order of the table and of its Parquet export.
TABLES: dict[str, dict[str, str]] = {
    "meta": {"key": "VARCHAR", "value": "VARCHAR"},
    "models": {
        "model_key": "VARCHAR",             # 'sha256:<16 hex>' of the weight hashes, else 'id:<model id>'
        "model_id": "VARCHAR",
        "family": "VARCHAR",                # leading word of the name: Qwen2.5-7B -> qwen
        "model_type": "VARCHAR",
        "architectures": "VARCHAR",         # JSON list
        "n_layers": "INTEGER",
        "n_heads": "INTEGER",
        "n_kv_heads": "INTEGER",
        "head_dim": "INTEGER",
        "hidden_size": "INTEGER",
        "causal": "BOOLEAN",
        "position_encoding": "VARCHAR",     # rope / learned / none
        "rope_theta": "DOUBLE",
        "rope_scaling": "VARCHAR",          # JSON
        "partial_rotary_factor": "DOUBLE",
        "max_positions": "BIGINT",
        "sliding_window": "BIGINT",
        "n_params": "BIGINT",
        "arch": "VARCHAR",                  # manifest model.arch, JSON
        "weights_sha256": "VARCHAR",        # JSON {file: sha256}
    },
    "runs": {
        "run_id": "VARCHAR",
        "model_key": "VARCHAR",
        "model_id": "VARCHAR",
        "created": "TIMESTAMP",             # UTC
        "corpus": "VARCHAR",
        "corpus_spec": "VARCHAR",
        "corpus_sha256": "VARCHAR",
        "n_windows": "INTEGER",
        "n_tokens": "BIGINT",
        "context": "INTEGER",               # tokens per window
        "sink_tokens": "INTEGER",
        "rope_theta": "DOUBLE",
        "gamma": "DOUBLE",
        "gamma_ci_low": "DOUBLE",
        "gamma_ci_high": "DOUBLE",
        "r2": "DOUBLE",
        "phase": "VARCHAR",
        "sink_mass": "DOUBLE",
        "gammalens_version": "VARCHAR",
        "manifest": "VARCHAR",              # manifest.json, verbatim JSON
        "content_sha256": "VARCHAR",        # of manifest.json + fits.csv + profile.npz
        "recorded_at": "TIMESTAMP",         # UTC
    },
    "fits": {
        "run_id": "VARCHAR",
        "name": "VARCHAR",                  # layers.3.heads.5 / layers.3 / model
        "scope": "VARCHAR",
        "layer": "INTEGER",
        "head": "INTEGER",
        "gamma": "DOUBLE",
        "gamma_ci_low": "DOUBLE",
        "gamma_ci_high": "DOUBLE",
        "r2": "DOUBLE",
        "gamma_mle": "DOUBLE",
        "method": "VARCHAR",
        "fit_d_min": "INTEGER",
        "fit_d_max": "INTEGER",
        "phase": "VARCHAR",
        "sink_mass": "DOUBLE",
        "preferred_model": "VARCHAR",
        "delta_aic_exponential": "DOUBLE",
        "delta_aic_cutoff": "DOUBLE",
        "r2_exponential": "DOUBLE",
        "cutoff_lambda": "DOUBLE",
        "n_docs": "INTEGER",
        "estimator": "VARCHAR",             # null (null-corrected, ours) or taf (the book's); v2
        "echo": "DOUBLE",                   # retrieval scores of head rows (--retrieval), else NULL; v3
        "induction": "DOUBLE",
        "far_mass": "DOUBLE",
    },
    "fit_extras": {
        "run_id": "VARCHAR",
        "name": "VARCHAR",
        "column_name": "VARCHAR",           # a fits.csv column outside format 1, e.g. gamma_pade
        "value": "DOUBLE",                  # the cell as a number, NULL when it is text
        "text": "VARCHAR",                  # the cell as text, NULL when it is a number
    },
    "profiles": {
        "run_id": "VARCHAR",
        "layer": "INTEGER",
        "head": "INTEGER",
        "kind": "VARCHAR",                  # null_corrected: mass_cs/queries_cs; naive: mass/pairs
        "distance": "INTEGER[]",            # tokens; all d <= 64, then 48 log-spaced per decade
        "value": "DOUBLE[]",                # mean attention at each distance (probability)
    },
    "reference_fits": {
        "ref_id": "VARCHAR",                # sha256 of dataset + the row's cells, 16 hex
        "dataset": "VARCHAR",               # taf_gamma_atlas
        "model_id": "VARCHAR",
        "family": "VARCHAR",
        "corpus": "VARCHAR",
        "rope_theta": "DOUBLE",             # NULL: no RoPE
        "gamma": "DOUBLE",
        "r2": "DOUBLE",
        "gamma_ci_low": "DOUBLE",
        "gamma_ci_high": "DOUBLE",
        "delta_r2_pow_exp": "DOUBLE",       # R²(power) − R²(exponential)
        "source": "VARCHAR",                # the published table's own source tag (e4_gamma, master)
        "provenance": "VARCHAR",            # human-readable origin
        "file_name": "VARCHAR",
        "file_sha256": "VARCHAR",
        "line": "INTEGER",                  # line in the imported file (header = 1)
        "imported_at": "TIMESTAMP",         # UTC
    },
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "meta": ("key",),
    "models": ("model_key",),
    "runs": ("run_id",),
    "fits": ("run_id", "name"),
    "fit_extras": ("run_id", "name", "column_name"),
    "profiles": ("run_id", "layer", "head", "kind"),
    "reference_fits": ("ref_id",),
}

# the tables that hold data (everything but meta), in the order they are written and exported
DATA_TABLES = ("models", "runs", "fits", "fit_extras", "profiles", "reference_fits")

VIEWS = {
    "head_fits": "SELECT * FROM fits WHERE scope = 'head'",
    "layer_fits": "SELECT * FROM fits WHERE scope = 'layer'",
    "model_fits": "SELECT * FROM fits WHERE scope = 'model' AND estimator = 'null'",
    "taf_fits": "SELECT * FROM fits WHERE estimator = 'taf'",   # the book's estimator, next to model_fits
}


def create_table_sql(table: str, columns: dict[str, str] | None = None) -> str:
    """``CREATE TABLE`` statement of ``table`` (current schema unless ``columns`` is given)."""
    columns = TABLES[table] if columns is None else columns
    body = ", ".join(f'"{c}" {t}' for c, t in columns.items())
    key = ", ".join(f'"{c}"' for c in PRIMARY_KEYS[table])
    return f'CREATE TABLE "{table}" ({body}, PRIMARY KEY ({key}))'


def create_schema(con: Any) -> None:
    """Create every table and view of the current schema and stamp ``meta`` (inside a transaction)."""
    for table in TABLES:
        con.execute(create_table_sql(table))
    create_views(con)
    con.execute("INSERT INTO meta VALUES ('format', ?), ('schema_version', ?)", [ATLAS_FORMAT, str(SCHEMA_VERSION)])


def create_views(con: Any) -> None:
    for view, query in VIEWS.items():
        con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {query}')


def drop_views(con: Any) -> None:
    for view in VIEWS:
        con.execute(f'DROP VIEW IF EXISTS "{view}"')


# --- v0, kept for its migration -------------------------------------------------------------------
FITS_V3_ADDED = ("echo", "induction", "far_mass")
FITS_V2 = {c: t for c, t in TABLES["fits"].items() if c not in FITS_V3_ADDED}  # fits columns of v2
FITS_V1 = {c: t for c, t in FITS_V2.items() if c != "estimator"}  # fits columns of v0 and v1

SCHEMA_V0: dict[str, dict[str, str]] = {
    "meta": TABLES["meta"],
    "models": TABLES["models"],
    "runs": TABLES["runs"],
    "fits": {**FITS_V1, "extras": "VARCHAR"},   # JSON {column: value}
    "reference_fits": TABLES["reference_fits"],
}


def create_schema_v0(con: Any) -> None:
    """Create a v0 atlas (for the migration test and for reading old exports)."""
    for table, columns in SCHEMA_V0.items():
        con.execute(create_table_sql(table, columns))
    con.execute("INSERT INTO meta VALUES ('format', ?), ('schema_version', '0')", [ATLAS_FORMAT])


def _migrate_0_to_1(con: Any) -> None:
    """v0 → v1: move ``fits.extras`` JSON into ``fit_extras`` rows; add ``profiles`` (empty for old runs)."""
    con.execute(create_table_sql("fit_extras"))
    rows = con.execute("SELECT run_id, name, extras FROM fits WHERE extras IS NOT NULL").fetchall()
    for run_id, name, extras in rows:
        for column, value in json.loads(extras).items():
            number = float(value) if isinstance(value, (int, float)) else None
            text = None if number is not None else str(value)
            con.execute("INSERT INTO fit_extras VALUES (?, ?, ?, ?, ?)", [run_id, name, column, number, text])
    # DuckDB cannot drop a column of a table with a primary key in place: rebuild the table.
    columns = ", ".join(f'"{c}"' for c in FITS_V1)
    con.execute(f"CREATE TABLE fits_v1 AS SELECT {columns} FROM fits")
    con.execute("DROP TABLE fits")
    con.execute(create_table_sql("fits", FITS_V1))
    con.execute(f"INSERT INTO fits SELECT {columns} FROM fits_v1")
    con.execute("DROP TABLE fits_v1")
    con.execute(create_table_sql("profiles"))


def _migrate_1_to_2(con: Any) -> None:
    """v1 → v2: ``fits.estimator``, ``'null'`` for every existing row (they are all null-corrected fits)."""
    con.execute("ALTER TABLE fits ADD COLUMN estimator VARCHAR DEFAULT 'null'")


def _migrate_2_to_3(con: Any) -> None:
    """v2 → v3: the retrieval columns of ``fits``, NULL for every existing row (none was measured)."""
    for column in FITS_V3_ADDED:
        con.execute(f'ALTER TABLE fits ADD COLUMN "{column}" DOUBLE')


MIGRATIONS: dict[int, Callable[[Any], None]] = {0: _migrate_0_to_1, 1: _migrate_1_to_2, 2: _migrate_2_to_3}

# columns added since v1, with the SQL value older rows take: lets an import read a v1 or v2 export
ADDED_COLUMNS: dict[tuple[str, str], str] = {("fits", "estimator"): "'null'",
                                             **{("fits", c): "NULL" for c in FITS_V3_ADDED}}
OLDEST_IMPORTABLE = 1


def migrate(con: Any, from_version: int) -> None:
    """Upgrade an atlas from ``from_version`` to :data:`SCHEMA_VERSION` (call inside a transaction)."""
    drop_views(con)
    for version in range(from_version, SCHEMA_VERSION):
        MIGRATIONS[version](con)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version + 1)])
    create_views(con)
