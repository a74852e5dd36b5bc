"""``gammalens kv``: plan (the KV plan from a run: table on stdout, JSON with ``--json``; ``--policy hybrid``
gives the measured retrieval heads every key).

Flags are checked before the run is read: the counts and sizes by their options' ranges, ε / budget / ratio by
:class:`~gammalens.kv.plan.PlanConfig`, and the two modes exclude each other (:func:`~gammalens.cli.options.exclusive`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gammalens.cli.options import exclusive, within

kv_app = typer.Typer(name="kv", help="KV-cache plans from measured profiles: per-(layer, KV head) γ windows.",
                     no_args_is_help=True)

DEFAULT_EPS = 0.05


@kv_app.command("plan")
def plan(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `gammalens measure` (causal RoPE model).")],
    eps: Annotated[float | None, typer.Option("--eps", help="ε mode: non-sink mass each query head may lose, in "
                                              f"(0, 1). Default: {DEFAULT_EPS} when neither --budget nor --ratio "
                                              "is given.")] = None,
    budget: Annotated[int | None, typer.Option("--budget", min=1, help="Budget mode: total tokens held over all "
                                               "layers and KV heads, sinks included.")] = None,
    ratio: Annotated[float | None, typer.Option("--ratio", callback=within(0, 1, high_open=True),
                                                help="Budget mode: compression ratio in [0, 1) of the full cache at "
                                                "--context.")] = None,
    context: Annotated[int | None, typer.Option("--context", min=2, help="Target context T (tokens); beyond the "
                                                "measured horizon the fitted law extends the profiles. Default: the "
                                                "run's.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Element type of the served cache, for the bytes.")] = "bf16",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the plan as JSON (usable by "
                                                   "GammaWindowCache.from_plan and GammaWindowPress.from_plan).")] = None,
    rows: Annotated[int, typer.Option("--rows", min=0, help="KV heads shown in the table (0: all).")] = 0,
    policy: Annotated[str, typer.Option("--policy", help="gamma: a γ window for every KV head; hybrid: the measured "
                                        "retrieval heads keep every key, the others get γ windows from the rest of "
                                        "the budget (needs --budget or --ratio and a run measured with "
                                        "--retrieval).")] = "gamma",
    retrieval_share: Annotated[float, typer.Option("--retrieval-share", help="Hybrid: share of the budget, in "
                                                   "[0, 1], offered to retrieval heads (each holds T tokens).")] = 0.5,
    retrieval_by: Annotated[str, typer.Option("--retrieval-by", help="Hybrid: rank retrieval heads by score (echo + "
                                              "induction), far_mass or random (the ablations).")] = "score",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Hybrid with --retrieval-by random: the draw.")] = 0,
) -> None:
    """Per-(layer, KV head) windows from RUN_DIR's exact profiles: ε mode, a budget by water-filling, or the hybrid."""
    from gammalens.kv.console import print_plan
    from gammalens.kv.plan import PlanConfig, plan_run

    exclusive({"eps": eps, "budget": budget, "ratio": ratio}, "eps", "budget", "ratio",
              why="--eps makes an ε plan, --budget and --ratio a budget plan")
    config = PlanConfig(eps=DEFAULT_EPS if eps is None else eps, budget=budget, ratio=ratio, context=context,
                        dtype=dtype, policy=policy, retrieval_share=retrieval_share,
                        retrieval_by=retrieval_by.replace("-", "_"), seed=seed)
    result = plan_run(run_dir, config)
    print_plan(result, rows=rows)
    if json_path is not None:
        print(result.save(json_path))


def register(app: typer.Typer) -> None:
    """Add the ``kv`` group to APP."""
    app.add_typer(kv_app, name="kv")
