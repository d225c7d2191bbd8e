"""``check``: the health of every Bidirectional layer's weights, as findings with thresholds.

Per layer, direction and gate block: non-finite values, the largest singular value and spectral
radius of recurrent blocks, forget / update gate time scales, saturated, dead and unused units,
identical or mirrored directions, and weights that look freshly initialized. The rules, their
codes and default thresholds are in :mod:`bilstm_cli.findings`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bilstm_cli import cells, formats
from bilstm_cli.cells.blocks import CELL_GATES
from bilstm_cli.findings import CheckResult, Settings, check_fail_on, resolve
from bilstm_cli.health import rules
from bilstm_cli.model import Layer, Model
from bilstm_cli.ops import Progress
from bilstm_cli.ops.pairs import keras_major
from bilstm_cli.ops.select import layers_matching, select_layers

ROLES = ("kernel", "recurrent_kernel", "bias")


def check(
    path: str,
    layers: Sequence[str] = (),
    thresholds: Mapping[str, Mapping[str, Any]] | Settings | None = None,
    fail_on: str = "error",
    progress: Progress | None = None,
) -> CheckResult:
    """Check the Bidirectional layers of the model at ``path`` (or those the ``layers`` globs
    match). ``thresholds`` overrides defaults (``{"recurrent.exploding": {"max_singular":
    10}}``, ``{"init.fresh": {"severity": "off"}}``); ``fail_on`` (``error`` or ``warning``)
    decides ``ok``. ``to_dict()`` of the result is ``bilstm check --json``.

    >>> import bilstm_cli as bl
    >>> health = bl.check("fixtures/check/trained_lstm_gru.keras")
    >>> health.ok, health.layers, health.findings
    (True, ['bi_lstm', 'bi_gru'], [])
    >>> fresh = bl.check("fixtures/check/fresh_lstm_gru.keras")
    >>> fresh.ok, sorted({(f.code, f.layer) for f in fresh.findings})
    (False, [('init.fresh', 'bi_gru'), ('init.fresh', 'bi_lstm')])
    """
    settings = thresholds if isinstance(thresholds, Settings) else resolve(thresholds)
    check_fail_on(fail_on)
    with formats.open_model(path) as model:
        chosen = select_layers(model.layers, layers, path)
        return check_model(model, chosen, settings, fail_on, progress)


def check_matching(
    path: str,
    layers: Sequence[str],
    settings: Settings,
    fail_on: str = "error",
    progress: Progress | None = None,
) -> CheckResult:
    """:func:`check` of the layers that ``layers`` match in this file, where a glob matching
    nothing is not an error (what ``bilstm check`` runs on each of several files)."""
    with formats.open_model(path) as model:
        chosen = layers_matching(model.layers, layers) if layers else model.layers
        return check_model(model, chosen, settings, fail_on, progress)


def check_layers(path: str, names: Sequence[str], settings: Settings | None = None) -> CheckResult:
    """:func:`check` of the layers called ``names`` exactly (those the file has)."""
    wanted = set(names)
    with formats.open_model(path) as model:
        chosen = [layer for layer in model.layers if layer.name in wanted]
        return check_model(model, chosen, settings or resolve())


def check_model(
    model: Model,
    chosen: Sequence[Layer],
    settings: Settings,
    fail_on: str = "error",
    progress: Progress | None = None,
) -> CheckResult:
    """Check ``chosen`` layers of an open ``model``."""
    judge = rules.Judge(settings, keras_major(model))
    result = CheckResult(
        model.path,
        model.format,
        model.keras_version,
        [layer.name for layer in chosen],
        settings,
        check_fail_on(fail_on),
    )
    assumed = False
    for k, layer in enumerate(chosen):
        if progress is not None:
            progress("checking", k, len(chosen))
        sides = []
        for side in iter_sides(judge, layer):
            assumed |= side.assumed_sigmoid
            rules.check_nonfinite(judge, side)
            rules.check_recurrent(judge, side)
            rules.check_timescales(judge, side)
            rules.check_saturation(judge, side)
            rules.check_units(judge, side)
            rules.check_fresh(judge, side)
            side.arrays.clear()  # the float64 copies: only the stored values are compared
            sides.append(side)
        if len(sides) == 2:
            _compare_directions(judge, layer, *sides)
        del sides  # one layer's weights in memory at a time
    if assumed:
        result.notes.append(
            "no layer configuration in this file: gates are taken to use the sigmoid, "
            "the Keras default"
        )
    result.findings, result.skipped, result.blocks = judge.findings, judge.skipped, judge.blocks
    return result


def _as_float(a: np.ndarray) -> np.ndarray | None:
    try:
        out: np.ndarray = np.asarray(a).astype(np.float64)
    except (TypeError, ValueError):
        return None
    return out


def read_sides(judge: rules.Judge, layer: Layer) -> list[rules.Side]:
    """Each direction of ``layer`` read and converted, or skipped saying why."""
    return list(iter_sides(judge, layer))


def iter_sides(judge: rules.Judge, layer: Layer) -> Iterator[rules.Side]:
    """:func:`read_sides`, one direction at a time."""
    for direction in layer.directions:
        settings = cells.keras_settings(direction.settings)
        if settings.cell not in cells.known():
            why = f"{direction.settings.cell} is not a cell family the checks know"
            judge.skip(layer.name, direction.name, None, "all", why)
            continue
        stored = cells.variant(direction.settings.cell)
        family = cells.get(settings.cell)
        width = family.blocks * settings.units
        raw: dict[str, np.ndarray] = {}
        arrays: dict[str, np.ndarray] = {}
        for w in direction.weights:
            if w.role not in ROLES:
                continue
            values = np.asarray(w.read())
            if stored is not None:  # CuDNN layouts: the family's own
                values = stored.to_keras(w.role, values, settings.units)
            if values.dtype.kind not in "fiu":  # bfloat16 and other extension types
                widened = _as_float(values)
                if widened is None:
                    why = f"dtype {values.dtype} cannot be read as numbers"
                    judge.skip(layer.name, direction.name, w.role, "all", why)
                    continue
                values = widened
            if values.ndim == 0 or values.shape[-1] != width:
                why = f"shape {tuple(values.shape)} does not fit {settings.cell}({settings.units})"
                judge.skip(layer.name, direction.name, w.role, "all", why)
                continue
            raw[w.role] = values
            if w.role != "kernel":  # kernels are only summed and compared: no copy
                arrays[w.role] = values.astype(np.float64)
        if not raw:
            judge.skip(layer.name, direction.name, None, "all", "no weight could be read")
            continue
        activation = settings.recurrent_activation
        side = rules.Side(
            layer.name,
            direction.name,
            settings.cell,
            settings.units,
            settings.activation if settings.activation is not None else "tanh",
            activation if activation is not None else "sigmoid",
            arrays,
            raw,
            # SimpleRNN has no gates, so no recurrent activation to assume.
            assumed_sigmoid=activation is None and len(CELL_GATES.get(settings.cell, ())) > 1,
        )
        yield side


def _compare_directions(
    judge: rules.Judge, layer: Layer, forward: rules.Side, backward: rules.Side
) -> None:
    """Exactly identical directions, or the backward one negated or with its units reversed."""
    roles = [r for r in ROLES if r in forward.raw and r in backward.raw]
    pairs = [(forward.raw[r], backward.raw[r]) for r in roles]
    if not pairs or any(a.shape != b.shape for a, b in pairs):
        return
    if not any(np.any(a != 0) for a, _ in pairs):
        return  # all zeros: dead units say it
    place = (layer.name, None, None, None)
    if all(np.array_equal(a, b) for a, b in pairs):
        judge.find(
            "directions.identical", place, None, None, f"{', '.join(roles)} equal bit for bit"
        )
        return
    if all(np.array_equal(-a, b) for a, b in pairs):
        judge.find("directions.mirrored", place, None, None, "backward = −forward, every weight")
        return
    blocks = cells.get(forward.cell).blocks
    if all(
        np.array_equal(_reverse_units(r, a, blocks, forward.units), b)
        for r, (a, b) in zip(roles, pairs)
    ):
        judge.find(
            "directions.mirrored", place, None, None, "backward = forward with its units reversed"
        )


def _reverse_units(role: str, a: np.ndarray, blocks: int, units: int) -> np.ndarray:
    """``a`` with the order of its units reversed within every gate block (and along the
    rows of a recurrent kernel, which are units too)."""
    shape = a.shape
    out = a.reshape(*shape[:-1], blocks, units)[..., ::-1].reshape(shape)
    if role == "recurrent_kernel" and out.ndim == 2:
        out = out[::-1]
    return out


__all__ = ["check", "check_layers", "check_matching", "check_model", "read_sides"]
