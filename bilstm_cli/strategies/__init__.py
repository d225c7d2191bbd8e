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

Reading ``npy``/``npz`` files named by the user is the only I/O done here.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilstm_cli.cells.blocks import (
    CELL_GATES,
    GATE_NAMES,
    ROLES,
    check_cell,
    gate_blocks,
    gate_slices,
    last_axis_width,
    selected_blocks,
)
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.stats import orthogonality_error
from bilstm_cli.strategies.sampling import CHUNK_SIZE, TRUNCATION, Affine, draw, stream

ArgValue = float | int | bool | str

# Keras divides the target stddev by this constant so that a normal cut at two standard
# deviations ends up with the intended stddev: it is the stddev of a standard normal
# truncated to [-2, 2] (keras/src/initializers/random_initializers.py, VarianceScaling).
TRUNCATED_NORMAL_STD: float = 0.87962566103423978


# --------------------------------------------------------------------------------------------
# Specs and targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A parsed strategy: canonical ``name``, fully resolved ``args``, and the user's ``text``."""

    name: str
    args: Mapping[str, ArgValue] = field(hash=False)
    text: str


@dataclass(frozen=True)
class Target:
    """Which part of a layer's weights an option applies to.

    ``role`` None means every weight; ``gates`` None means the whole weight (all columns).
    Gate names are checked against a cell only when the target meets a layer
    (:func:`bilstm_cli.cells.blocks.parse_gates`).
    """

    role: str | None
    gates: tuple[str, ...] | None

    def __str__(self) -> str:
        if self.role is None:
            return "all weights"
        return self.role + (f"[{','.join(self.gates)}]" if self.gates else "")


@dataclass(frozen=True)
class WeightInfo:
    """What a strategy needs to know about the weight it fills."""

    cell: str
    role: str
    shape: tuple[int, ...]
    units: int
    reset_after: bool | None = None


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "float" or "bool"
    default: ArgValue | None = None  # None: required


_FAN_PARAMS = (_Param("per_gate", "bool", False),)

# Parameters of every strategy, in positional order.
_PARAMS: dict[str, tuple[_Param, ...]] = {
    "zeros": (),
    "ones": (),
    "constant": (_Param("value", "float"),),
    "uniform": (_Param("minval", "float", -0.05), _Param("maxval", "float", 0.05)),
    "normal": (_Param("mean", "float", 0.0), _Param("stddev", "float", 0.05)),
    "truncated_normal": (_Param("mean", "float", 0.0), _Param("stddev", "float", 0.05)),
    "glorot_uniform": _FAN_PARAMS,
    "glorot_normal": _FAN_PARAMS,
    "he_uniform": _FAN_PARAMS,
    "he_normal": _FAN_PARAMS,
    "lecun_uniform": _FAN_PARAMS,
    "lecun_normal": _FAN_PARAMS,
    "orthogonal": (_Param("gain", "float", 1.0), _Param("per_gate", "bool", True)),
    "identity": (_Param("gain", "float", 1.0),),
    "unit_forget_bias": (),
    "chrono": (_Param("tmax", "float"),),
    "keras_default": (),
    "pytorch_default": (),
    "npy": (),
    "npz": (),
}

#: Known strategy names with a one-line usage each (for help texts and error messages).
STRATEGY_USAGE: dict[str, str] = {
    "zeros": "zeros",
    "ones": "ones",
    "constant": "constant:VALUE",
    "uniform": "uniform:minval=-0.05,maxval=0.05",
    "normal": "normal:mean=0,stddev=0.05",
    "truncated_normal": "truncated_normal:mean=0,stddev=0.05 (cut at 2 stddev)",
    "glorot_uniform": "glorot_uniform[:per_gate=true]",
    "glorot_normal": "glorot_normal[:per_gate=true]",
    "he_uniform": "he_uniform[:per_gate=true]",
    "he_normal": "he_normal[:per_gate=true]",
    "lecun_uniform": "lecun_uniform[:per_gate=true]",
    "lecun_normal": "lecun_normal[:per_gate=true]",
    "orthogonal": "orthogonal:gain=1.0[,per_gate=false]",
    "identity": "identity:gain=1.0 (recurrent kernels)",
    "unit_forget_bias": "unit_forget_bias (LSTM bias)",
    "chrono": "chrono:tmax=T (LSTM/GRU bias)",
    "keras_default": "keras_default",
    "pytorch_default": "pytorch_default",
    "npy": "npy:PATH",
    "npz": "npz:PATH:KEY",
}

# (scale, mode, distribution) as Keras' VarianceScaling subclasses define them.
_VARIANCE_SCALING: dict[str, tuple[float, str, str]] = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _known_names() -> str:
    return ", ".join(_PARAMS)


def _parse_value(strategy: str, param: _Param, raw: str) -> ArgValue:
    text = raw.strip()
    if param.kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise UsageError(
            f"{strategy}: {param.name}={text!r} is not a boolean; expected true or false"
        )
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"{strategy}: {param.name}={text!r} is not a number; expected e.g. {param.name}=0.5"
        ) from None
    if not math.isfinite(value):
        raise UsageError(f"{strategy}: {param.name} must be a finite number, got {text!r}")
    return value


def _parse_args(name: str, rest: str) -> dict[str, ArgValue]:
    params = _PARAMS[name]
    by_name = {p.name: p for p in params}
    items = [item for item in (s.strip() for s in rest.split(",")) if item] if rest.strip() else []
    if items and not params:
        raise UsageError(f"{name} takes no arguments, got {rest.strip()!r}")
    values: dict[str, ArgValue] = {}
    seen_keyword = False
    for pos, item in enumerate(items):
        key, eq, raw = item.partition("=")
        if eq:
            seen_keyword = True
            key = key.strip().lower().replace("-", "_")
            if key not in by_name:
                expected = ", ".join(by_name)
                raise UsageError(f"unknown argument {key!r} for {name}; expected {expected}")
            param = by_name[key]
        else:
            if seen_keyword:
                raise UsageError(f"{name}: positional value {item!r} after a key=value argument")
            if pos >= len(params):
                raise UsageError(
                    f"{name} takes at most {len(params)} argument(s) "
                    f"({', '.join(by_name)}), got {len(items)}"
                )
            param, raw = params[pos], item
        if param.name in values:
            raise UsageError(f"{name}: argument {param.name!r} given twice")
        values[param.name] = _parse_value(name, param, raw)
    for param in params:
        if param.name not in values:
            if param.default is None:
                raise UsageError(f"{name} needs {param.name}, e.g. {STRATEGY_USAGE[name]}")
            values[param.name] = param.default
    _validate_args(name, values)
    return values


def _validate_args(name: str, a: Mapping[str, ArgValue]) -> None:
    if name == "uniform" and not float(a["minval"]) < float(a["maxval"]):
        raise UsageError(f"uniform: minval ({a['minval']}) must be below maxval ({a['maxval']})")
    if name in ("normal", "truncated_normal") and not float(a["stddev"]) > 0:
        raise UsageError(f"{name}: stddev must be positive, got {a['stddev']}")
    if name == "orthogonal" and float(a["gain"]) == 0:
        raise UsageError("orthogonal: gain must be non-zero; use zeros for an all-zero weight")
    if name == "chrono" and not float(a["tmax"]) > 2:
        raise UsageError(f"chrono: tmax must be above 2 (draws from U(1, tmax-1)), got {a['tmax']}")


def parse_spec(text: str) -> Spec:
    """Parse ``NAME`` or ``NAME:ARGS`` into a :class:`Spec` with every argument resolved.

    Raises :class:`UsageError` listing the known names on an unknown one, and on bad, unknown,
    repeated or missing arguments.
    """
    raw = text.strip()
    if not raw:
        raise UsageError(
            f"empty init spec; expected NAME or NAME:ARGS with NAME one of {_known_names()}"
        )
    head, sep, rest = raw.partition(":")
    name = head.strip().lower().replace("-", "_")
    if name not in _PARAMS:
        raise UsageError(f"unknown init strategy {head.strip()!r}; known: {_known_names()}")
    args: dict[str, ArgValue]
    if name == "npy":
        path = _strip_key(rest, "path")
        if not path:
            raise UsageError("npy needs a file, e.g. npy:weights/kernel.npy")
        args = {"path": path}
    elif name == "npz":
        args = _parse_npz(rest)
    else:
        args = _parse_args(name, rest if sep else "")
    return Spec(name=name, args=args, text=raw)


def _strip_key(text: str, key: str) -> str:
    value = text.strip()
    if value.lower().startswith(key + "="):
        value = value[len(key) + 1 :].strip()
    return value


def _parse_npz(rest: str) -> dict[str, ArgValue]:
    body = rest.strip()
    # Keyword form "path=P,key=K" first, since a path may itself contain ':'.
    m = re.fullmatch(r"path=(?P<path>.+),\s*key=(?P<key>[^,]+)", body)
    if m:
        path, key = m["path"].strip(), m["key"].strip()
    else:
        # PATH:KEY split at the last ':', unless what follows it looks like part of a path
        # (a Windows drive such as C:\\x.npz), in which case no key was given.
        path, sep, key = body.rpartition(":")
        if not sep or "/" in key or "\\" in key or not path:
            path, key = body, ""
        path, key = path.strip(), key.strip()
    if not path or not key:
        raise UsageError("npz needs a file and an array name, e.g. npz:weights.npz:kernel")
    return {"path": path, "key": key}


_TARGET_RE = re.compile(r"\s*(?P<role>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(?P<gates>[^\]]*)\])?\s*")


def parse_target(text: str) -> Target:
    """Parse ``ROLE`` or ``ROLE[g1,g2]`` (``kernel``, ``recurrent_kernel`` or ``bias``)."""
    m = _TARGET_RE.fullmatch(text)
    expected = "expected kernel, recurrent_kernel or bias, optionally with gates as in bias[f]"
    if not m:
        raise UsageError(f"bad target {text.strip()!r}; {expected}")
    role = m["role"].lower()
    if role not in ROLES:
        raise UsageError(f"unknown role {m['role']!r}; {expected}")
    gates: tuple[str, ...] | None = None
    if m["gates"] is not None:
        names = [g.strip().lower() for g in m["gates"].split(",")]
        if not any(names) or not all(names):
            raise UsageError(f"bad gate list in {text.strip()!r}; expected names as in {role}[i,f]")
        gates = tuple(dict.fromkeys(names))
    return Target(role=role, gates=gates)


def parse_init_option(text: str) -> tuple[Target, Spec]:
    """Parse one ``--init [TARGET=]SPEC`` value.

    The text before the first ``=`` is a target only when it holds no ``:`` (a SPEC's own
    arguments come after its ``:``), so ``uniform:minval=-0.05`` is a bare spec while
    ``bias=chrono:tmax=200`` is a target and a spec.
    """
    left, eq, right = text.partition("=")
    head = re.match(r"\s*(kernel|recurrent_kernel|bias)\s*(\[|$)", text if not eq else "")
    if head:
        raise UsageError(
            f"--init {text.strip()!r}: a target needs a strategy after '=', "
            f"e.g. {head.group(1)}=zeros or {head.group(1)}[GATES]=ones"
        )
    if eq and ":" not in left:
        name = left.strip().lower().replace("-", "_")
        if name in _PARAMS:
            raise UsageError(
                f"{text.strip()!r}: strategy arguments follow a ':', e.g. {STRATEGY_USAGE[name]}"
            )
        return parse_target(left), parse_spec(right)
    return Target(role=None, gates=None), parse_spec(text)


# --------------------------------------------------------------------------------------------
# Fitting checks
# --------------------------------------------------------------------------------------------


def _is_gru_reset_after(info: WeightInfo) -> bool:
    if info.reset_after is not None:
        return bool(info.reset_after)
    return info.cell == "GRU" and info.role == "bias" and len(info.shape) == 2


def _check_info(info: WeightInfo) -> None:
    check_cell(info.cell)
    if info.role not in ROLES:
        raise UsageError(f"unknown role {info.role!r}; expected one of {', '.join(ROLES)}")
    width = last_axis_width(info.cell, info.units)
    if not info.shape or info.shape[-1] != width:
        raise InputError(
            f"{info.role} of shape {tuple(info.shape)} does not fit {info.cell} with "
            f"{info.units} units: expected the last axis to be {width}"
        )
    if info.role == "bias" and info.cell == "GRU":
        rows = 2 if _is_gru_reset_after(info) else 1
        if tuple(info.shape) != ((rows, width) if rows == 2 else (width,)):
            expected = f"(2, {width})" if rows == 2 else f"({width},)"
            raise InputError(
                f"GRU bias of shape {tuple(info.shape)} does not fit reset_after="
                f"{rows == 2}: expected {expected}"
            )


def _where(info: WeightInfo) -> str:
    return f"{info.cell} {info.role} of shape {tuple(info.shape)}"


def check_fit(spec: Spec, info: WeightInfo) -> None:
    """Raise :class:`UsageError` when ``spec`` cannot initialize the weight ``info`` describes.

    Orthogonal needs a kernel or recurrent kernel; identity needs a recurrent kernel with square
    gate blocks; unit_forget_bias needs an LSTM bias; chrono an LSTM or GRU bias; npy/npz an
    array of exactly the weight's shape (an unreadable file is an :class:`InputError`).
    """
    _check_info(info)
    name = spec.name
    if name == "orthogonal" and (info.role == "bias" or len(info.shape) < 2):
        raise UsageError(f"orthogonal fits kernels and recurrent kernels, not the {_where(info)}")
    if name == "identity":
        if info.role != "recurrent_kernel":
            raise UsageError(f"identity fits recurrent kernels only, not the {_where(info)}")
        rows = int(np.prod(info.shape[:-1]))
        if len(info.shape) != 2 or rows != info.units:
            raise UsageError(
                f"identity needs square ({info.units}, {info.units}) gate blocks; "
                f"the {_where(info)} has ({rows}, {info.units}) blocks"
            )
    if name == "unit_forget_bias" and (info.role != "bias" or info.cell != "LSTM"):
        raise UsageError(f"unit_forget_bias fits an LSTM bias only, not the {_where(info)}")
    if name == "chrono":
        if info.cell == "SimpleRNN":
            raise UsageError("chrono needs a gated cell (LSTM or GRU); SimpleRNN has no gates")
        if info.role != "bias":
            raise UsageError(f"chrono fits biases only, not the {_where(info)}")
    if name in ("npy", "npz"):
        shape, dtype = _peek_array(spec)
        if tuple(shape) != tuple(info.shape):
            raise UsageError(
                f"{_source(spec)} holds an array of shape {tuple(shape)}, but the "
                f"{_where(info)} needs {tuple(info.shape)}"
            )
        if dtype.kind not in "fiub":
            raise UsageError(f"{_source(spec)} holds {dtype} values; expected real numbers")


# --------------------------------------------------------------------------------------------
# Array files
# --------------------------------------------------------------------------------------------


def _source(spec: Spec) -> str:
    if spec.name == "npz":
        return f"{spec.args['path']}:{spec.args['key']}"
    return str(spec.args["path"])


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


def _load_npz_member(spec: Spec) -> np.ndarray:
    path, key = str(spec.args["path"]), str(spec.args["key"])
    try:
        loaded = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        raise UsageError(f"{path} is a .npy file, not a .npz archive; use npy:{path}")
    with loaded as archive:
        if key not in archive.files:
            held = ", ".join(archive.files) or "nothing"
            raise UsageError(f"{path} has no array {key!r}; it holds {held}")
        try:
            return np.asarray(archive[key])
        except _READ_ERRORS as exc:
            raise InputError(f"cannot read array {key!r} from {path}: {exc}") from exc


def _load_npy(spec: Spec, mmap: bool = False) -> np.ndarray:
    path = str(spec.args["path"])
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise UsageError(f"{path} is a .npz archive; use npz:{path}:KEY")
    return loaded


def _peek_array(spec: Spec) -> tuple[tuple[int, ...], np.dtype]:
    # A memory map reads only the .npy header; an .npz member must be read to learn its shape.
    arr = _load_npy(spec, mmap=True) if spec.name == "npy" else _load_npz_member(spec)
    return tuple(arr.shape), arr.dtype


def _load_exact(spec: Spec) -> np.ndarray:
    return _load_npy(spec) if spec.name == "npy" else _load_npz_member(spec)


# --------------------------------------------------------------------------------------------
# Strategy pieces
# --------------------------------------------------------------------------------------------


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape, by Keras' rule.

    1-D: both the length; 2-D: rows and columns; more: the two last axes times the receptive
    field (the product of the leading axes).
    """
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def _fan_shapes(info: WeightInfo, per_gate: bool) -> tuple[int, ...]:
    if per_gate:
        return tuple(info.shape[:-1]) + (int(info.units),)
    return tuple(info.shape)


def _variance(name: str, shape: tuple[int, ...]) -> tuple[float, int, int]:
    """Target variance ``scale / n`` for a variance-scaling strategy, with its fans."""
    scale, mode, _ = _VARIANCE_SCALING[name]
    fan_in, fan_out = compute_fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    return scale / max(1.0, n), fan_in, fan_out


def _vs_bound(name: str, variance: float) -> float:
    """Largest magnitude a variance-scaling draw can take (limit or truncation point)."""
    if _VARIANCE_SCALING[name][2] == "uniform":
        return math.sqrt(3.0 * variance)
    return TRUNCATION * math.sqrt(variance) / TRUNCATED_NORMAL_STD


def _column_bounds(spec: Spec, info: WeightInfo) -> np.ndarray:
    """Per-column bound of a variance-scaling strategy (the same everywhere unless per gate)."""
    per_gate = bool(spec.args.get("per_gate", False))
    variance, _, _ = _variance(spec.name, _fan_shapes(info, per_gate))
    width = info.shape[-1]
    return np.full(width, _vs_bound(spec.name, variance), dtype=np.float64)


def _tall_shape(rows: int, cols: int) -> tuple[int, int]:
    return max(rows, cols), min(rows, cols)


def _orthogonal_matrix(rows: int, cols: int, normal: np.ndarray) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal columns (tall) or rows (wide), Keras' recipe.

    ``normal`` holds standard normal draws of shape :func:`_tall_shape` ``(rows, cols)``.
    """
    q, r = np.linalg.qr(normal)
    # Multiplying by the signs of R's diagonal makes the factorization unique, so Q is
    # distributed uniformly (Haar) rather than biased by the QR algorithm's sign convention.
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    q *= d
    return q if rows >= cols else q.T


def _chrono_values(info: WeightInfo, tmax: float, seed: np.random.SeedSequence) -> np.ndarray:
    """log U(1, tmax - 1) for one gate block, in float64."""
    rng = stream(seed, 0)
    return np.log(rng.uniform(1.0, tmax - 1.0, size=int(info.units)))


def _chrono_row(info: WeightInfo) -> tuple[int, ...]:
    """Index prefix of the bias row chrono writes to (row 0 of a reset_after GRU bias)."""
    return (0,) if len(info.shape) == 2 else ()


def generate(
    spec: Spec,
    info: WeightInfo,
    seed: np.random.SeedSequence | int | None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """The full weight array of ``info.shape`` that ``spec`` gives, as ``dtype``.

    Deterministic for a given seed, shape and spec. To write only some gates, generate the whole
    array and copy the selected columns: per-gate strategies fill every block independently,
    and whole-matrix ones (glorot, Keras' orthogonal) need the whole shape for their fans.
    Call :func:`check_fit` first; this raises the same errors on a weight that does not fit.
    """
    check_fit(spec, info)
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    target = np.dtype(dtype)
    # Draw in float64 only for float64 weights; everything narrower is drawn in float32,
    # which is twice as fast and then cast exactly (or rounded once for float16/bfloat16).
    work = np.dtype(np.float64) if target == np.float64 else np.dtype(np.float32)
    out = _generate(spec, info, seed, work)
    return out.astype(target, copy=False)


def _generate(
    spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
) -> np.ndarray:
    name, a, shape = spec.name, spec.args, tuple(info.shape)
    if name == "zeros":
        return np.zeros(shape, dtype=work)
    if name == "ones":
        return np.ones(shape, dtype=work)
    if name == "constant":
        return np.full(shape, float(a["value"]), dtype=work)
    if name == "uniform":
        lo, hi = float(a["minval"]), float(a["maxval"])
        return draw("uniform", shape, seed, work, scale=hi - lo, shift=lo)
    if name in ("normal", "truncated_normal"):
        return draw(name, shape, seed, work, scale=float(a["stddev"]), shift=float(a["mean"]))
    if name in _VARIANCE_SCALING:
        bounds = _column_bounds(spec, info)
        uniform = _VARIANCE_SCALING[name][2] == "uniform"
        # A scalar scale keeps the fast path when every column shares one bound.
        scale: Affine = bounds if bool(a.get("per_gate")) else float(bounds[0])
        if uniform:
            return draw("uniform", shape, seed, work, scale=2 * scale, shift=-scale)
        return draw("truncated_normal", shape, seed, work, scale=scale / TRUNCATION)
    if name == "orthogonal":
        return _orthogonal(info, float(a["gain"]), bool(a["per_gate"]), seed, work)
    if name == "identity":
        out = np.zeros(shape, dtype=work)
        eye = float(a["gain"]) * np.eye(info.units, dtype=work)
        for _, sl in gate_blocks(info.cell, info.units):
            out[:, sl] = eye
        return out
    if name == "unit_forget_bias":
        out = np.zeros(shape, dtype=work)
        out[..., gate_slices("LSTM", info.units)["f"]] = 1.0
        return out
    if name == "chrono":
        out = np.zeros(shape, dtype=work)
        values = _chrono_values(info, float(a["tmax"]), seed).astype(work)
        slices = gate_slices(info.cell, info.units)
        row = _chrono_row(info)
        if info.cell == "LSTM":
            out[..., slices["f"]] = values
            out[..., slices["i"]] = -values
        else:
            out[row + (slices["z"],)] = values
        return out
    if name == "keras_default":
        return _generate(_keras_default_spec(info), info, seed, work)
    if name == "pytorch_default":
        k = 1.0 / math.sqrt(info.units)
        return draw("uniform", shape, seed, work, scale=2 * k, shift=-k)
    if name in ("npy", "npz"):
        return _load_exact(spec).astype(work, copy=False)
    raise UsageError(f"unknown init strategy {name!r}; known: {_known_names()}")


def _orthogonal(
    info: WeightInfo, gain: float, per_gate: bool, seed: np.random.SeedSequence, work: np.dtype
) -> np.ndarray:
    shape = tuple(info.shape)
    rows = int(np.prod(shape[:-1]))
    if not per_gate:
        normal = draw("normal", _tall_shape(rows, shape[-1]), seed, np.dtype(np.float64))
        q = _orthogonal_matrix(rows, shape[-1], normal)
        return (gain * q).reshape(shape).astype(work)
    out = np.empty((rows, shape[-1]), dtype=work)
    for b, (_, sl) in enumerate(gate_blocks(info.cell, info.units)):
        # Each block draws from its own child stream, so blocks do not depend on each other.
        cols = sl.stop - sl.start
        normal = stream(seed, b).standard_normal(_tall_shape(rows, cols))
        out[:, sl] = gain * _orthogonal_matrix(rows, cols, normal)
    return out.reshape(shape)


def _keras_default_spec(info: WeightInfo) -> Spec:
    if info.role == "kernel":
        return Spec("glorot_uniform", {"per_gate": False}, "glorot_uniform")
    if info.role == "recurrent_kernel":
        return Spec("orthogonal", {"gain": 1.0, "per_gate": False}, "orthogonal:per_gate=false")
    if info.cell == "LSTM":
        return Spec("unit_forget_bias", {}, "unit_forget_bias")
    return Spec("zeros", {}, "zeros")


# --------------------------------------------------------------------------------------------
# Descriptions
# --------------------------------------------------------------------------------------------


def _g(x: float) -> str:
    return f"{x:.4g}"


def describe(spec: Spec, info: WeightInfo) -> str:
    """One line saying what ``spec`` does to this weight, e.g. ``orthogonal per gate block``."""
    name, a = spec.name, spec.args
    if name in ("zeros", "ones"):
        return f"all {name}"
    if name == "constant":
        return f"constant {_g(float(a['value']))}"
    if name == "uniform":
        return f"uniform in [{_g(float(a['minval']))}, {_g(float(a['maxval']))})"
    if name == "normal":
        return f"normal (mean {_g(float(a['mean']))}, stddev {_g(float(a['stddev']))})"
    if name == "truncated_normal":
        return (
            f"truncated normal (mean {_g(float(a['mean']))}, stddev {_g(float(a['stddev']))}, "
            "redrawn beyond 2 stddev)"
        )
    if name in _VARIANCE_SCALING:
        per_gate = bool(a.get("per_gate"))
        variance, fan_in, fan_out = _variance(name, _fan_shapes(info, per_gate))
        where = "per gate block" if per_gate else "over the whole matrix"
        dist = _VARIANCE_SCALING[name][2]
        if dist == "uniform":
            detail = f"limit {_g(_vs_bound(name, variance))}"
        else:
            detail = f"stddev {_g(math.sqrt(variance))} after cutting at 2 sigma"
        return f"{name}, fans {where} (fan_in {fan_in}, fan_out {fan_out}): {detail}"
    if name == "orthogonal":
        gain = _g(float(a["gain"]))
        if bool(a["per_gate"]) or not CELL_GATES.get(info.cell):
            return f"orthogonal per gate block (gain {gain})"
        return (
            f"orthogonal over the whole matrix as Keras does (gain {gain}); "
            "gate blocks are not orthogonal"
        )
    if name == "identity":
        return f"identity per gate block (gain {_g(float(a['gain']))})"
    if name == "unit_forget_bias":
        return "zeros with the forget gate block set to ones (unit_forget_bias)"
    if name == "chrono":
        t = float(a["tmax"])
        law = f"log U(1, {_g(t - 1)})"
        if info.cell == "LSTM":
            return (
                f"chrono (Tallec & Ollivier 2018, tmax {_g(t)}): forget bias {law}, "
                "input bias its negative, cell and output 0"
            )
        row = " input-bias row" if len(info.shape) == 2 else ""
        return (
            f"chrono (Tallec & Ollivier 2018, tmax {_g(t)}): update gate z{row} {law}, rest 0 "
            "(Keras' GRU keeps z*h_prev, so z acts as the forget gate)"
        )
    if name == "keras_default":
        inner = _keras_default_spec(info)
        return f"Keras default for {info.role}: {describe(inner, info)}"
    if name == "pytorch_default":
        k = 1.0 / math.sqrt(info.units)
        return f"uniform in [-{_g(k)}, {_g(k)}] = ±1/sqrt({info.units}) (PyTorch default)"
    if name in ("npy", "npz"):
        return f"exact array from {_source(spec)}"
    return name


# --------------------------------------------------------------------------------------------
# Facts to verify after writing
# --------------------------------------------------------------------------------------------

Fact = tuple[str, bool, str]


def _column_mask(info: WeightInfo, columns: Any) -> np.ndarray | None:
    if columns is None:
        return None
    cols = np.asarray(columns)
    if cols.dtype == bool:
        return cols
    mask = np.zeros(info.shape[-1], dtype=bool)
    mask[cols] = True
    return mask


def _eps(dtype: np.dtype) -> float:
    """Machine epsilon of a float dtype, including ml_dtypes' bfloat16 that np.finfo rejects."""
    if dtype.kind in "iub":
        return 0.0
    try:
        return float(np.finfo(dtype).eps)
    except (TypeError, ValueError):
        # bfloat16 keeps 8 significant bits; anything else unknown is treated as float32.
        return 2.0**-7 if "bfloat16" in dtype.name else float(np.finfo(np.float32).eps)


def _tolerance(dtype: np.dtype, magnitude: float) -> float:
    eps = _eps(dtype)
    return 4.0 * eps * max(abs(magnitude), 1e-30)


def _bounds_fact(values: np.ndarray, lo: Any, hi: Any, text: str) -> Fact:
    """Inclusive bounds check with a few ulps of slack for the rounding of scale * u + shift."""
    if values.size == 0:
        return ("within bounds", True, text)
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    tol = _tolerance(values.dtype, float(np.max(np.abs([lo_a, hi_a]))))
    # The extremes decide it (per column when the bounds are), taken in the array's own
    # dtype, which float64 holds exactly; a NaN makes them NaN, and NaN fails both tests.
    if lo_a.ndim == 0 and hi_a.ndim == 0:
        low, high = values.min(), values.max()
    else:
        columns = values.reshape(-1, values.shape[-1])
        low, high = columns.min(axis=0), columns.max(axis=0)
    low_a = np.asarray(low, dtype=np.float64)
    high_a = np.asarray(high, dtype=np.float64)
    ok = bool(np.all(low_a >= lo_a - tol) and np.all(high_a <= hi_a + tol))
    if not ok:
        v = values.astype(np.float64)
        text += f"; found values in [{_g(float(np.nanmin(v)))}, {_g(float(np.nanmax(v)))}]"
    return ("within bounds", ok, text)


def _constant_fact(values: np.ndarray, value: float, label: str = "constant") -> Fact:
    expected = np.asarray(value, dtype=values.dtype)
    ok = bool(np.all(values == expected))
    return (label, ok, f"all {_g(value)}" if ok else f"expected all {_g(value)}")


def _orth_tolerance(dtype: np.dtype, n: int) -> float:
    eps = _eps(dtype) or 1e-7
    return max(1e-6, 10.0 * eps * n)


def _isfinite(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "iub":
        return np.ones(values.shape, dtype=bool)
    try:
        return np.isfinite(values)
    except TypeError:
        return np.isfinite(values.astype(np.float32))


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
    out.append(("finite", n_bad == 0, "" if n_bad == 0 else f"{n_bad} non-finite values"))
    out.extend(_strategy_facts(spec, info, arr, sel, mask))
    return out


def _strategy_facts(
    spec: Spec, info: WeightInfo, arr: np.ndarray, sel: np.ndarray, mask: np.ndarray | None
) -> list[Fact]:
    name, a = spec.name, spec.args
    if name == "zeros":
        return [_constant_fact(sel, 0.0)]
    if name == "ones":
        return [_constant_fact(sel, 1.0)]
    if name == "constant":
        return [_constant_fact(sel, float(a["value"]))]
    if name == "uniform":
        lo, hi = float(a["minval"]), float(a["maxval"])
        return [_bounds_fact(sel, lo, hi, f"[{_g(lo)}, {_g(hi)}]")]
    if name == "truncated_normal":
        m, s = float(a["mean"]), float(a["stddev"])
        lo, hi = m - TRUNCATION * s, m + TRUNCATION * s
        return [_bounds_fact(sel, lo, hi, f"[{_g(lo)}, {_g(hi)}]")]
    if name in _VARIANCE_SCALING:
        bounds = _column_bounds(spec, info)
        b = bounds if mask is None else bounds[mask]
        text = f"[-{_g(float(b.max()))}, {_g(float(b.max()))}]" if b.size else "[]"
        return [_bounds_fact(sel, -b, b, text)]
    if name == "orthogonal":
        return _orthogonal_facts(info, arr, mask, float(a["gain"]), bool(a["per_gate"]))
    if name == "identity":
        gain = float(a["gain"])
        eye = np.asarray(gain * np.eye(info.units), dtype=arr.dtype)
        blocks = selected_blocks(info.cell, info.units, mask)
        ok = all(bool(np.array_equal(arr[:, sl], eye)) for _, sl in blocks)
        return [("identity blocks", ok, f"{len(blocks)} block(s) equal {_g(gain)}·I")]
    if name == "unit_forget_bias":
        return _gate_constant_facts(info, arr, mask, {"f": 1.0})
    if name == "chrono":
        return _chrono_facts(info, arr, mask, float(a["tmax"]))
    if name == "keras_default":
        return _strategy_facts(_keras_default_spec(info), info, arr, sel, mask)
    if name == "pytorch_default":
        k = 1.0 / math.sqrt(info.units)
        return [_bounds_fact(sel, -k, k, f"[-{_g(k)}, {_g(k)}]")]
    if name in ("npy", "npz"):
        return [("shape", tuple(arr.shape) == tuple(info.shape), str(tuple(arr.shape)))]
    return []


def _orthogonal_facts(
    info: WeightInfo, arr: np.ndarray, mask: np.ndarray | None, gain: float, per_gate: bool
) -> list[Fact]:
    rows = int(np.prod(arr.shape[:-1]))
    mat = arr.reshape(rows, arr.shape[-1]).astype(np.float64) / gain
    if per_gate or not CELL_GATES.get(info.cell):
        blocks = selected_blocks(info.cell, info.units, mask)
        errors = [orthogonality_error(mat[:, sl]) for _, sl in blocks]
        worst = max(errors, default=0.0)
        tol = _orth_tolerance(arr.dtype, max(rows, 1))
        ok = bool(np.isfinite(worst) and worst <= tol)
        return [("orthogonal blocks", ok, f"max ‖QᵀQ−I‖ {worst:.1e} over {len(errors)} block(s)")]
    if mask is not None and not mask.all():
        # Part of a Keras-style orthogonal matrix is not orthogonal by itself: nothing to check.
        return []
    err = orthogonality_error(mat)
    ok = bool(np.isfinite(err) and err <= _orth_tolerance(arr.dtype, min(mat.shape)))
    return [("orthogonal matrix", ok, f"‖QᵀQ−I‖ {err:.1e} over the whole matrix")]


def _gate_constant_facts(
    info: WeightInfo, arr: np.ndarray, mask: np.ndarray | None, special: dict[str, float]
) -> list[Fact]:
    out: list[Fact] = []
    for gate, sl in selected_blocks(info.cell, info.units, mask):
        value = special.get(str(gate), 0.0)
        label = f"{GATE_NAMES[info.cell].get(str(gate), gate)} gate {value:g}"
        out.append(_constant_fact(arr[..., sl], value, label))
    return out


def _chrono_facts(
    info: WeightInfo, arr: np.ndarray, mask: np.ndarray | None, tmax: float
) -> list[Fact]:
    hi = math.log(tmax - 1.0)
    law = f"[0, log({_g(tmax - 1)})]"
    out: list[Fact] = []
    blocks = dict(selected_blocks(info.cell, info.units, mask))
    slices = gate_slices(info.cell, info.units)
    if info.cell == "LSTM":
        if "f" in blocks:
            _, ok, detail = _bounds_fact(arr[..., slices["f"]], 0.0, hi, law)
            out.append(("forget bias in " + law, ok, detail))
        if "i" in blocks and "f" in blocks:
            ok = bool(np.array_equal(arr[..., slices["i"]], -arr[..., slices["f"]]))
            out.append(("input bias = -forget bias", ok, ""))
        for g in ("c", "o"):
            if g in blocks:
                label = f"{GATE_NAMES['LSTM'][g]} gate 0"
                out.append(_constant_fact(arr[..., slices[g]], 0.0, label))
        return out
    row = _chrono_row(info)
    if "z" in blocks:
        _, ok, detail = _bounds_fact(arr[row + (slices["z"],)], 0.0, hi, law)
        out.append(("update gate bias in " + law, ok, detail))
    rest = np.ones(arr.shape, dtype=bool)
    rest[row + (slices["z"],)] = False
    if mask is not None:
        rest &= np.broadcast_to(mask, arr.shape)
    out.append(_constant_fact(arr[rest], 0.0, "other entries 0"))
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
