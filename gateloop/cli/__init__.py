"""The ``gateloop`` command line (``gateloop --help``); ``main`` is the console script."""

from gateloop.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
