"""The ``bilstm`` command: a thin Click layer over the library."""

from bilstm_cli.cli.main import cli, main, run

__all__ = ["cli", "main", "run"]
