"""``gammalens kv``: plan (the KV plan from a run: table on stdout, JSON with ``--json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

kv_app = typer.Typer(name="kv", help="KV-cache plans from measured profiles: per-(layer, KV head) γ windows.",
                     no_args_is_help=True)


@kv_app.command("plan")
def plan(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `gammalens measure` (causal RoPE model).")],
    eps: Annotated[float, typer.Option("--eps", help="ε mode: non-sink mass each query head may lose, in (0, 1).")] = 0.05,
    budget: Annotated[int | None, typer.Option("--budget", help="Budget mode: total tokens held over all layers and "
                                               "KV heads, sinks included.")] = None,
    ratio: Annotated[float | None, typer.Option("--ratio", help="Budget mode: compression ratio in [0, 1) of the "
                                                "full cache at --context.")] = None,
    context: Annotated[int | None, typer.Option("--context", help="Target context T (tokens); beyond the measured "
                                                "horizon the fitted law extends the profiles. Default: the run's.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Element type of the served cache, for the bytes.")] = "bf16",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the plan as JSON (usable by "
                                                   "GammaWindowCache.from_plan and GammaWindowPress.from_plan).")] = None,
    rows: Annotated[int, typer.Option("--rows", help="KV heads shown in the table (0: all).")] = 0,
) -> None:
    """Per-(layer, KV head) windows from RUN_DIR's exact profiles: ε mode, or a budget by water-filling."""
    from gammalens.kv.console import print_plan
    from gammalens.kv.plan import PlanConfig, plan_run

    result = plan_run(run_dir, PlanConfig(eps=eps, budget=budget, ratio=ratio, context=context, dtype=dtype))
    print_plan(result, rows=rows)
    if json_path is not None:
        print(result.save(json_path))


def register(app: typer.Typer) -> None:
    """Add the ``kv`` group to APP."""
    app.add_typer(kv_app, name="kv")
