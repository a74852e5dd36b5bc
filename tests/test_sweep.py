"""`gammalens sweep`: spec parsing, skip/resume, failure isolation, the driver as the only atlas writer,
and the Ray executor against the local one (one shared 2-CPU Ray instance for the module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gammalens.errors import GammalensError
from gammalens.sweep import SweepError, load_spec, plan_cell, run_sweep
from gammalens.sweep.cell import CRASH_ONCE_ENV, run_cell
from gammalens.sweep.driver import PAUSE_ENV

REPO = Path(__file__).resolve().parents[1]
CELL = {"windows": 2, "bootstrap": 20, "batch_size": 2}


def write_spec(path: Path, grid: str, *, rows: str = "", sweep: str = "") -> Path:
    defaults = "\n".join(f"{k} = {v}" for k, v in CELL.items())
    path.write_text(f'[sweep]\nout = "runs"\natlas = "atlas.duckdb"\nthreads = 1\n{sweep}\n'
                    f"[defaults]\n{defaults}\n\n[grid]\n{grid}\n{rows}")
    return path


def atlas_runs(atlas: Path) -> list[tuple[str, str]]:
    """(run_id, canonical settings) of every run recorded in ``atlas``."""
    import duckdb

    con = duckdb.connect(str(atlas), read_only=True)
    try:
        rows = con.execute("SELECT run_id, manifest FROM runs").fetchall()
    finally:
        con.close()
    return [(r, json.dumps(json.loads(m)["settings"], sort_keys=True)) for r, m in rows]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def model_gammas(run_dir: Path) -> dict[str, float | None]:
    from gammalens.runs.reader import read_fits_csv

    return {r["name"]: r["gamma"] for r in read_fits_csv(run_dir / "fits.csv")}


# --- the spec ---------------------------------------------------------------------------------------------

def test_spec_is_the_cartesian_product_plus_rows(tmp_path) -> None:
    spec = load_spec(write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny", "minilm"]\ncontexts = [32, 48]\n'
                                'seeds = [0, 1, 2]\n', rows='[[cells]]\nmodel = "minilm"\ncorpus = "random"\n'
                                'context = 40\n'))
    assert len(spec.cells) == 2 * 2 * 3 + 1
    combos = {(c.model, c.context, c.seed) for c in spec.cells[:-1]}
    assert combos == {(m, t, s) for m in ("gammalens-tiny", "minilm") for t in (32, 48) for s in (0, 1, 2)}
    assert (spec.cells[-1].corpus, spec.cells[-1].context, spec.cells[-1].windows) == ("random", 40, 2)
    assert spec.options.out == tmp_path / "runs" and spec.options.atlas == tmp_path / "atlas.duckdb"
    assert load_spec(tmp_path / "s.toml", executor="ray", max_parallel=3).options.max_parallel == 3


@pytest.mark.parametrize(("text", "needle"), [
    ('[grid]\nmodels = ["gammalens-tiny"]\nwindow = 3\n', "unknown setting 'window'"),
    ('[grid]\ncontexts = [32]\n', "no model"),
    ('[grid]\nmodels = ["gammalens-tiny"]\ncontexts = [4]\n', "--context must be at least 8"),
    ('[defaults]\nmodel = "gammalens-tiny"\nseed = [1, 2]\n', "lists belong in [grid]"),
    ('[sweep]\nexecutor = "slurm"\n[grid]\nmodels = ["gammalens-tiny"]\n', "--executor must be one of"),
    ('[grid\n', "not valid TOML"),
])
def test_bad_specs_are_one_line_errors(text: str, needle: str, tmp_path, capsys) -> None:
    from gammalens.cli import main

    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    with pytest.raises(SweepError, match=None) as info:
        load_spec(spec)
    assert needle in str(info.value)
    with pytest.raises(SystemExit) as ex:
        main(["sweep", str(spec)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_settings_hash_resolves_context_like_measure() -> None:
    from gammalens.measuring.config import MeasureConfig

    explicit = plan_cell(1, MeasureConfig(model="gammalens-tiny", context=512))
    default = plan_cell(2, MeasureConfig(model="gammalens-tiny"))
    assert default.config.context == 512 and default.key == explicit.key  # gammalens-tiny: 512 ≥ its positions
    assert plan_cell(3, MeasureConfig(model="gammalens-tiny", context=256)).key != explicit.key
    bad = plan_cell(4, MeasureConfig(model="gammalens-tiny", fit_range="1:600"))  # beyond the default context
    assert bad.error is not None and "outside [1, context)" in bad.error


# --- the local executor -----------------------------------------------------------------------------------

def test_local_sweep_isolates_a_failing_cell_and_reruns_as_a_no_op(tmp_path, capsys) -> None:
    from gammalens import measure
    from gammalens.cli import main

    spec = write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny", "./no-such-model"]\ncontexts = [32, 48]\n')
    with pytest.raises(SystemExit) as ex:
        main(["sweep", str(spec), "--quiet"])
    out = capsys.readouterr().out
    assert ex.value.code == 1
    assert "done 2 · skipped 0 · failed 2" in out and "does not exist" in out
    status = json.loads((tmp_path / "runs" / "s.sweep.json").read_text())
    failed = [c for c in status["cells"] if c["status"] == "failed"]
    assert [Path(c["settings"]["model"]) for c in failed] == [tmp_path / "no-such-model"] * 2
    assert all("\n" not in c["reason"] and "does not exist" in c["reason"] for c in failed)

    dirs = run_dirs(tmp_path / "runs")
    recorded = atlas_runs(tmp_path / "atlas.duckdb")
    assert sorted(r for r, _ in recorded) == [d.name for d in dirs] and len(dirs) == 2
    for cell in (c for c in status["cells"] if c["status"] == "done"):
        run_dir = tmp_path / "runs" / cell["run_id"]
        assert run_dir.name.endswith(cell["key"])  # the settings hash is the run name's
        # the same code path as a plain `measure` with those settings: identical fits
        settings = {k: v for k, v in cell["settings"].items() if v is not None}
        direct = measure(**settings, out=tmp_path / "direct", report=False)
        assert model_gammas(run_dir) == model_gammas(direct.run_dir)

    # a retried task (its worker died after the run was written) returns that run instead of measuring again
    cell = next(c for c in status["cells"] if c["status"] == "done")
    retried = run_cell(cell["settings"], str(tmp_path / "runs"))
    assert retried["ok"] and Path(retried["run_dir"]).name == cell["run_id"]

    again = run_sweep(spec)
    assert (again.count("done"), again.count("skipped"), again.failed) == (0, 2, 2)
    assert run_dirs(tmp_path / "runs") == dirs and len(atlas_runs(tmp_path / "atlas.duckdb")) == 2


def test_resume_after_the_driver_is_killed(tmp_path) -> None:
    """SIGKILL the driver after cell 1 is recorded and cell 2 is measured but not yet recorded."""
    spec = write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny"]\ncontexts = [32, 40, 48, 56]\n')
    env = os.environ | {PAUSE_ENV: "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gammalens.cli", "sweep", str(spec), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("gammalens-sweep: measured"):  # the driver sleeps 2 s, then records the run
            seen += 1
            if seen == 2:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert seen == 2
    before = run_dirs(tmp_path / "runs")
    assert len(before) == 2 and len(atlas_runs(tmp_path / "atlas.duckdb")) == 1

    result = run_sweep(spec)
    assert [c.status for c in result.cells] == ["skipped", "skipped", "done", "done"]
    assert result.cells[0].reason == "in the atlas" and "recorded now" in result.cells[1].reason
    after = run_dirs(tmp_path / "runs")
    assert len(after) == 4 and set(before) <= set(after)  # cells 1 and 2 were not measured again
    recorded = atlas_runs(tmp_path / "atlas.duckdb")
    assert sorted(r for r, _ in recorded) == [d.name for d in after]
    assert len({s for _, s in recorded}) == 4  # every cell exactly once


def test_ctrl_c_waits_for_the_atlas_transaction_then_interrupts() -> None:
    from gammalens.sweep.driver import _sigint_deferred

    # a test runner started in the background (nohup, `cmd &`, some CI runners) inherits SIGINT ignored
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt), _sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished.append(True)  # the block ran to its end despite the Ctrl-C
        assert finished == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


# --- the Ray executor (one 2-CPU instance for the module) ---------------------------------------------------

@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    ray = pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("ray") / "worker-died"
    # the first cell any worker of this instance starts kills its process: Ray must retry it elsewhere
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {CRASH_ONCE_ENV: str(marker), "OMP_NUM_THREADS": "1"}})
    yield marker
    ray.shutdown()


@pytest.mark.slow  # Ray start-up and worker imports: ~50 s on 2 busy cores
def test_ray_sweep_matches_local_and_survives_a_lost_worker(ray_instance, tmp_path) -> None:
    grid, bad = 'models = ["gammalens-tiny"]\ncontexts = [32, 48]\n', '[[cells]]\nmodel = "/nonexistent/model"\ncontext = 32\n'
    results = {}
    for executor in ("ray", "local"):
        (tmp_path / executor).mkdir()
        results[executor] = run_sweep(write_spec(tmp_path / executor / "s.toml", grid, rows=bad), executor=executor)
    ray_result, local_result = results["ray"], results["local"]
    assert ray_instance.exists()  # a worker did die, and its cell was retried
    assert [c.status for c in ray_result.cells] == [c.status for c in local_result.cells]
    assert (ray_result.count("done"), ray_result.failed) == (2, 1)
    assert "/nonexistent/model does not exist" in ray_result.cells[2].reason
    for r, lo in zip(ray_result.cells, local_result.cells, strict=True):
        assert r.key == lo.key and r.reason == lo.reason
        if r.status == "done":
            assert model_gammas(tmp_path / "ray" / "runs" / r.run_id) == \
                model_gammas(tmp_path / "local" / "runs" / lo.run_id)
    recorded = atlas_runs(tmp_path / "ray" / "atlas.duckdb")
    assert len(recorded) == 2 and len({s for _, s in recorded}) == 2

    again = run_sweep(tmp_path / "ray" / "s.toml", executor="ray")
    assert (again.count("done"), again.count("skipped")) == (0, 2)
    assert len(atlas_runs(tmp_path / "ray" / "atlas.duckdb")) == 2


@pytest.mark.slow  # shares the Ray instance (start-up ~15 s)
def test_ctrl_c_cancels_outstanding_ray_tasks_and_leaves_nothing_half_written(ray_instance, tmp_path,
                                                                              monkeypatch) -> None:
    from gammalens.sweep import driver

    spec = write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny"]\ncontexts = [64, 72, 80, 88]\nwindows = 6\n',
                      sweep="max_parallel = 2")
    finished = driver._Driver.finished

    def interrupted_after_first(self, cell, outcome):  # Ctrl-C arrives right after the first record
        finished(self, cell, outcome)
        raise KeyboardInterrupt

    monkeypatch.setattr(driver._Driver, "finished", interrupted_after_first)
    with pytest.raises(GammalensError, match="interrupted: 1 cell"):
        run_sweep(spec, executor="ray")
    out = tmp_path / "runs"
    assert not [p for p in out.iterdir() if ".partial" in p.name]
    for run_dir in run_dirs(out):  # a cell cancelled mid-way left no folder; a finished one is whole
        assert all((run_dir / f).is_file() for f in ("manifest.json", "fits.csv", "profile.npz"))
    assert len(atlas_runs(tmp_path / "atlas.duckdb")) == 1
    n_before = len(run_dirs(out))
    assert n_before < 4

    monkeypatch.setattr(driver._Driver, "finished", finished)
    result = run_sweep(spec, executor="ray")
    assert result.count("done") == 4 - n_before and result.count("skipped") == n_before
    recorded = atlas_runs(tmp_path / "atlas.duckdb")
    assert len(recorded) == 4 and len({s for _, s in recorded}) == 4


@pytest.mark.slow  # shares the Ray instance
def test_a_cell_no_ray_node_can_hold_fails_at_once(ray_instance, tmp_path) -> None:
    spec = write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny"]\ncontexts = [32]\ndevices = ["cuda"]\n')
    result = run_sweep(spec, executor="ray")
    assert result.failed == 1 and "0 GPUs; the cell needs 1 and 1" in result.cells[0].reason


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    spec = write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny"]\ncontexts = [32]\n')
    with pytest.raises(GammalensError, match=r"gammalens\[ray\]"):
        run_sweep(spec, executor="ray")
    assert not run_dirs(tmp_path / "runs")


def test_dry_run_writes_nothing(tmp_path) -> None:
    spec = write_spec(tmp_path / "s.toml", 'models = ["gammalens-tiny"]\ncontexts = [32, 32]\n')
    result = run_sweep(spec, dry_run=True)
    assert [c.status for c in result.cells] == ["pending", "skipped"]
    assert result.cells[1].reason == "same settings as cell 1"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "atlas.duckdb").exists()
