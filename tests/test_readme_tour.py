"""Every ``$ gammalens …`` line of the README runs as written, in order, on a fresh folder and a fresh atlas.

The lines are read from the README's ``console`` blocks (comments after ``#`` dropped), run through bash in a
temporary folder that holds a copy of ``examples/`` (what a fresh clone has beside the README), with
``GAMMALENS_ATLAS`` pointing at a new file. Each must exit 0 and print something.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tour_lines() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ gammalens"):
                lines.append(re.sub(r"\s+#.*$", "", line[2:]).strip())
    return lines


def test_the_tour_is_found() -> None:
    lines = tour_lines()
    assert len(lines) >= 8 and lines[0] == "gammalens measure"
    assert any(line.startswith("gammalens atlas compare") for line in lines)


@pytest.mark.slow
def test_every_tour_line_runs_in_order(tmp_path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "GAMMALENS_ATLAS": str(tmp_path / "atlas.duckdb"),
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in tour_lines():
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{line!r} exited {done.returncode}: {done.stderr.strip()[-500:]}"
        assert done.stdout.strip(), f"{line!r} printed nothing"
