"""Terminal output of ``gammalens claims``: the ledger table, one claim, and verify's pass/fail lines."""

from __future__ import annotations

from typing import Any

from gammalens import terminal
from gammalens.claims.docs import verdict_mark
from gammalens.claims.ledger import Claim, Ledger
from gammalens.claims.verify import ReceiptResult

_STATUS = {"pass": "[green]✅ pass[/]", "fail": "[red]❌ fail[/]", "skipped": "[dim]⏭  skipped (slow: --slow)[/]"}


def make_console() -> Any:
    """The project's console (:func:`gammalens.terminal.console`): wide and colourless when piped."""

    return terminal.console()


def print_ledger(ledger: Ledger, console: Any = None) -> None:
    """The ledger as a table: id, claim, book's figure, ours, verdict."""
    from rich.table import Table

    console = console or make_console()
    table = Table(title=f"Claims ledger ({len(ledger.claims)} claims)", show_lines=True)
    for name, ratio in (("id", 2), ("claim", 4), ("book's figure", 3), ("ours", 4), ("verdict", 2)):
        table.add_column(name, ratio=ratio, overflow="fold")
    for c in ledger.claims:
        table.add_row(c.id, c.claim, c.book_figure, c.ours, verdict_mark(c.verdict))
    console.print(table)
    console.print("details: gammalens claims show ID · re-run receipts: gammalens claims verify [ID …] [--slow]")


def print_claim(claim: Claim, console: Any = None) -> None:
    """One claim with its evidence, receipts and the command that checks it."""
    from rich.markup import escape

    console = console or make_console()
    console.print(f"[bold]{claim.id}[/] — {verdict_mark(claim.verdict)}")
    for label, text in (("claim", claim.claim), ("source", claim.source),
                        ("book", f"{claim.book_receipt} — {claim.book_figure}"), ("ours", claim.ours),
                        ("why", claim.why), ("check", claim.command)):
        console.print(f"[bold]{label:>8}[/]  {escape(text)}")
    if claim.evidence:
        console.print(f"[bold]{'evidence':>8}[/]  {escape(', '.join(claim.evidence))}")
    for i, r in enumerate(claim.receipts, 1):
        expect = "; ".join(f"{e.name} {e.describe()}" for e in r.expect)
        console.print(f"[bold]{'receipt ' + str(i):>8}[/]  {escape(r.command)}{' (slow)' if r.slow else ''}\n"
                      f"{'':>10}scale: {escape(r.scale)}\n{'':>10}expect: {escape(expect)}")


def print_result(claim: Claim, result: ReceiptResult, console: Any = None) -> None:
    """One verify line: status, claim id, the figures obtained against their expectations, seconds."""
    from rich.markup import escape

    console = console or make_console()
    if result.status == "skipped":
        console.print(f"{_STATUS['skipped']}  {claim.id}  {escape(result.receipt.scale)}")
        return
    parts = []
    for e in result.receipt.expect:
        got = result.figures.get(e.name)
        mark = " ✗" if e.name in result.failed else ""
        parts.append(f"{e.name} = {'—' if got is None else f'{got:.6g}'} (expected {e.describe()}){mark}")
    detail = escape(result.error) if result.error else escape("; ".join(parts))
    console.print(f"{_STATUS[result.status]}  [bold]{claim.id}[/]  {detail}  [dim]{result.seconds:.1f} s[/]")


def print_without_receipt(claim: Claim, console: Any = None) -> None:
    """A claim that has nothing to re-run (not tested yet, or not testable here), with the reason."""
    from rich.markup import escape

    console = console or make_console()
    if claim.verdict in ("not tested yet", "not testable here"):
        console.print(f"[dim]{verdict_mark(claim.verdict)}[/]  [bold]{claim.id}[/]  no receipt: {escape(claim.why)}")
    else:
        console.print(f"[dim]{verdict_mark(claim.verdict)}[/]  [bold]{claim.id}[/]  receipt is a command, not run "
                      f"here: {escape(claim.command)}")


def print_totals(results: list[ReceiptResult], console: Any = None) -> None:
    """The closing line: how many receipts passed, failed and were skipped."""
    console = console or make_console()
    n = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skipped")}
    console.print(f"{n['pass']} passed, {n['fail']} failed, {n['skipped']} skipped (slow) of {len(results)} receipts")
