"""The ``gammalens`` command: one entry point; each subcommand maps onto a module.

Every :class:`~gammalens.errors.GammalensError` (bad input) becomes one line on stderr and exit code 2;
Ctrl-C too, after the run in progress has removed its partial output.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from gammalens.errors import GammalensError

app = typer.Typer(
    name="gammalens",
    help="Measure how attention decays with query–key distance (A(d) ∝ d^-γ), exactly, with receipts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def measure(
    model: Annotated[
        str | None,
        typer.Argument(help="Hub id, local model directory, or a short name ('minilm'). Default: the embedded model."),
    ] = None,
    corpus: Annotated[
        str,
        typer.Option(help="'stdlib' (embedded Python standard library text), 'random', a text file or folder, "
                     "'FILE.jsonl[:field]', or 'hf:NAME[:config][:split][:field]' (a Hugging Face dataset)."),
    ] = "stdlib",
    context: Annotated[int | None, typer.Option(help="Tokens per window (query–key distances up to context−1). "
                                                "Default: 512, or the model's maximum positions if smaller.")] = None,
    windows: Annotated[int, typer.Option(help="Number of windows (documents) to measure.")] = 16,
    sink_tokens: Annotated[int, typer.Option(help="The first K key positions are sink keys: their mass is "
                                             "reported as sink mass and kept out of the decay profile.")] = 1,
    fit_range: Annotated[str | None, typer.Option(help="Distance range A:B of the fit, 1 ≤ A < B < context. "
                                                  "Default 1:context/2.")] = None,
    dtype: Annotated[str, typer.Option(help="Model weights dtype: fp32, bf16 or fp16. The probe always "
                                       "accumulates in fp32/fp64.")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (device_map across GPUs).")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 4,
    chunk_size: Annotated[int | None, typer.Option(help="Queries per probe chunk (peak extra memory ∝ chunk × "
                                                   "context). Default: chosen from a 256 MiB budget.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples over documents for the 95% CI.")] = 200,
    out: Annotated[Path, typer.Option(help="Parent directory of the run directory.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed for window selection, random corpora and the bootstrap.")] = 0,
    allow_extrapolation: Annotated[bool, typer.Option(help="Allow a context longer than the model's maximum "
                                                      "positions.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar or summary; print the run directory only.")] = False,
) -> None:
    """Measure per-head γ, sink mass and phase of MODEL on a corpus; write a run directory."""

    from gammalens.measurement import MeasureConfig
    from gammalens.measurement import measure as run_measure
    from gammalens.summary import print_summary

    config = MeasureConfig(
        model=model, corpus=corpus, context=context, windows=windows, sink_tokens=sink_tokens,
        fit_range=fit_range, dtype=dtype, device=device, batch_size=batch_size, chunk_size=chunk_size,
        bootstrap=bootstrap, seed=seed, allow_extrapolation=allow_extrapolation,
    )
    with _ctrl_c_is_an_error():
        result = run_measure(config=config, out=out, progress=not quiet)
    if quiet:
        print(result.run_dir)
    else:
        print_summary(result)


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `gammalens measure`.")],
    tolerance: Annotated[float, typer.Option(help="Largest accepted |Δγ| per head and for the model.")] = 1e-3,
) -> None:
    """Re-run a measurement from its manifest and check that γ matches: the run's receipt."""
    from gammalens.verify import print_verdict, verify_run

    with _ctrl_c_is_an_error():
        verdict = verify_run(run_dir, tolerance=tolerance)
    print_verdict(verdict)
    if not verdict.ok:
        raise typer.Exit(1)


@contextlib.contextmanager
def _ctrl_c_is_an_error() -> Iterator[None]:
    """Turn Ctrl-C into a GammalensError here: click would otherwise swallow it in non-standalone mode."""
    try:
        yield
    except KeyboardInterrupt:
        raise GammalensError("interrupted; no partial output was left behind") from None


@app.command()
def card(
    model: Annotated[str, typer.Argument(help="A config.json, a directory holding one, or a hub id (online).")],
    context: Annotated[int | None, typer.Option(help="Context length T in tokens. Default: the config's "
                                                "max_position_embeddings.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Weights dtype: fp32, bf16, fp16, fp8, int8 or int4. "
                                              "Default: the config's torch_dtype, else bf16.")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="KV-cache dtype. Default: the weights dtype.")] = None,
    batch: Annotated[int, typer.Option(help="Sequences held in the KV cache at once.")] = 1,
    gpu_mem: Annotated[float, typer.Option(help="GPU memory in GiB.")] = 80.0,
    activation_gib: Annotated[float | None, typer.Option(help="Memory kept for activations, CUDA context and "
                                                         "fragmentation, in GiB. Default: 10% of --gpu-mem.")] = None,
    eps: Annotated[float, typer.Option(help="Mass fraction outside the predicted KV window D_f.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Predict from a config alone: attention type, RoPE scales, γ_Padé, regime, KV cache and GPU fit."""
    import json

    from gammalens.theory.card import build_card, render

    result = build_card(model, context=context, dtype=dtype, kv_dtype=kv_dtype, batch=batch, gpu_mem_gib=gpu_mem,
                        activation_gib=activation_gib, eps=eps)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        render(result)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning bad input into one line and exit code 2."""
    try:
        rc = app(args=argv, standalone_mode=False)  # non-standalone click returns typer.Exit's code
        sys.exit(rc if isinstance(rc, int) else 0)
    except GammalensError as err:
        print(f"gammalens: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("gammalens: error: interrupted; no partial output was left behind", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.exceptions.UsageError):
            print(f"gammalens: error: {err.format_message()}", file=sys.stderr)
            sys.exit(2)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
