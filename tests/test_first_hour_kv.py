"""Issue 25, the first hour: the KV classes the README names import from ``gammalens.kv``, lazily, and
``gammalens kv plan`` keeps its table whole when piped."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_import_gammalens_kv_stays_light() -> None:
    heavy = ("torch", "transformers", "kvpress", "numpy")
    out = run_python(f"import json, sys, gammalens.kv; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("name, module", [("GammaWindowCache", "cache"), ("SelectedCache", "selected")])
def test_the_caches_import_from_the_package_without_kvpress(name, module) -> None:
    # kvpress made unimportable: the caches need only torch and transformers
    out = run_python("import sys; sys.modules['kvpress'] = None\n"
                     f"from gammalens.kv import {name}\n"
                     f"from gammalens.kv.{module} import {name} as Direct\n"
                     f"assert {name} is Direct\n"
                     "print('kvpress' in sys.modules and sys.modules['kvpress'] is not None)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_gamma_window_press_without_kvpress_says_how_to_install_it() -> None:
    out = run_python("import sys; sys.modules['kvpress'] = None\n"
                     "try:\n"
                     "    from gammalens.kv import GammaWindowPress\n"
                     "except ImportError as err:\n"
                     "    print('ImportError:', err)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError:") and "pip install 'gammalens[kvpress]'" in out.stdout, out.stdout


def test_unknown_names_still_fail_as_usual() -> None:
    import gammalens.kv

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        gammalens.kv.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        from gammalens.kv import NoSuchThing  # noqa: F401
    assert {"GammaWindowCache", "GammaWindowPress", "SelectedCache"} <= set(dir(gammalens.kv))


@pytest.mark.skipif(importlib.util.find_spec("kvpress") is None, reason="kvpress (optional extra) not installed")
def test_gamma_window_press_imports_from_the_package_with_kvpress() -> None:
    from gammalens.kv import GammaWindowPress
    from gammalens.kv.press import GammaWindowPress as Direct

    assert GammaWindowPress is Direct


def test_piped_kv_plan_keeps_its_table_whole(tmp_path, capsys, monkeypatch) -> None:
    """Like every other command, a piped `kv plan` gets a wide page (gammalens.terminal), not 80 columns."""
    from gammalens.cli import main
    from gammalens.terminal import PIPE_WIDTH
    from tests.run_fixtures import write_run

    monkeypatch.setenv("COLUMNS", "80")  # what rich would use for a pipe
    run = write_run(tmp_path, context=64)
    with pytest.raises(SystemExit) as done:
        main(["kv", "plan", str(run), "--ratio", "0.5", "--context", "1000"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    lines = out.splitlines()
    header = next(ln for ln in lines if "layer" in ln and "KV head" in ln)
    for column in ("γ of its query heads", "window", "tokens", "lost mass (Σ q)", "max tail"):
        assert column in header, (column, header)            # no header split over two lines
    assert len([ln for ln in lines if "│" in ln]) == 2 * 4    # one line per (layer, KV head): no cell wrapped
    assert max(map(len, lines)) > 80 and max(map(len, lines)) <= PIPE_WIDTH
    assert any(ln.startswith("tokens ") and "worst non-sink tail" in ln for ln in lines)  # the totals: one line
