"""The ``bilstm`` command: a thin Click layer over the library."""

from bilstm_cli.cli.entry import main, run
from bilstm_cli.cli.main import cli

__all__ = ["cli", "main", "run"]
