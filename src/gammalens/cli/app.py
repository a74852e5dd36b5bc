"""The root ``gammalens`` app: every command group registered from its own module, and :func:`main`."""

from __future__ import annotations

import sys

import typer

from gammalens.cli import atlas, card, claims, grok, kv, measure, models, report, sweep, zoo

app = typer.Typer(
    name="gammalens",
    help="Measure how attention decays with query–key distance (A(d) ∝ d^-γ), exactly, with receipts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# in this order: `gammalens --help` lists the commands, then the groups, each as registered
for group in (measure, card, models, atlas, report, zoo, sweep, claims, grok, kv):
    group.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app; every failure the user can act on (bad input, a usage error,
    Ctrl-C or SIGTERM, a full disk) becomes one line on stderr and exit code 2 (:mod:`gammalens.cli.failure`)."""
    from gammalens.cli.failure import clean_exit

    with clean_exit():
        try:
            # non-standalone click returns typer.Exit's code; the name in usage hints is always `gammalens`
            rc = app(args=argv, prog_name="gammalens", standalone_mode=False)
        except typer.Exit as ex:
            rc = ex.exit_code
        sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
