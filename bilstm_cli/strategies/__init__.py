"""Initialization strategies: parsing ``--init`` specs and generating weight arrays.

A spec is ``NAME`` or ``NAME:ARGS``; ARGS are comma-separated ``key=value`` pairs, positional
values (taken in the order of the strategy's parameters), or both with positionals first:

====================  ==================================================================
``zeros``, ``ones``   every entry 0 / 1
``constant:V``        every entry V (also ``constant:value=V``)
``uniform:LO,HI``     U[LO, HI) (defaults -0.05, 0.05, as Keras' RandomUniform)
``normal:M,S``        N(M, S²) (defaults 0, 0.05)
``truncated_normal``  N(M, S²) with every value beyond 2S from M redrawn (Keras' rule)
``glorot_uniform``    and ``glorot_normal``, ``he_*``, ``lecun_*``: Keras' variance scaling,
                      fans over the whole matrix; ``per_gate=true`` takes fans per gate block
``orthogonal``        ``gain=1.0``; each gate block its own orthogonal matrix;
                      ``per_gate=false`` is Keras' whole-matrix behaviour
``identity``          ``gain=1.0``; recurrent kernels: each gate block gain·I
``unit_forget_bias``  LSTM bias: zeros, forget block ones
``chrono:tmax=T``     Tallec & Ollivier (2018) chrono initialization of LSTM/GRU biases
``keras_default``     what a freshly built Keras layer gets
``pytorch_default``   U(−1/√units, 1/√units) for every weight, as PyTorch's RNNs
``npy:PATH``          the exact array stored in a ``.npy`` file
``npz:PATH:KEY``      the exact array ``KEY`` of a ``.npz`` archive
====================  ==================================================================

Random draws are reproducible: :func:`generate` takes a :class:`numpy.random.SeedSequence` and
gives the same bytes for the same seed, strategy and shape, whatever the number of threads. Large
arrays are cut into fixed chunks of :data:`CHUNK_SIZE` elements of the flattened (C-order) array;
chunk ``k`` draws from its own SFC64 stream seeded by the child sequence whose ``spawn_key`` is
the seed's ``spawn_key + (k,)``, so chunks can be filled by a small thread pool (NumPy releases
the GIL while drawing) without changing a single value. The chunk size is part of that contract.
Callers should give every weight its own seed (e.g. a distinct ``spawn_key`` of equal length).

Each strategy is a class registered in one family module (:mod:`.constant`, :mod:`.distributions`,
:mod:`.variance_scaling`, :mod:`.orthogonal`, :mod:`.bias`, :mod:`.defaults`, :mod:`.files`);
:mod:`.registry` says what a strategy provides. Reading ``npy``/``npz`` files named by the user
is the only I/O done here.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

import numpy as np

from bilstm_cli import dtypes
from bilstm_cli.strategies.checks import Fact
from bilstm_cli.strategies.registry import lookup, parse_init_option, parse_spec, registered
from bilstm_cli.strategies.sampling import CHUNK_SIZE
from bilstm_cli.strategies.spec import Spec, Target, WeightInfo, parse_target

# isort: off
# Importing a family registers its strategies; this order is the order of the table above, in
# which messages and help texts list the names.
from bilstm_cli.strategies import constant  # noqa: F401
from bilstm_cli.strategies import distributions  # noqa: F401
from bilstm_cli.strategies import variance_scaling  # noqa: F401
from bilstm_cli.strategies import orthogonal  # noqa: F401
from bilstm_cli.strategies import bias  # noqa: F401
from bilstm_cli.strategies import defaults  # noqa: F401
from bilstm_cli.strategies import files  # noqa: F401

# isort: on
from bilstm_cli.strategies.variance_scaling import TRUNCATED_NORMAL_STD, compute_fans

#: Known strategy names with a one-line usage each (for help texts and error messages).
STRATEGY_USAGE = MappingProxyType({s.name: s.usage for s in registered()})


def check_fit(spec: Spec, info: WeightInfo) -> None:
    """Raise :class:`UsageError` when ``spec`` cannot initialize the weight ``info`` describes.

    Orthogonal needs a kernel or recurrent kernel; identity needs a recurrent kernel with square
    gate blocks; unit_forget_bias needs an LSTM bias; chrono an LSTM or GRU bias; npy/npz an
    array of exactly the weight's shape (an unreadable file is an :class:`InputError`).
    """
    info.check()
    lookup(spec.name).check_fit(spec, info)


def generate(
    spec: Spec,
    info: WeightInfo,
    seed: np.random.SeedSequence | int | None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """The full weight array of ``info.shape`` that ``spec`` gives, as ``dtype`` (a NumPy
    dtype, or ``"bfloat16"``: then float32 values rounded to bfloat16, tagged as such).

    Deterministic for a given seed, shape and spec. To write only some gates, generate the whole
    array and copy the selected columns: per-gate strategies fill every block independently,
    and whole-matrix ones (glorot, Keras' orthogonal) need the whole shape for their fans.
    Call :func:`check_fit` first; this raises the same errors on a weight that does not fit.
    """
    name = dtypes.storage(dtype)
    check_fit(spec, replace(info, dtype=name))
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    # Draw in float64 only for float64 weights; everything narrower is drawn in float32,
    # which is twice as fast and then cast exactly (or rounded once for float16/bfloat16).
    work = np.dtype(np.float64) if name == "float64" else np.dtype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        out = lookup(spec.name).generate(spec, info, seed, work)
    from_file = spec.name in ("npy", "npz")
    cast = dtypes.check_range(dtypes.cast(out, name), out, spec.text, name, from_file)
    if not isinstance(dtype, str) and np.dtype(dtype) != cast.dtype:
        return cast.astype(dtype)  # another library's bfloat16 type: exact, already rounded
    return cast


def describe(spec: Spec, info: WeightInfo) -> str:
    """One line saying what ``spec`` does to this weight, e.g. ``orthogonal per gate block``."""
    return lookup(spec.name).describe(spec, info)


def _column_mask(info: WeightInfo, columns: Any) -> np.ndarray | None:
    if columns is None:
        return None
    cols = np.asarray(columns)
    if cols.dtype == bool:
        return cols
    mask = np.zeros(info.shape[-1], dtype=bool)
    mask[cols] = True
    return mask


def _isfinite(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iub":
        return np.ones(values.shape, dtype=bool)
    finite: np.ndarray
    try:
        finite = np.isfinite(values)
    except TypeError:
        # Extension float types such as ml_dtypes' bfloat16 may lack the ufunc loop.
        finite = np.isfinite(values.astype(np.float32))
    return finite


def facts(spec: Spec, info: WeightInfo, array: np.ndarray, columns: Any = None) -> list[Fact]:
    """Checks of what ``spec`` promises, on the written ``array``: ``(name, ok, detail)``.

    ``columns`` (a boolean mask or indices over the last axis, None for all) limits the checks
    to the part that was written; per-block checks look at blocks written in full.
    """
    arr = np.asarray(array)
    mask = _column_mask(info, columns)
    sel = arr if mask is None else arr[..., mask]
    out: list[Fact] = []
    n_bad = int(sel.size - np.count_nonzero(_isfinite(sel)))
    out.append(Fact("finite", n_bad == 0, "" if n_bad == 0 else f"{n_bad} non-finite values"))
    out.extend(lookup(spec.name).facts(spec, info, arr, sel, mask))
    return out


__all__ = [
    "CHUNK_SIZE",
    "STRATEGY_USAGE",
    "TRUNCATED_NORMAL_STD",
    "Spec",
    "Target",
    "WeightInfo",
    "check_fit",
    "compute_fans",
    "describe",
    "facts",
    "generate",
    "parse_init_option",
    "parse_spec",
    "parse_target",
]
