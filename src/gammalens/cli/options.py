"""The command-line options that commands in different modules share, each defined once with one help text:
those of ``measure`` and ``sinks`` (and later commands that measure), and those of the commands that train or
measure small models (``zoo``, ``grok``). :func:`measure_config` maps a command's parameters onto
:class:`~gammalens.measuring.pipeline.MeasureConfig` (every field a flag of the same name: ``tests/test_cli_options.py``).
An option shared only within one command group is defined once in that group's module.

Nonsense values are refused before any work, in one line and exit code 2: a count, size or positive quantity has
typer's ``min=`` / ``max=`` on its option (an open bound such as "> 0": ``callback=within(0, low_open=True)``; where the
library's own check words it better, that check, which runs first thing in the command); flags that exclude each
other go through :func:`exclusive`
(``tests/test_fault_flags.py`` walks every command of the groups it covers and passes each number option a negative).

>>> def measure(model: ModelArg = None, context: Context = None, windows: Windows = 16) -> None: ...  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

# --- what to measure ----------------------------------------------------------------------------------------
ModelArg = Annotated[str | None, typer.Argument(
    help="Hub id, local model directory, a .gguf file, or a short name ('gammalens-tiny', 'minilm', 'smollm2'). "
         "Default: gammalens-tiny.")]
GgufFile = Annotated[str | None, typer.Option(
    help="With MODEL a directory: the GGUF file in it to load (dequantised; converted once and cached).")]
Corpus = Annotated[str, typer.Option(
    help="'stdlib' (embedded Python standard library text), 'random', a text file or folder, "
         "'FILE.jsonl[:field]', or 'hf:NAME[:config][:split][:field]' (a Hugging Face dataset).")]
Context = Annotated[int | None, typer.Option(
    help="Tokens per window (query–key distances up to context−1). Default: 512, or the model's maximum "
         "positions if smaller.")]
Windows = Annotated[int, typer.Option(help="Number of windows (documents) to measure.")]
SinkTokens = Annotated[int, typer.Option(
    help="The first K key positions are sink keys: their mass is reported as sink mass and kept out of the decay "
         "profile.")]
FitRange = Annotated[str | None, typer.Option(
    help="Distance range A:B of the fit, 1 ≤ A < B < context. Default 1:context/2.")]

# --- how ----------------------------------------------------------------------------------------------------
Dtype = Annotated[str, typer.Option(
    help="Model weights dtype: fp32, bf16 or fp16. The probe always accumulates in fp32/fp64.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (device_map across GPUs).")]
BatchSize = Annotated[int, typer.Option(help="Windows per forward pass.")]
ChunkSize = Annotated[int | None, typer.Option(
    help="Queries per probe chunk (peak extra memory ∝ chunk × context). Default: chosen from a 32 MiB budget.")]
Bootstrap = Annotated[int, typer.Option(help="Bootstrap resamples over documents for the 95% CI.")]
Seed = Annotated[int, typer.Option(help="Seed for window selection, random corpora and the bootstrap.")]
AllowExtrapolation = Annotated[bool, typer.Option(
    help="Allow a context longer than the model's maximum positions.")]
Eps = Annotated[float, typer.Option(
    help="ε of the KV window D_f: fraction of non-sink mass allowed outside it.")]

# --- where the run goes -------------------------------------------------------------------------------------
Out = Annotated[Path, typer.Option(help="Parent directory of the run directory.")]
ProfileLayout = Annotated[str, typer.Option(
    help="How profile.npz is stored: full (every distance, exact float64), compact or compact:E (distances ≤ E "
         "exact, default 512; log-spaced bin sums beyond, 32 per octave), or auto (full up to 64 MiB). Fits and "
         "D_f are the same in every layout.")]
AtlasFile = Annotated[Path | None, typer.Option(
    help="Atlas file to record the run in (default: $GAMMALENS_ATLAS, else ~/.local/share/gammalens/atlas.duckdb).")]
NoAtlas = Annotated[bool, typer.Option("--no-atlas", help="Do not record the run in the atlas.")]
NoReport = Annotated[bool, typer.Option("--no-report", help="Do not write report.html into the run directory.")]
Quiet = Annotated[bool, typer.Option(help="No progress bar or summary; print the run directory only.")]
AsJson = Annotated[bool, typer.Option(
    "--json", help="Print a JSON summary (run directory, model result, per-layer rows) instead of the tables.")]

# --- training and measuring small models (zoo, grok) ---------------------------------------------------------
TorchDevice = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
Threads = Annotated[int, typer.Option(help="CPU threads for torch.", min=1)]


def within(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[Any], Any]:
    """An option callback refusing values outside [LOW, HIGH] (an end left open with ``low_open`` / ``high_open``):
    what typer's ``min=`` / ``max=`` cannot say, e.g. a learning rate that must be > 0. None (not given) passes.

    >>> within(0, low_open=True)(0.5)
    0.5
    """
    def check(value: Any) -> Any:
        if value is None:
            return value
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or value != value:  # NaN is in no range
            if low is not None and high is not None:
                where = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            elif low is not None:
                where = f"{'>' if low_open else '≥'} {low:g}"
            else:
                where = f"{'<' if high_open else '≤'} {high:g}"
            raise typer.BadParameter(f"must be {where} (got {value:g})")
        return value

    return check


def _given(value: Any) -> bool:
    return value is not None and value is not False and value != [] and value != ()


def flag(name: str) -> str:
    """The command-line spelling of parameter NAME: ``'json_path'`` → ``'--json-path'``."""
    return "--" + name.replace("_", "-")


class ConflictingFlags(typer.BadParameter):
    """Flags that exclude each other: a usage error (exit 2, the command's help hint) worded as it is."""

    def format_message(self) -> str:
        return self.message


def exclusive(params: dict[str, Any], *names: str, why: str = "") -> None:
    """Refuse flags that exclude each other: at most one of NAMES may be given (a value other than None/False).

    Raises :class:`ConflictingFlags` (a ``typer.BadParameter``), which the CLI prints as one line (exit code 2) with
    the command's help hint.

    >>> exclusive({"eps": None, "budget": 100}, "eps", "budget")
    >>> try:
    ...     exclusive({"eps": 0.2, "budget": 100}, "eps", "budget")
    ... except typer.BadParameter as err:
    ...     print(err.message)
    --eps and --budget exclude each other: pass one, not both
    """
    given = [flag(n) for n in names if _given(params.get(n))]
    if len(given) < 2:
        return
    both = "pass one, not both" if len(given) == 2 else "pass only one of them"
    listed = " and ".join(given) if len(given) == 2 else ", ".join(given[:-1]) + " and " + given[-1]
    raise ConflictingFlags(f"{listed} exclude each other: {both}" + (f" ({why})" if why else ""))


def measure_config(params: dict[str, Any]) -> Any:
    """The :class:`~gammalens.measuring.pipeline.MeasureConfig` of a command's parameters (those named like its fields;
    a field the command has no flag for keeps its default)."""
    from dataclasses import fields

    from gammalens.measuring.config import MeasureConfig

    names = {f.name for f in fields(MeasureConfig)}
    return MeasureConfig(**{k: v for k, v in params.items() if k in names})
