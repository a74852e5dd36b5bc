"""CLI options defined once: every MeasureConfig field is a `measure` flag of the same name, `sinks` shares
measure's flags (same help, same default), and the flags reach the config unchanged."""

from __future__ import annotations

from dataclasses import fields

import pytest
import typer

from gammalens.cli import app
from gammalens.measuring.config import MeasureConfig


def _params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def test_every_measure_config_field_is_a_measure_flag() -> None:
    params = _params("measure")
    for f in fields(MeasureConfig):
        assert f.name in params, f"MeasureConfig.{f.name} has no --{f.name.replace('_', '-')} flag"
        p = params[f.name]
        if f.name == "model":
            assert p.param_type_name == "argument"
        else:
            assert f"--{f.name.replace('_', '-')}" in p.opts
            assert p.default == f.default, f.name                          # one default: the config's


def test_sinks_shares_measures_flags() -> None:
    measure, sinks = _params("measure"), _params("sinks")
    shared = [n for n in sinks if n in measure]
    assert {"corpus", "context", "windows", "fit_range", "out", "atlas", "as_json"} <= set(shared)
    for name in shared:
        assert sinks[name].help == measure[name].help, name
        assert sinks[name].default == measure[name].default, name
        assert sinks[name].opts == measure[name].opts, name


def test_flags_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import gammalens.measuring.pipeline as measurement
    from gammalens.cli import main

    seen = {}

    def fake_measure(*, config, **kw):
        seen["config"] = config
        raise measurement.GammalensError("stop here")

    monkeypatch.setattr(measurement, "measure", fake_measure)
    with pytest.raises(SystemExit) as ex:
        main(["measure", "some/model", "--corpus", "random", "--context", "64", "--windows", "3", "--sink-tokens",
              "2", "--fit-range", "2:20", "--dtype", "bf16", "--batch-size", "2", "--chunk-size", "8",
              "--bootstrap", "7", "--seed", "5", "--allow-extrapolation", "--eps", "0.1"])
    assert ex.value.code == 2
    c = seen["config"]
    assert (c.model, c.corpus, c.context, c.windows, c.sink_tokens, c.fit_range, c.dtype, c.batch_size,
            c.chunk_size, c.bootstrap, c.seed, c.allow_extrapolation, c.eps) == (
        "some/model", "random", 64, 3, 2, "2:20", "bf16", 2, 8, 7, 5, True, 0.1)
