"""Fault injection: every failure a clean one — one line on stderr, exit code 2, nothing half-written.

SIGKILL at several points of the run writer (and mid-forward), SIGTERM, identical runs started at the
same moment, usage errors through the real console script, a full disk (a real 32 KiB tmpfs where the
machine lets us mount one; simulated ENOSPC otherwise), a truncated atlas, a failing atlas commit,
malformed run directories, nonsense configs and card values, and hub lookups without a network.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.run_fixtures import write_run as write_fixture_run
from tests.test_cli import run_cli

SCRIPT = Path(sys.executable).parent / "gammalens"  # the console script of the environment under test
TINY_DIR = Path(__file__).resolve().parents[1] / "src" / "gammalens" / "zoo" / "gammalens-tiny"

# A run writer in a fresh process (no torch): kills itself with `signal` at `point`, after waiting for a
# common start time, so several can write the same run at the same moment.
WRITER = r"""
import os, signal, sys, time
from pathlib import Path
import gammalens.runs.writer as rd
parent, point, sig, start_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

def hook(name):
    if name == point:
        os.kill(os.getpid(), sig)
        time.sleep(5)

class Profile:
    def save(self, path, layout='full'):
        Path(path).write_bytes(b"\0" * 4096)
        hook("profile")

write_csv, rename = rd.write_fits_csv, os.rename
rd.write_fits_csv = lambda path, rows: (write_csv(path, rows), hook("fits"))
os.rename = lambda a, b: (hook("rename"), rename(a, b))[1]

def extras(tmp, manifest):
    (tmp / "report.html").write_text(manifest["run_id"])
    hook("extras")

while time.time() < start_at:
    time.sleep(0.0005)
from gammalens.cli.failure import clean_exit
with clean_exit():
    manifest = {"model": {"id": "fixture/model"}, "settings": {"context": 64}}
    rows = [{"name": "model", "scope": "model", "gamma": 0.5}]
    print(rd.RunWriter(parent, lazy=True).write(manifest, rows, Profile(), extras=extras))
"""


def writer(parent: Path, point: str = "none", sig: int = signal.SIGKILL, start_at: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(parent), point, str(int(sig)), str(start_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def visible(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def assert_one_line(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gammalens: error:"), (code, err)
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


# --- SIGKILL, SIGTERM and races in the run writer ----------------------------------------------------------

@pytest.mark.parametrize("point", ["fits", "profile", "extras", "rename"])
def test_sigkill_leaves_only_a_hidden_partial_that_the_next_run_removes(tmp_path: Path, point: str) -> None:
    parent = tmp_path / "runs"
    killed = writer(parent, point)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert visible(parent) == []                                 # no run folder, complete or not
    left = hidden(parent)
    assert any(".partial-" in n for n in left), left              # what SIGKILL cannot clean up …
    ok = writer(parent)
    out, err = ok.communicate(timeout=60)
    assert ok.returncode == 0, err
    run_dir = Path(out.strip())
    assert visible(parent) == [run_dir.name] and hidden(parent) == []   # … the next run does
    assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == run_dir.name
    assert (run_dir / "report.html").read_text() == run_dir.name


def test_stale_partials_of_live_processes_are_kept(tmp_path: Path) -> None:
    from gammalens.runs.writer import remove_stale_partials

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".run-a.partial-{sleeper.pid}"
        live.mkdir()
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout.strip()
        dead = tmp_path / f".run-b.partial-{dead_pid}"
        dead.mkdir()
        lock = tmp_path / ".run-b.lock"
        lock.write_text(dead_pid)
        other = tmp_path / ".not-ours"
        other.mkdir()
        assert sorted(p.name for p in remove_stale_partials(tmp_path)) == sorted([dead.name, lock.name])
        assert live.is_dir() and other.is_dir() and not dead.exists() and not lock.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sigterm_cleans_up_and_fails_in_one_line(tmp_path: Path) -> None:
    parent = tmp_path / "runs"
    proc = writer(parent, "profile", sig=signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert_one_line(proc.returncode, err, "terminated")
    assert not parent.exists()                      # nothing at all: not even the --out folder it created


def test_identical_runs_started_at_the_same_moment_get_distinct_complete_folders(tmp_path: Path) -> None:
    parent = tmp_path / "runs"
    start = math.ceil(time.time()) + 1.2           # well inside one second, so all want the same name
    procs = [writer(parent, start_at=start) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    names = sorted(Path(o.strip()).name for o, _ in outs)
    assert visible(parent) == names and len(set(names)) == 4 and hidden(parent) == []
    base = min(names, key=len)
    if all(n.startswith(base) for n in names):     # same second (the usual case): suffixes -2, -3, -4
        assert names == sorted([base] + [f"{base}-{k}" for k in (2, 3, 4)])
    for n in names:
        assert json.loads((parent / n / "manifest.json").read_text())["run_id"] == n
        assert (parent / n / "report.html").read_text() == n


def test_sigkill_mid_forward_leaves_no_out_folder(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    code = ("import os, signal, sys\n"
            "import gammalens.probe.backend as b\n"
            "b.DistanceProbe.set_layout = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            "from gammalens.cli import main\n"
            f"main(['measure', {str(tiny_llama_dir)!r}, '--context', '32', '--windows', '2', '--no-atlas', "
            f"'--out', {str(out)!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()


# --- usage errors through the real console script -----------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["measure", "--windows", "abc"],                # a bad value
    ["measure", "--bogus"],                         # an unknown option
    ["bogus"],                                      # an unknown command
    ["verify"],                                     # a missing argument
    ["atlas", "frobnicate"],                        # an unknown subcommand
    ["card", "x", "--context", "inf"],              # not an integer
    ["report"],                                     # a missing list argument
    ["measure", "minilm", "--windows", "0"],        # our own check
])
def test_usage_errors_through_the_console_script(argv: list[str]) -> None:
    assert SCRIPT.is_file(), SCRIPT
    proc = subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, timeout=120)
    assert_one_line(proc.returncode, proc.stderr)


def test_no_arguments_prints_the_help(capsys) -> None:
    code, out, err = run_cli([], capsys)
    assert code == 0 and "measure" in out and err == ""


# --- a full disk --------------------------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path: Path):
    """A 32 KiB tmpfs (a real full disk); skipped where this machine does not allow mounting one."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here; the ENOSPC tests below simulate it")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk_run_report_export_and_atlas(full_disk: Path, tmp_path: Path, capsys) -> None:
    from gammalens.atlas import import_taf
    from gammalens.errors import GammalensError
    from gammalens.runs.writer import RunWriter

    class Big:
        def save(self, path: Path, layout: str = 'full') -> None:
            Path(path).write_bytes(os.urandom(256 * 1024))

    with pytest.raises(GammalensError, match="No space left"):
        RunWriter(full_disk / "runs", lazy=True).write({"model": {"id": "m"}, "settings": {}},
                                                       [{"name": "model", "scope": "model", "gamma": 1.0}], Big())
    assert list(full_disk.iterdir()) == []
    run = write_fixture_run(tmp_path / "runs", n_layers=6, n_heads=8)
    code, _, err = run_cli(["report", str(run), "-o", str(full_disk / "r.html")], capsys)
    assert_one_line(code, err, "report")
    atlas = tmp_path / "a.duckdb"
    import_taf(None, atlas)
    code, _, err = run_cli(["atlas", "export", str(full_disk / "exp"), "--atlas", str(atlas)], capsys)
    assert_one_line(code, err, "export")
    assert list(full_disk.iterdir()) == []
    code, _, err = run_cli(["atlas", "import-taf", "--atlas", str(full_disk / "a.duckdb")], capsys)
    assert_one_line(code, err)


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_simulated_full_disk_while_writing_a_run(tmp_path: Path, monkeypatch) -> None:
    import gammalens.runs.writer as rd
    from gammalens.errors import GammalensError

    class Profile:
        def save(self, path: Path, layout: str = 'full') -> None:
            Path(path).write_bytes(b"x")

    monkeypatch.setattr(rd, "write_fits_csv", enospc)
    with pytest.raises(GammalensError, match="No space left"):
        rd.RunWriter(tmp_path / "runs", lazy=True).write({"model": {"id": "m"}, "settings": {}}, [], Profile())
    assert not (tmp_path / "runs").exists()


def test_simulated_full_disk_on_report_output(tmp_path: Path, monkeypatch, capsys) -> None:
    run = write_fixture_run(tmp_path / "runs")
    monkeypatch.setattr(Path, "write_text", enospc)
    code, _, err = run_cli(["report", str(run), "-o", str(tmp_path / "r.html")], capsys)
    assert_one_line(code, err, "No space left")
    assert not (tmp_path / "r.html").exists()


def test_atlas_commit_failure_is_one_atlas_error() -> None:
    import duckdb

    from gammalens.atlas.store import AtlasError, transaction

    class Con:
        def __init__(self) -> None:
            self.sql: list[str] = []

        def execute(self, sql: str) -> None:
            self.sql.append(sql)
            if sql == "COMMIT":
                raise duckdb.IOException("IO Error: No space left on device")

    con = Con()
    with pytest.raises(AtlasError, match=r"could not be committed.*No space left"), transaction(con):
        con.execute("INSERT …")
    assert con.sql == ["BEGIN TRANSACTION", "INSERT …", "COMMIT", "ROLLBACK"]


def test_truncated_atlas_file(tmp_path: Path, capsys) -> None:
    from gammalens.atlas import import_taf

    atlas = tmp_path / "a.duckdb"
    import_taf(None, atlas)
    data = atlas.read_bytes()
    for size in (len(data) // 2, 100):
        atlas.write_bytes(data[:size])
        code, _, err = run_cli(["atlas", "list", "--atlas", str(atlas)], capsys)
        assert_one_line(code, err)


# --- malformed run directories ------------------------------------------------------------------------------

def _corrupt(run: Path, how: str) -> Path:
    if how == "manifest-list":
        (run / "manifest.json").write_text("[]")
    elif how == "manifest-truncated":
        (run / "manifest.json").write_text((run / "manifest.json").read_text()[:40])
    elif how == "format-version":
        m = json.loads((run / "manifest.json").read_text())
        (run / "manifest.json").write_text(json.dumps(m | {"format": "gammalens.run/9"}))
    elif how == "no-settings":
        m = json.loads((run / "manifest.json").read_text())
        m.pop("settings")
        (run / "manifest.json").write_text(json.dumps(m))
    elif how == "fits-garbage":
        (run / "fits.csv").write_text("name,scope\nx,y,z\n")
    elif how == "fits-missing":
        (run / "fits.csv").unlink()
    elif how == "profile-corrupt":
        (run / "profile.npz").write_bytes(b"PK\x03\x04 not a zip")
    elif how == "a-file":
        shutil.rmtree(run)
        run.write_text("not a directory")
    elif how == "missing":
        shutil.rmtree(run)
    return run


@pytest.mark.parametrize("how", ["manifest-list", "manifest-truncated", "format-version", "no-settings",
                                 "fits-garbage", "fits-missing", "profile-corrupt", "a-file", "missing"])
@pytest.mark.parametrize("command", ["verify", "record"])
def test_malformed_run_directories(tmp_path: Path, capsys, how: str, command: str) -> None:
    run = _corrupt(write_fixture_run(tmp_path / "runs"), how)
    argv = ["verify", str(run)] if command == "verify" else ["atlas", "record", str(run), "--atlas",
                                                              str(tmp_path / "a.duckdb")]
    code, _, err = run_cli(argv, capsys)
    assert_one_line(code, err)


def test_verify_checks_the_reported_numbers(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    import csv

    code, out, err = run_cli(["measure", str(tiny_llama_dir), "--context", "32", "--windows", "2", "--bootstrap", "20",
                              "--no-atlas", "--no-report", "--out", str(tmp_path / "runs"), "--quiet"], capsys)
    assert code == 0, err
    run = Path(out.strip())
    code, out, _ = run_cli(["verify", str(run)], capsys)
    assert code == 0 and "verified" in out
    with (run / "fits.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1]["sink_mass"] = str(float(rows[1]["sink_mass"]) + 0.01)     # a head's reported sink mass, γ untouched
    with (run / "fits.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    code, out, _ = run_cli(["verify", str(run)], capsys)
    assert code == 1 and "sink_mass differs on 1 row" in out
    m = json.loads((run / "manifest.json").read_text())
    m["result"]["phase"] = "B" if m["result"]["phase"] != "B" else "A"
    (run / "manifest.json").write_text(json.dumps(m))
    code, out, _ = run_cli(["verify", str(run)], capsys)
    assert code == 1 and "manifest's result phase" in out


# --- models, corpora, configs and the hub -------------------------------------------------------------------

def test_zero_layer_model_and_model_without_tokenizer(tmp_path: Path, capsys) -> None:
    import transformers

    from tests.conftest import build_tiny, copy_tokenizer

    cfg = transformers.LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=0, intermediate_size=64,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    zero = tmp_path / "zero"
    transformers.LlamaForCausalLM(cfg).save_pretrained(zero)
    copy_tokenizer(zero)
    code, _, err = run_cli(["measure", str(zero), "--context", "32", "--out", str(tmp_path / "runs")], capsys)
    assert_one_line(code, err, "num_hidden_layers = 0")
    bare = tmp_path / "bare"
    build_tiny("llama_gqa").save_pretrained(bare)
    code, _, err = run_cli(["measure", str(bare), "--context", "32", "--out", str(tmp_path / "runs")], capsys)
    assert_one_line(code, err, "no tokenizer files")
    assert not (tmp_path / "runs").exists()


def test_whitespace_only_corpus(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "blank.txt"
    text.write_text("  \n\n\t \n" * 50)
    code, _, err = run_cli(["measure", str(tiny_llama_dir), "--corpus", str(text), "--context", "32",
                            "--out", str(tmp_path / "runs")], capsys)
    assert_one_line(code, err, "empty")


@pytest.mark.parametrize("argv", [
    ["--gpu-mem", "inf"], ["--gpu-mem", "nan"], ["--activation-gib", "inf"], ["--activation-gib", "1e9"],
    ["--eps", "1"], ["--batch", "0"], ["--context", "0"],
])
def test_card_with_nonsense_values(argv: list[str], capsys) -> None:
    code, _, err = run_cli(["card", str(TINY_DIR), *argv], capsys)
    assert_one_line(code, err)


@pytest.mark.parametrize("patch", [
    {"num_hidden_layers": 0}, {"num_hidden_layers": 2.5}, {"num_attention_heads": "many"},
    {"num_attention_heads": -4}, {"hidden_size": float("nan")}, {"max_position_embeddings": 10**30},
    {"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}},
])
def test_card_with_nonsense_configs(tmp_path: Path, capsys, patch: dict) -> None:
    cfg = json.loads((TINY_DIR / "config.json").read_text()) | patch
    file = tmp_path / "config.json"
    file.write_text(json.dumps(cfg).replace("NaN", "1e999999").replace("1e999999", "NaN"))
    code, _, err = run_cli(["card", str(file)], capsys)
    assert_one_line(code, err)


@pytest.mark.parametrize("command", [["card", "nobody/no-model"], ["measure", "nobody/no-model"]])
def test_unreachable_hub_fails_fast_in_one_line(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"      # nothing listens on the discard port: like no network
    t0 = time.perf_counter()
    proc = subprocess.run([str(SCRIPT), *command, "--out", str(tmp_path / "runs")] if command[0] == "measure"
                          else [str(SCRIPT), *command], capture_output=True, text=True, env=env, timeout=300)
    assert_one_line(proc.returncode, proc.stderr, "unreachable")
    assert "Retrying" not in proc.stderr and time.perf_counter() - t0 < 120


def test_usage_error_hint_names_the_command(capsys) -> None:
    code, _, err = run_cli(["measure", "--windows", "many"], capsys)
    assert_one_line(code, err, "--windows", "see `gammalens measure --help`")
