"""Run files from outside are validated once, by type and range (issue 25, fault class B).

Every field that a command reads from ``manifest.json``, ``fits.csv``, ``profile.npz`` and ``sinks.json`` is listed
in a table of :mod:`gammalens.runs.schema`; :mod:`gammalens.runs.reader` checks a run against them when it is read.
The cases here are generated from those tables — one or more wrong values per field (a string for a number, a list
for a string, a number below its bound, a label that is not one of the choices, null where null is not allowed,
a missing required field) — so a field added to a table is tested without another line here. Each must be a
:class:`RunFormatError` naming the file and the field, on one line; ``gammalens verify``, ``report`` and
``kv plan`` on such runs print one line ``gammalens: error: …`` and exit 2.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gammalens.probe.profile import DistanceProfile
from gammalens.runs import schema
from gammalens.runs.reader import RunFormatError, read_fits_csv, read_manifest, read_run
from gammalens.runs.schema import FIT_CHECKS, FIT_COLUMNS, MANIFEST_FIELDS, PROFILE_FIELDS, SINKS_FIELDS, Field
from tests.run_fixtures import write_run
from tests.test_cli import assert_clean_failure, run_cli

L, H = 2, 4  # the fixture run's layers and heads


# --- wrong values, derived from a field's entry ---------------------------------------------------------------

_WRONG_TYPE = {"int": "sixty-four", "float": "sixty-four", "str": ["a", "list"], "bool": "yes", "object": [1, 2],
               "list": "not a list", "list[int]": ["x"], "list[float]": ["x"], "list[str]": [1],
               "list[object]": [1], "array": "not an array", "array[str]": "not an array"}


def wrong_values(f: Field) -> list[tuple[str, Any]]:
    """(label, value) pairs that ``f`` must refuse."""
    out: list[tuple[str, Any]] = [("type", _WRONG_TYPE[f.kind])]
    if f.kind.startswith("list["):
        out.append(("not-a-list", {"a": 1}))
    if f.kind in ("float", "int", "list[int]", "list[float]"):
        step = 1 if f.kind in ("int", "list[int]") else 0.5
        bad = [("below", f.ge - step) if f.ge is not None else None, ("at-open-bound", f.gt) if f.gt is not None else None,
               ("above", f.le + step) if f.le is not None else None, ("at-open-bound-hi", f.lt) if f.lt is not None else None]
        for label, x in filter(None, bad):
            out.append((label, [x] if f.kind.startswith("list") else x))
        if f.kind == "int":
            out.append(("bool", True))
            out.append(("fraction", 2.5))
    if f.choices is not None:
        out.append(("not-a-choice", "no-such-value"))
    if f.pattern is not None:
        out.append(("pattern", "?? !!"))
    if not f.null:
        out.append(("null", None))
    if f.kind.startswith("array") and f.shape:
        out.append(("shape", [[0.0]]))
    return out


def concrete(path: str) -> str:
    """A wildcard path names one key of its object: ``versions.*`` → ``versions.extra``."""
    return path.replace("*", "extra")


def set_path(doc: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def drop_path(doc: dict, path: str) -> None:
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node.pop(last)


def has_path(doc: dict, path: str) -> bool:
    node: Any = doc
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def cases(fields: dict[str, Field]) -> list[Any]:
    out = []
    for path, f in fields.items():
        out += [pytest.param(concrete(path), label, value, id=f"{path}:{label}") for label, value in wrong_values(f)]
    return out


def missing_cases(fields: dict[str, Field]) -> list[Any]:
    return [pytest.param(path, id=f"{path}:missing") for path, f in fields.items() if f.required]


MANIFEST_CASES, SINKS_CASES = cases(MANIFEST_FIELDS), cases(SINKS_FIELDS)


# --- the runs ----------------------------------------------------------------------------------------------

def sinks_doc() -> dict[str, Any]:
    """A valid sinks.json for the fixture's 2 × 4 heads: every pass present (baseline, BOS dropped, ablated)."""
    ks = [1, 4]
    heads = [[0.1 * (h + 1) for h in range(H)] for _ in range(L)]
    base = {"label": "baseline", "context": 64, "prefix_len": 1, "ks": ks, "model_gamma": 0.8,
            "mass": [[[0.1, 0.2] for _ in range(H)] for _ in range(L)], "first_key_share": heads,
            "peak_key_share": heads, "sink_position": [[0] * H for _ in range(L)], "sink_kind_share": heads,
            "gamma": heads, "layer_gamma": [0.7, 0.9], "sink_token": [["<s>"] * H for _ in range(L)],
            "sink_kind": [["bos"] * H for _ in range(L)]}
    return {"format": schema.SINKS_FORMAT, "model": "fixture/tiny-rope",
            "settings": {"ks": ks, "eps": 0.3, "massive_abs": 100.0, "massive_ratio": 1000.0, "ablate": "zero",
                         "bos_variant": True, "sink_tokens": 1},
            "baseline": base, "bos": base | {"label": "no_bos", "prefix_len": 0},
            "bos_note": "the BOS dropped", "ablated": base | {"label": "ablated"}, "ablated_count": [0, 3],
            "massive": {"abs_threshold": 100.0, "ratio": 1000.0, "count": [0, 3], "median_abs": [0.5, None],
                        "top_abs": [[1.0, 0.9, 0.8], [300.0, 200.0, 150.0]], "first_layer": 1,
                        "sites": [{"layer": 1, "dim": 7, "position": 0, "n": 3, "mean_value": 300.0,
                                   "max_abs": 300.0, "token_ids": [1]}], "truncated": False},
            "correlation": {"x": "sink_mass", "y": "gamma", "n": 8, "pearson": 0.1, "pearson_ci_low": -0.5,
                            "pearson_ci_high": 0.6, "spearman": None, "spearman_ci_low": None,
                            "spearman_ci_high": None, "over": "heads"}}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fixture run (written once), with ``layer_window`` and ``sink_tokens`` in its profile and a sinks.json."""
    run = write_run(tmp_path_factory.mktemp("template"), n_layers=L, n_heads=H)
    with np.load(run / "profile.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays |= {"layer_window": np.zeros(L, dtype=np.int64), "sink_tokens": np.array(1)}
    np.savez(run / "profile.npz", **arrays)
    (run / schema.SINKS_FILE).write_text(json.dumps(sinks_doc()))
    return run


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "runs" / template.name))


def edit_json(file: Path, change) -> None:
    doc = json.loads(file.read_text())
    change(doc)
    file.write_text(json.dumps(doc))


def assert_names(err: RunFormatError, file: Path, *needles: str) -> None:
    message = str(err)
    assert "\n" not in message, message
    assert str(file) in message, message
    for needle in needles:
        assert needle in message, (needle, message)


# --- the tables themselves --------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", [MANIFEST_FIELDS, SINKS_FIELDS], ids=["manifest", "sinks"])
def test_every_parent_is_an_object_listed_before_its_children(table: dict[str, Field]) -> None:
    seen: set[str] = set()
    for path, f in table.items():
        parent = path.rpartition(".")[0]
        assert not parent or (parent in seen and table[parent].kind == "object"), path
        assert f.kind in _WRONG_TYPE, (path, f.kind)
        assert f.shape is None or f.kind.startswith("array"), path
        seen.add(path)


def test_the_tables_agree_with_the_format() -> None:
    from gammalens.sinks.result import FORMAT, SINK_FILE

    assert (schema.SINKS_FORMAT, schema.SINKS_FILE) == (FORMAT, SINK_FILE)
    assert set(FIT_CHECKS) <= set(FIT_COLUMNS)
    assert all({"int": "int", "float": "float", "str": "str"}[FIT_COLUMNS[c]] == f.kind for c, f in FIT_CHECKS.items())
    assert schema.PROFILE_ARRAYS == ("mass", "pairs", "mass_cs", "queries_cs", "cs_horizon", "sink_mass")
    assert MANIFEST_FIELDS["format"].choices == (schema.FORMAT,)


def test_the_generated_cases_cover_every_field() -> None:
    for table, generated in ((MANIFEST_FIELDS, MANIFEST_CASES), (SINKS_FIELDS, SINKS_CASES)):
        covered = {p.id.rsplit(":", 1)[0] for p in generated}
        assert covered == set(table)
        assert len(generated) >= 2 * len(table)


# --- valid runs read as before --------------------------------------------------------------------------------

def test_a_valid_run_with_every_file_reads(run_dir: Path) -> None:
    from gammalens.sinks.result import read_sinks

    run = read_run(run_dir)
    assert run.n_layers == L and run.n_heads == H and run.sinks == sinks_doc()
    assert read_sinks(run_dir).baseline.n_layers == L  # the synthetic sinks.json is one the report can read
    assert read_manifest(run_dir) == run.manifest
    assert [r["gamma"] for r in read_fits_csv(run_dir / "fits.csv")] == [r["gamma"] for r in run.fits]


def test_a_compact_profile_reads(run_dir: Path) -> None:
    with np.load(run_dir / "profile.npz") as z:
        a = {k: z[k] for k in z.files}
    profile = DistanceProfile(mass=a["mass"], pairs=a["pairs"], doc_mass_cs=a["doc_mass_cs"],
                              doc_queries_cs=a["doc_queries_cs"], doc_sink_sum=a["doc_sink_sum"],
                              doc_sink_queries=a["doc_sink_queries"], layer_window=np.zeros(L, dtype=np.int64),
                              cs_horizon=int(a["cs_horizon"]), sink_tokens=1)
    assert profile.save(run_dir / "profile.npz", layout="compact:8") == "compact"
    run = read_run(run_dir)
    assert run.layout == "compact" and run.profile("mass").shape == a["mass"].shape


def test_an_old_manifest_with_only_the_required_fields_reads(run_dir: Path) -> None:
    def strip(doc: dict) -> None:
        for path, f in reversed(list(MANIFEST_FIELDS.items())):  # children first
            if not f.required and "*" not in path and has_path(doc, path):
                drop_path(doc, path)

    edit_json(run_dir / "manifest.json", strip)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest) == {"format", "run_id", "model", "settings"} and manifest["model"] == {}
    (run_dir / schema.SINKS_FILE).unlink()
    run = read_run(run_dir)
    assert run.settings == {} and run.arch == {} and run.sinks is None


@pytest.mark.parametrize("path", [p for p, f in MANIFEST_FIELDS.items() if not f.required and "*" not in p])
def test_each_optional_manifest_field_may_be_missing(run_dir: Path, path: str) -> None:
    edit_json(run_dir / "manifest.json", lambda doc: drop_path(doc, path) if has_path(doc, path) else None)
    read_run(run_dir)


# --- manifest.json: one generated case per wrong value of every field -----------------------------------------

@pytest.mark.parametrize("path, label, value", MANIFEST_CASES)
def test_a_wrong_manifest_field_is_a_format_error_naming_it(run_dir: Path, path: str, label: str, value: Any) -> None:
    file = run_dir / "manifest.json"
    edit_json(file, lambda doc: set_path(doc, path, value))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, f"{path} must be")
    with pytest.raises(RunFormatError) as light:  # the light reader kv plan uses checks the same table
        read_manifest(run_dir)
    assert str(light.value) == str(err.value)


@pytest.mark.parametrize("path", missing_cases(MANIFEST_FIELDS))
def test_a_missing_required_manifest_field_is_named(run_dir: Path, path: str) -> None:
    file = run_dir / "manifest.json"
    edit_json(file, lambda doc: drop_path(doc, path))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, f"{path} is missing")
    if "." not in path:  # the light reader does not insist on a complete run directory's keys
        read_manifest(run_dir)


def test_the_message_of_the_issue(run_dir: Path) -> None:
    edit_json(run_dir / "manifest.json", lambda doc: set_path(doc, "settings.context", "sixty-four"))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert str(err.value) == f"{run_dir / 'manifest.json'}: settings.context must be an integer ≥ 2, got 'sixty-four'"


def test_a_manifest_that_is_not_an_object(run_dir: Path) -> None:
    (run_dir / "manifest.json").write_text('"sixty-four"')
    with pytest.raises(RunFormatError, match="expected a JSON object") as err:
        read_run(run_dir)
    assert_names(err.value, run_dir / "manifest.json")


# --- sinks.json ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, label, value", SINKS_CASES)
def test_a_wrong_sinks_field_is_a_format_error_naming_it(run_dir: Path, path: str, label: str, value: Any) -> None:
    file = run_dir / schema.SINKS_FILE
    edit_json(file, lambda doc: set_path(doc, path, value))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, f"{path} must be")


@pytest.mark.parametrize("path", missing_cases(SINKS_FIELDS))
def test_a_missing_required_sinks_field_is_named(run_dir: Path, path: str) -> None:
    file = run_dir / schema.SINKS_FILE
    edit_json(file, lambda doc: drop_path(doc, path))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, f"{path} is missing")


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", "\xff\xfe"])
def test_a_sinks_file_that_is_not_json(run_dir: Path, text: str) -> None:
    file = run_dir / schema.SINKS_FILE
    file.write_bytes(text.encode("latin-1"))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file)


def test_sinks_arrays_must_match_the_profiles_heads(run_dir: Path) -> None:
    file = run_dir / schema.SINKS_FILE
    edit_json(file, lambda doc: set_path(doc, "baseline.gamma", [[0.5] * (H + 1)] * L))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, "baseline.gamma must be", "H = 4")


# --- fits.csv -------------------------------------------------------------------------------------------------

def fits_cases() -> list[Any]:
    out = []
    for column, kind in FIT_COLUMNS.items():
        if kind != "str":
            out.append(pytest.param(column, "x1", id=f"{column}:not-a-number"))
        if kind == "int":
            out.append(pytest.param(column, "2.5", id=f"{column}:fraction"))
        check = FIT_CHECKS.get(column)
        if check is not None:
            for label, value in wrong_values(check):
                if isinstance(value, (int, float)) and not isinstance(value, bool) and label != "fraction":
                    out.append(pytest.param(column, str(value), id=f"{column}:{label}"))
                elif label == "not-a-choice":
                    out.append(pytest.param(column, value, id=f"{column}:{label}"))
    return out


FITS_CASES = fits_cases()


def set_cell(file: Path, name: str, column: str, text: str) -> int:
    """Set one cell of the row ``name``; its line number."""
    with file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    line = next(k for k, r in enumerate(rows, start=2) if r["name"] == name)
    rows[line - 2][column] = text
    with file.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return line


@pytest.mark.parametrize("column, text", FITS_CASES)
def test_a_wrong_fits_cell_is_a_format_error_naming_line_and_column(run_dir: Path, column: str, text: str) -> None:
    file = run_dir / "fits.csv"
    line = set_cell(file, "layers.1.heads.2", column, text)
    for read in (lambda: read_run(run_dir), lambda: read_fits_csv(file)):
        with pytest.raises(RunFormatError) as err:
            read()
        assert_names(err.value, file, f"line {line}, column '{column}'")


def test_a_fits_row_outside_the_profile(run_dir: Path) -> None:
    file = run_dir / "fits.csv"
    set_cell(file, "layers.1.heads.2", "head", str(H))
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, "layers.1.heads.2", "has head 4")


# --- profile.npz ----------------------------------------------------------------------------------------------

def profile_cases() -> list[Any]:
    out = []
    for key, spec in PROFILE_FIELDS.items():
        if spec.required:
            out.append(pytest.param(key, "missing", id=f"{key}:missing"))
        out += [pytest.param(key, "text", id=f"{key}:text"), pytest.param(key, "shape", id=f"{key}:shape")]
        if spec.dtype == "int":
            out.append(pytest.param(key, "fraction", id=f"{key}:fraction"))
        if spec.ge is not None:
            out.append(pytest.param(key, "below", id=f"{key}:below"))
    return out


PROFILE_CASES = profile_cases()


def make_compact(run_dir: Path) -> None:
    with np.load(run_dir / "profile.npz") as z:
        a = {k: z[k] for k in z.files}
    DistanceProfile(mass=a["mass"], pairs=a["pairs"], doc_mass_cs=a["doc_mass_cs"], doc_queries_cs=a["doc_queries_cs"],
                    doc_sink_sum=a["doc_sink_sum"], doc_sink_queries=a["doc_sink_queries"],
                    layer_window=a["layer_window"], cs_horizon=int(a["cs_horizon"]),
                    sink_tokens=1).save(run_dir / "profile.npz", layout="compact:8")


@pytest.mark.parametrize("key, damage", PROFILE_CASES)
def test_a_damaged_profile_array_is_a_format_error_naming_it(run_dir: Path, key: str, damage: str) -> None:
    file = run_dir / "profile.npz"
    with np.load(file) as z:
        compact = key not in z.files
    if compact:  # the compact layout's own arrays
        make_compact(run_dir)
    with np.load(file) as z:
        arrays = {k: z[k] for k in z.files}
    spec, a = PROFILE_FIELDS[key], arrays[key]
    if damage == "missing":
        del arrays[key]
    elif damage == "text":
        arrays[key] = np.full(a.shape, "x") if spec.dtype != "str" else np.full(a.shape, 1.5)
    elif damage == "shape":
        arrays[key] = a[None]
    elif damage == "fraction":
        arrays[key] = a.astype(np.float64) + 0.5
    elif damage == "below":
        arrays[key] = np.full(a.shape, spec.ge - 1, dtype=a.dtype)
    np.savez(file, **arrays)
    with pytest.raises(RunFormatError) as err:
        read_run(run_dir)
    assert_names(err.value, file, f"array '{key}'")


# --- the commands: one line, exit 2 ---------------------------------------------------------------------------

def _bad_context(run: Path) -> str:
    edit_json(run / "manifest.json", lambda doc: set_path(doc, "settings.context", "sixty-four"))
    return "settings.context"


def _no_layers(run: Path) -> str:
    edit_json(run / "manifest.json", lambda doc: set_path(doc, "model.arch.n_layers", 0))
    return "model.arch.n_layers"


def _negative_sinks(run: Path) -> str:
    edit_json(run / "manifest.json", lambda doc: set_path(doc, "settings.sink_tokens", -1))
    return "settings.sink_tokens"


def _theta_text(run: Path) -> str:
    edit_json(run / "manifest.json", lambda doc: set_path(doc, "model.arch.rope_theta", "1e4"))
    return "model.arch.rope_theta"


def _gamma_text(run: Path) -> str:
    set_cell(run / "fits.csv", "layers.0.heads.1", "gamma", "zero point nine")
    return "column 'gamma'"


def _no_queries(run: Path) -> str:
    with np.load(run / "profile.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "queries_cs"}
    np.savez(run / "profile.npz", **arrays)
    return "queries_cs"


def _sinks_not_json(run: Path) -> str:
    (run / schema.SINKS_FILE).write_text("{ this is not json")
    return "sinks.json"


DAMAGES = {"settings.context": _bad_context, "n_layers": _no_layers, "sink_tokens": _negative_sinks,
           "rope_theta": _theta_text, "fits-gamma": _gamma_text, "profile-array": _no_queries,
           "sinks-json": _sinks_not_json}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("command", ["verify", "report", "kv plan"])
def test_commands_on_a_bad_run_fail_in_one_line(run_dir: Path, tmp_path: Path, capsys, command: str,
                                                damage: str) -> None:
    if command == "kv plan" and damage == "sinks-json":
        pytest.skip("kv plan does not read sinks.json")
    needle = DAMAGES[damage](run_dir)
    out = tmp_path / "out"
    argv = {"verify": ["verify", str(run_dir)], "report": ["report", str(run_dir), "-o", str(out / "r.html")],
            "kv plan": ["kv", "plan", str(run_dir), "--context", "1000", "--json", str(out / "plan.json")]}[command]
    code, _, err = run_cli(argv, capsys)
    assert_clean_failure(code, err, out, needle)
    assert "Traceback" not in err


def test_the_issues_commands_on_sixty_four(run_dir: Path, tmp_path: Path, capsys) -> None:
    _bad_context(run_dir)
    for argv in (["verify", str(run_dir)], ["report", str(run_dir), "-o", str(tmp_path / "r.html")],
                 ["kv", "plan", str(run_dir)]):
        code, _, err = run_cli(argv, capsys)
        assert_clean_failure(code, err, tmp_path / "none", "manifest.json: settings.context must be an integer ≥ 2, "
                                                          "got 'sixty-four'")


def test_the_template_is_untouched(template: Path) -> None:
    """The generated cases edit copies: the template stays valid."""
    assert read_run(template).sinks == sinks_doc()
