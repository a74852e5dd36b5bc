"""The ``gammalens`` command: :mod:`~gammalens.cli.app` builds the app from one module per command group."""

from gammalens.cli.app import app, main

__all__ = ["app", "main"]
