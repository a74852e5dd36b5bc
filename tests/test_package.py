"""The package stays light to import: torch, transformers, duckdb and pandas load only when used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "numpy", "duckdb", "pandas", "scipy")


def loaded_after(imports: str) -> list[str]:
    code = f"import json, sys; {imports}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_import_gammalens_and_its_cli_load_nothing_heavy() -> None:
    assert loaded_after("import gammalens, gammalens.cli") == []


@pytest.mark.parametrize("package", ["gammalens.atlas", "gammalens.report", "gammalens.sinks", "gammalens.theory"])
def test_subpackages_load_at_most_numpy(package: str) -> None:
    assert set(loaded_after(f"import {package}")) <= {"numpy"}
