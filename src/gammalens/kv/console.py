"""The KV plan as a terminal table: one row per (layer, KV head), then the totals against the full cache."""

from __future__ import annotations

from typing import Any


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def print_plan(plan: Any, rows: int = 0, console: Any = None) -> None:
    """Print ``plan`` (a :class:`~gammalens.kv.plan.KVPlan`) with rich; ``rows`` > 0 limits the head rows.

    ``console``: a rich Console; by default :func:`gammalens.terminal.console`, the terminal's width on a
    terminal and a wide page when piped, so the table's cells stay whole in a log, like every other table."""
    from rich.table import Table

    from gammalens import terminal

    d = plan.to_dict()
    mode = f"ε = {plan.eps:g}" if plan.mode == "eps" else "budget (water-filling)"
    hybrid = plan.policy == "hybrid"
    if hybrid:
        mode = f"hybrid: retrieval heads by {plan.retrieval_by}, the rest by water-filling"
    table = Table(title=f"KV plan · {d['model']['id']} · {mode} · T = {plan.context} · sinks = {plan.sink_tokens}")
    cols = ("layer", "KV head", "γ of its query heads", "window", "tokens", "lost mass (Σ q)", "max tail")
    for col in cols + (("retrieval",) if hybrid else ()):
        table.add_column(col, justify="left" if col.startswith("γ") else "right")
    heads = d["heads"] if rows <= 0 else d["heads"][:rows]
    for h in heads:
        cells = [str(h["layer"]), str(h["kv_head"]), " ".join(f"{g:.2f}" for g in h["gamma"]), str(h["window"]),
                 str(h["tokens"]), f"{h['lost']:.4f}", f"{h['tail_max']:.3f}"]
        table.add_row(*cells, *(["yes" if h["retrieval"] else ""] if hybrid else []))
    console = console or terminal.console()
    console.print(table)
    t = d["totals"]
    console.print(f"tokens {t['tokens']:,} of {t['full_tokens']:,} ({t['kept_fraction']:.1%}, compression "
                  f"{t['compression_ratio']:.1%}) · bytes {_bytes(t['bytes'])} of {_bytes(t['full_bytes'])} "
                  f"(keys+values, {plan.dtype_bytes:g} B/element, one sequence) · mean lost mass per query head "
                  f"{t['lost_mean']:.4f} · worst non-sink tail {t['tail_max']:.3f}")
    if hybrid:
        console.print(f"retrieval heads {t['retrieval_heads']} of {plan.window.size} KV heads, holding "
                      f"{t['retrieval_tokens_share']:.1%} of the tokens (all {plan.context} of the target context "
                      "each)")
