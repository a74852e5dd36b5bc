"""``gammalens grok``: run, sweep, report (the grokking early warning and its multi-seed test, docs/grokking.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gammalens.cli import options as opt
from gammalens.cli.failure import Interrupted, ctrl_c_is_an_error, stage
from gammalens.errors import GammalensError

grok_app = typer.Typer(name="grok", no_args_is_help=True,
                       help="Grokking early warning: inter-layer CKA monitor and its multi-seed test.")

# the run options of `run` and `sweep`, defined once; each maps onto the RunConfig field of its name (RUN_OPTIONS)
OptTask = Annotated[str, typer.Option(help="modular ((a + b) mod p) or parity (sparse parity).")]
OptP = Annotated[int, typer.Option("--p", help="Modulus p.")]
OptFrac = Annotated[float, typer.Option(help="Fraction of the p² pairs used for training.")]
OptDModel = Annotated[int, typer.Option(help="Model width.")]
OptHeads = Annotated[int, typer.Option(help="Attention heads.")]
OptDMlp = Annotated[int, typer.Option(help="MLP width.")]
OptLr = Annotated[float, typer.Option(help="AdamW learning rate (betas 0.9, 0.98; 10 warm-up steps).")]
OptWd = Annotated[float, typer.Option(help="AdamW weight decay.")]
OptSteps = Annotated[int, typer.Option(help="Step budget (full-batch steps).")]
OptEvery = Annotated[int, typer.Option(help="Evaluate accuracy and CKA every N steps.")]
OptStopAfter = Annotated[int | None, typer.Option(help="Stop this many steps after grokking (default: full budget).")]
RUN_OPTIONS = ("task", "p", "train_fraction", "d_model", "n_heads", "d_mlp", "lr", "weight_decay", "steps", "every",
               "stop_after_grok", "device")

# shared by `sweep` and `report`
OptDoc = Annotated[Path, typer.Option(help="Markdown file whose results block is rewritten.")]


def _run_config(params: dict[str, Any], **extra: float | int) -> Any:
    """The :class:`~gammalens.grok.experiment.RunConfig` of a command's run options (RUN_OPTIONS) and EXTRA."""
    from gammalens.grok.experiment import RunConfig

    return RunConfig(**{name: params[name] for name in RUN_OPTIONS}, **extra)


def _print_verdict(v: Any, doc: Path) -> None:
    print(f"detected {v.detected}/{v.grokked} grokking runs; false alarms {v.false_alarms}/{v.controls}; "
          f"Fisher p {v.fisher_p:.3g} → {doc}")


@grok_app.command("run")
def grok_run(
    out: Annotated[Path, typer.Option(help="Folder for <name>.csv (curves) and <name>.json (outcome).")] = Path("grok"),
    name: Annotated[str, typer.Option(help="Run name (file stem).")] = "run",
    task: OptTask = "modular", p: OptP = 97, train_fraction: OptFrac = 0.5, d_model: OptDModel = 128,
    n_heads: OptHeads = 4, d_mlp: OptDMlp = 512, lr: OptLr = 1e-3, weight_decay: OptWd = 1.0,
    steps: OptSteps = 20_000, every: OptEvery = 50, stop_after_grok: OptStopAfter = None,
    device: opt.TorchDevice = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the split, probe batch and weights.")] = 0,
    cka_penalty: Annotated[float, typer.Option(help="λ of the penalty λ·(1 − CKA) (the intervention).")] = 0.0,
    threads: opt.Threads = 1,
) -> None:
    """Train one modular-arithmetic (or sparse-parity) run with the CKA monitor and report when it grokked."""
    import torch

    from gammalens.grok.experiment import train_run

    torch.set_num_threads(threads)
    cfg = _run_config(locals(), seed=seed, cka_penalty=cka_penalty)
    with ctrl_c_is_an_error(one_run=True):  # train_run marks the run's stages (measured, staged, written)
        r = train_run(cfg, out, name)
        print(f"{name}: grokking step {r.grok_step}, detector fired at {r.fire_step}, lead {r.lead}, "
              f"final train/test accuracy {r.final_train_acc:.3f}/{r.final_test_acc:.3f} ({r.seconds:.0f} s) → "
              f"{out / (name + '.csv')}")
        stage("done")


@grok_app.command("sweep")
def grok_sweep(
    out: Annotated[Path, typer.Option(help="Runs folder (one csv+json per run; finished runs are skipped).")]
    = Path("docs/grokking/runs"),
    doc: OptDoc = Path("docs/grokking.md"),
    task: OptTask = "modular", p: OptP = 97, train_fraction: OptFrac = 0.5, d_model: OptDModel = 128,
    n_heads: OptHeads = 4, d_mlp: OptDMlp = 512, lr: OptLr = 1e-3, weight_decay: OptWd = 1.0,
    steps: OptSteps = 20_000, every: OptEvery = 50, stop_after_grok: OptStopAfter = None,
    device: opt.TorchDevice = "cpu",
    grok_seeds: Annotated[int, typer.Option(help="Seeds of the grokking condition.")] = 16,
    control_seeds: Annotated[int, typer.Option(help="Seeds per control (weight decay 0; small fraction).")] = 4,
    control_fraction: Annotated[float, typer.Option(help="Training fraction of the small-fraction control.")] = 0.15,
    parity_seeds: Annotated[int, typer.Option(help="Sparse-parity runs.")] = 2,
    parity_steps: Annotated[int | None, typer.Option(help="Step budget of the sparse-parity runs (default: --steps).")]
    = None,
    penalty_seeds: Annotated[int, typer.Option(help="Runs with the CKA penalty.")] = 3,
    penalty: Annotated[float, typer.Option(help="λ of the CKA penalty.")] = 1.0,
    only: Annotated[str | None, typer.Option(help="Comma-separated conditions to run (grok,wd0,smallfrac,penalty,"
                                             "parity); default all.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (one thread each).")] = 1,
) -> None:
    """Run the multi-seed sweep (resumable), then rebuild the results table and plots of DOC."""
    from gammalens.grok.analysis import write_report
    from gammalens.grok.sweep import SweepConfig, run_sweep

    base = _run_config(locals())
    cfg = SweepConfig(base=base, grok_seeds=grok_seeds, control_seeds=control_seeds,
                      control_fraction=control_fraction, parity_seeds=parity_seeds, parity_steps=parity_steps,
                      penalty_seeds=penalty_seeds,
                      penalty=penalty, workers=workers)
    conditions = None if only is None else [x.strip() for x in only.split(",")]
    command = (f"gammalens grok sweep --out {out} --doc {doc} --task {task} --p {p} --train-fraction {train_fraction} "
               f"--d-model {d_model} --n-heads {n_heads} --d-mlp {d_mlp} --lr {lr} --weight-decay {weight_decay} "
               f"--steps {steps} --every {every}"
               + ("" if stop_after_grok is None else f" --stop-after-grok {stop_after_grok}")
               + f" --grok-seeds {grok_seeds} --control-seeds {control_seeds} --control-fraction {control_fraction} "
               f"--parity-seeds {parity_seeds}" + ("" if parity_steps is None else f" --parity-steps {parity_steps}")
               + f" --penalty-seeds {penalty_seeds} --penalty {penalty} --workers {workers}")
    # the runs' stages are marked by train_run, the document's ("reported") by write_report; "done" here
    from gammalens.runs.atomic import AtomicWriteError

    with ctrl_c_is_an_error(lambda kind: _sweep_interrupted(kind, cfg, conditions, out, doc)):
        try:
            run_sweep(cfg, out, only=conditions)
            verdict = write_report(out, doc, command)
        except AtomicWriteError as err:  # a full disk: say what the sweep kept
            names, done = _sweep_progress(cfg, conditions, out)
            kept = (f"{len(done)} of {len(names)} run(s) of the sweep are complete in {out}"
                    + (f", {doc} was not rebuilt" if len(done) == len(names) else ""))
            raise GammalensError(f"{err}; {kept} — free some space and run the same command to resume") from None
        _print_verdict(verdict, doc)
        stage("done")


def _sweep_progress(cfg: Any, only: list[str] | None, out: Path) -> tuple[list[str], list[str]]:
    """(every run of the sweep, those complete in OUT), from the disk."""
    from gammalens.grok.sweep import complete, planned

    names = [n for n, _ in planned(cfg, only)]
    return names, complete(out, names)


def _sweep_interrupted(kind: str, cfg: Any, only: list[str] | None, out: Path, doc: Path) -> Interrupted:
    """What an interrupted `grok sweep` kept: its finished runs (on disk) and whether DOC was rebuilt."""
    from gammalens.runs.atomic import life

    names, done = _sweep_progress(cfg, only, out)
    if len(done) < len(names):
        return Interrupted(f"{kind}: {len(done)} of {len(names)} run(s) of the sweep are complete in {out}, "
                           f"{len(names) - len(done)} not; the runs in progress left nothing half-written — run the "
                           "same command to resume (finished runs are skipped)")
    facts = life()
    if facts.get("report") is None or Path(facts["report"]) != Path(doc):
        return Interrupted(f"{kind} after every run of the sweep was complete in {out} ({len(names)}); {doc} was "
                           f"not rebuilt — run the same command, or `gammalens grok report --runs {out} --doc {doc}`")
    return Interrupted(f"{kind} after the sweep finished: {len(names)} run(s) complete in {out} and {doc} rebuilt; "
                       "all the work was committed", exit_code=0, notice=True)


@grok_app.command("report")
def grok_report(
    runs: Annotated[Path, typer.Option(help="Runs folder written by `gammalens grok sweep`.")]
    = Path("docs/grokking/runs"),
    doc: OptDoc = Path("docs/grokking.md"),
    command: Annotated[str, typer.Option(help="The sweep command to cite in the document.")] = "gammalens grok sweep",
) -> None:
    """Rebuild the results table and plots from finished runs (no training)."""
    from gammalens.grok.analysis import write_report

    with ctrl_c_is_an_error(one_run=True):  # write_report marks "reported" once the document is in place
        _print_verdict(write_report(runs, doc, command), doc)


def register(app: typer.Typer) -> None:
    """Add the ``grok`` group to APP."""
    app.add_typer(grok_app, name="grok")
