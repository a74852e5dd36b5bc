"""``gammalens claims``: list, show, verify, docs (with no subcommand: list)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

claims_app = typer.Typer(name="claims", help="The framework's claims as a ledger: the book's figure beside ours, a "
                         "verdict, and receipts that re-run.", invoke_without_command=True)

LedgerPath = Annotated[Path | None, typer.Option("--ledger", help="A ledger file other than the shipped one "
                                                 "(TOML, the format of src/gammalens/claims/ledger.toml).")]


@claims_app.callback()
def claims_main(ctx: typer.Context, ledger: LedgerPath = None) -> None:
    """With no subcommand: list the ledger (id, claim, book's figure, ours, verdict)."""
    if ctx.invoked_subcommand is None:
        claims_list(ledger)


@claims_app.command("list")
def claims_list(ledger: LedgerPath = None) -> None:
    """List the ledger as a table: id, claim, book's figure, ours, verdict."""
    from gammalens.claims.console import print_ledger
    from gammalens.claims.ledger import load_ledger

    print_ledger(load_ledger(ledger))


@claims_app.command("show")
def claims_show(claim_id: Annotated[str, typer.Argument(help="A claim id, e.g. thermo.cv-erratum.")],
                ledger: LedgerPath = None) -> None:
    """Print one claim with its evidence, receipts and the exact command that checks it."""
    from gammalens.claims.console import print_claim
    from gammalens.claims.ledger import load_ledger

    print_claim(load_ledger(ledger).get(claim_id))


@claims_app.command("verify")
def claims_verify(
    claim_ids: Annotated[list[str] | None, typer.Argument(help="Claim ids (default: every claim).")] = None,
    slow: Annotated[bool, typer.Option("--slow", "--all", help="Also run the slow receipts (re-training the zoo, "
                                       "full sweeps: minutes to hours).")] = False,
    ledger: LedgerPath = None,
) -> None:
    """Re-run the receipts and compare each figure with its expectation; exit 1 if one no longer reproduces."""
    from gammalens.claims.console import make_console, print_result, print_totals, print_without_receipt
    from gammalens.claims.ledger import load_ledger
    from gammalens.claims.verify import all_passed, verify_claims

    console, led = make_console(), load_ledger(ledger)
    results = verify_claims(led, claim_ids or [], slow=slow, on_result=lambda c, r: print_result(c, r, console))
    for claim in led.select(claim_ids or []):
        if not claim.receipts:
            print_without_receipt(claim, console)
    print_totals(results, console)
    if not all_passed(results):
        raise typer.Exit(1)


@claims_app.command("docs")
def claims_docs(
    out: Annotated[Path, typer.Option(help="The Markdown file to write.")] = Path("docs/claims.md"),
    check: Annotated[bool, typer.Option(help="Write nothing; exit 1 if OUT differs from the ledger.")] = False,
    ledger: LedgerPath = None,
) -> None:
    """Generate docs/claims.md from the ledger (or check that it is up to date)."""
    from gammalens.claims.docs import render_markdown, write_markdown
    from gammalens.claims.ledger import load_ledger

    led = load_ledger(ledger)
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != render_markdown(led):
            print(f"{out} is not up to date with the ledger; run `gammalens claims docs`")
            raise typer.Exit(1)
        print(f"{out} is up to date")
        return
    print(write_markdown(led, out))


def register(app: typer.Typer) -> None:
    """Add the ``claims`` group to APP."""
    app.add_typer(claims_app, name="claims")
