"""The ``bilstm`` command: a thin Click layer over the library."""

import os

# The command spreads its own work over the cores (weights, gate blocks, statistics on two
# threads). OpenBLAS would start its own threads inside each of those, which then compete
# for the same cores and spin while they wait: a QR of every gate block took 3x as long.
# Unless the user chose otherwise, the linear algebra runs on the thread that asks for it;
# this must happen before NumPy is first imported.
if "OPENBLAS_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

from bilstm_cli.cli.entry import main, run  # noqa: E402
from bilstm_cli.cli.main import cli  # noqa: E402

__all__ = ["cli", "main", "run"]
