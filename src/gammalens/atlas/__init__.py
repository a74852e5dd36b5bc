"""The atlas: every measurement stored in an embedded DuckDB database, compared across models and
against the published γ atlas, and shared as Parquet files with a dataset card (docs/atlas.md).

Importing this package loads neither DuckDB nor pandas; they load when an atlas is opened.

>>> from gammalens.atlas import record_run, compare
>>> record_run("runs/minilm-20260101-000000-0123abcd")        # doctest: +SKIP
>>> compare(["minilm", "pythia-70m"]).layers                   # doctest: +SKIP
"""

from gammalens.atlas.compare import Comparison, compare, layer_table, list_entries, select
from gammalens.atlas.exchange import export_atlas, import_atlas
from gammalens.atlas.record import record_run
from gammalens.atlas.store import AtlasBusyError, AtlasError, connect, default_atlas_path
from gammalens.atlas.taf import import_taf

__all__ = [
    "AtlasBusyError",
    "AtlasError",
    "Comparison",
    "compare",
    "connect",
    "default_atlas_path",
    "export_atlas",
    "import_atlas",
    "import_taf",
    "layer_table",
    "list_entries",
    "record_run",
    "select",
]
