"""bilstm-cli: the weights of Keras Bidirectional RNN layers, read and written in the model file."""

import os as _os

# The tool's linear algebra is many small products (per-gate blocks, a probe batch through a
# cell), where waking BLAS threads costs more than it saves, badly so on a busy CI machine; the
# work that does pay off in parallel (drawing random numbers) uses its own threads. Set before
# NumPy loads; a value the user exported wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
