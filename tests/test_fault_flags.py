"""Issue 25, item 2: flags that conflict or make no sense are refused in one line (exit code 2), before any work.

The cases are generated, not hand-listed: the typer app is walked (``typer.main.get_command``) and every int or
float option of every command in the groups below gets a negative value — and, unless it is listed in
:data:`MAY_BE_ZERO` with the reason, zero. A command added to these groups, or a number option added to one of
their commands, is covered without touching this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from gammalens.cli.app import app
from tests.run_fixtures import write_run

GROUPS = ("kv", "atlas", "zoo", "card", "report", "claims", "models")
TINY_DIR = Path(__file__).resolve().parents[1] / "src" / "gammalens" / "zoo" / "gammalens-tiny"

# "command --flag": why a negative value means something. None in these groups today: every number option is a
# count (windows, resamples, steps, rows, batch, threads), a size (tokens, GiB, context), a seed (numpy's
# default_rng refuses negative seeds), a fraction (ε, ratio) or a calibrated constant bounded above 0 (β, c).
MAY_BE_NEGATIVE: dict[str, str] = {}

# "command --flag": why 0 is a legitimate value (these get only the negative value)
MAY_BE_ZERO: dict[str, str] = {
    "kv plan --rows": "0 shows every KV head (the default)",
    "kv plan --ratio": "0 removes nothing: the full cache, the lower end of [0, 1)",
    "kv plan --retrieval-share": "0 offers retrieval heads nothing: the hybrid is then the γ budget plan",
    "kv plan --seed": "0 is the default seed (of --retrieval-by random)",
    "card --activation-gib": "an allowance of 0 GiB for activations is optimistic but meaningful",
    "zoo train --seed": "0 is the default seed",
    "zoo measure --seed": "0 is the default seed",
    "zoo rescale --seed": "0 is the default seed",
    "zoo measure --bootstrap": "0 resamples: no CI, as `gammalens measure --bootstrap 0`",
    "zoo rescale --bootstrap": "0 resamples: no CI, as `gammalens measure --bootstrap 0`",
}


def _leaves(command, path: tuple[str, ...]):
    subs = getattr(command, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


def commands() -> dict[str, object]:
    """Every leaf command of GROUPS: {'kv plan': click command, 'card': …}."""
    root = typer.main.get_command(app)
    return {" ".join(path): cmd for path, cmd in _leaves(root, ()) if path[0] in GROUPS}


def number_options() -> list[tuple[str, str, type]]:
    """(command, --flag, int or float) of every number option of the commands in GROUPS."""
    found = []
    for name, cmd in commands().items():
        for param in cmd.params:
            kind = param.type_descriptor.annotation
            if param.param_type_name == "option" and kind in (int, float):
                found.append((name, max(param.opts, key=len), kind))
    return found


CASES = [(cmd, flag, kind, value) for cmd, flag, kind in number_options()
         for value in ("-3", "0") if f"{cmd} {flag}" not in MAY_BE_NEGATIVE or value == "0"
         if value != "0" or f"{cmd} {flag}" not in MAY_BE_ZERO]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from gammalens.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    cap = capsys.readouterr()
    return int(done.value.code or 0), cap.out, cap.err


def _required_arguments(command: str, tmp_path: Path) -> list[str]:
    """Real inputs where the command reads them before its flags could matter, a missing path elsewhere."""
    real = {"card": [str(TINY_DIR)], "zoo rescale": [str(TINY_DIR)]}
    if command in real:
        return real[command]
    if command == "kv plan":
        return [str(write_run(tmp_path / "runs", context=64))]
    cmd = commands()[command]
    return [str(tmp_path / "missing") for p in cmd.params if p.param_type_name == "argument" and p.required]


def test_the_walk_finds_the_commands_and_their_number_options() -> None:
    names = set(commands())
    assert {g for g in GROUPS if any(n == g or n.startswith(g + " ") for n in names)} == set(GROUPS)
    covered = {cmd for cmd, _, _ in number_options()}
    assert {"kv plan", "card", "zoo train", "zoo measure", "zoo rescale"} <= covered
    flags = {f"{cmd} {flag}" for cmd, flag, _ in number_options()}
    assert {"kv plan --rows", "kv plan --eps", "card --batch", "zoo train --lr"} <= flags
    assert set(MAY_BE_ZERO) <= flags and set(MAY_BE_NEGATIVE) <= flags  # no stale exemptions
    assert len(CASES) >= 30


@pytest.mark.parametrize(("command", "flag", "kind", "value"), CASES,
                         ids=[f"{c.replace(' ', '-')}{f}={v}" for c, f, _, v in CASES])
def test_nonsense_number_is_one_line_and_exit_2(command: str, flag: str, kind: type, value: str, tmp_path: Path,
                                                 capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # defaults such as --out zoo or --docs docs resolve here, never in the checkout
    args = [*command.split(), *_required_arguments(command, tmp_path), f"{flag}={value}"]
    code, out, err = run_cli(args, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (args, out, err)
    assert len(lines) == 1 and lines[0].startswith("gammalens: error:"), err
    # the refusal is about this flag: typer names it; the library's own checks say what they got
    assert flag in lines[0] or f"(got {value}" in lines[0], lines[0]
    assert not (tmp_path / "zoo").exists() and not (tmp_path / "docs").exists()  # refused before any work


@pytest.mark.parametrize(("args", "needles"), [
    (["--eps", "0.2", "--budget", "100"], ("--eps and --budget exclude each other", "not both")),
    (["--eps", "0.2", "--ratio", "0.5"], ("--eps and --ratio exclude each other",)),
    (["--ratio", "0.5", "--budget", "100"], ("not both",)),
    (["--eps", "0.2", "--budget", "100", "--ratio", "0.5"], ("--eps, --budget and --ratio", "only one")),
])
def test_kv_plan_modes_exclude_each_other(args: list[str], needles: tuple[str, ...], tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "runs", context=64)
    code, _, err = run_cli(["kv", "plan", str(run), *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gammalens: error:"), err
    assert "see `gammalens kv plan --help`" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("args", "mode", "eps"), [([], "eps", 0.05), (["--eps", "0.2"], "eps", 0.2),
                                                   (["--budget", "400"], "budget", None)])
def test_kv_plan_one_mode_still_plans(args: list[str], mode: str, eps: float | None, tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "runs", context=64)
    code, _, err = run_cli(["kv", "plan", str(run), *args, "--json", str(tmp_path / "plan.json")], capsys)
    assert code == 0, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["mode"] == mode and plan["eps"] == eps


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "--thetas", "1e4,-1e5"], "--thetas"),
    (["train", "--contexts", "128,0"], "--contexts"),
    (["train", "--contexts", "128.5"], "whole numbers"),
    (["train", "--thetas", "0.5"], "theta must be > 1"),           # checked for every grid point before any work
    (["rescale", str(TINY_DIR), "--factors", "1,-4"], "--factors"),
    (["measure", "--atlas", "atlas.duckdb"], "--runs"),            # --atlas needs --runs
])
def test_zoo_lists_and_combinations(args: list[str], needle: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["zoo", *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gammalens: error:") and needle in lines[0], err
    assert not (tmp_path / "zoo").exists()
