"""What ``--init`` text turns into: specs, targets, and the weights they are applied to.

Also the argument grammar every strategy shares: comma-separated ``key=value`` pairs,
positional values in the order of the strategy's parameters, or both with positionals first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from bilstm_cli.cells.blocks import ROLES, check_cell, last_axis_width

# Named here too, as before; they live beside the gate names they are checked against.
from bilstm_cli.cells.blocks import Target as Target
from bilstm_cli.cells.blocks import parse_target as parse_target
from bilstm_cli.errors import InputError, UsageError

ArgValue = float | int | bool | str


@dataclass(frozen=True)
class Spec:
    """A parsed strategy: canonical ``name``, fully resolved ``args``, and the user's ``text``."""

    name: str
    args: Mapping[str, ArgValue] = field(hash=False)
    text: str


@dataclass(frozen=True)
class WeightInfo:
    """What a strategy needs to know about the weight it fills."""

    cell: str
    role: str
    shape: tuple[int, ...]
    units: int
    reset_after: bool | None = None
    dtype: str = "float32"  # as stored: float16, bfloat16, float32 or float64

    def where(self) -> str:
        """The weight as error messages name it, e.g. ``LSTM bias of shape (8,)``."""
        return f"{self.cell} {self.role} of shape {tuple(self.shape)}"

    def check(self) -> None:
        """Raise when the cell or role is unknown or the shape does not fit the cell's units."""
        check_cell(self.cell)
        if self.role not in ROLES:
            raise UsageError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        width = last_axis_width(self.cell, self.units)
        if not self.shape or self.shape[-1] != width:
            raise InputError(
                f"{self.role} of shape {tuple(self.shape)} does not fit {self.cell} with "
                f"{self.units} units: expected the last axis to be {width}"
            )
        if self.role == "bias" and self.cell == "GRU":
            rows = 2 if self._gru_reset_after() else 1
            if tuple(self.shape) != ((rows, width) if rows == 2 else (width,)):
                expected = f"(2, {width})" if rows == 2 else f"({width},)"
                raise InputError(
                    f"GRU bias of shape {tuple(self.shape)} does not fit reset_after="
                    f"{rows == 2}: expected {expected}"
                )

    def _gru_reset_after(self) -> bool:
        if self.reset_after is not None:
            return bool(self.reset_after)
        return self.cell == "GRU" and self.role == "bias" and len(self.shape) == 2


@dataclass(frozen=True)
class Param:
    """One strategy parameter: ``kind`` is ``float`` or ``bool``; a None default means required."""

    name: str
    kind: str
    default: ArgValue | None = None


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def canonical_name(text: str) -> str:
    """A strategy or argument name as the registry keys it: lower case, ``_`` for ``-``."""
    return text.strip().lower().replace("-", "_")


def _parse_value(strategy: str, param: Param, raw: str) -> ArgValue:
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


def parse_args(name: str, params: tuple[Param, ...], usage: str, rest: str) -> dict[str, ArgValue]:
    """Every parameter of strategy ``name`` resolved from ``rest``, the text after ``NAME:``.

    Raises :class:`UsageError` on unknown, repeated, misplaced, malformed or missing arguments;
    ``usage`` is the example a missing one is reported with.
    """
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
            key = canonical_name(key)
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
                raise UsageError(f"{name} needs {param.name}, e.g. {usage}")
            values[param.name] = param.default
    return values
