"""``init``: re-initialize chosen weights (or gate blocks) with named strategies."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bilstm_cli import formats
from bilstm_cli import strategies as strategies
from bilstm_cli.cells.blocks import ROLES, covered_gates, gate_mask, parse_gates
from bilstm_cli.errors import UsageError
from bilstm_cli.formats import Session
from bilstm_cli.model import Layer, Model, Weight
from bilstm_cli.ops.apply import Job, Part, Plan
from bilstm_cli.ops.select import bidirectional_layers_to_change, directions
from bilstm_cli.results import Fact, WriteResult

DEFAULT_INIT = "keras_default"


@dataclass(frozen=True)
class Op:
    index: int
    text: str
    target: strategies.Target
    spec: strategies.Spec


def parse_ops(texts: Sequence[str]) -> list[Op]:
    texts = list(texts) or [DEFAULT_INIT]
    ops = []
    for k, text in enumerate(texts):
        target, spec = strategies.parse_init_option(text)
        ops.append(Op(k, text, target, spec))
    return ops


def weight_info(layer: Layer, ref: Weight) -> strategies.WeightInfo:
    settings = layer.settings[ref.direction]
    return strategies.WeightInfo(
        cell=settings.cell,
        role=ref.role,
        shape=ref.shape,
        units=settings.units,
        reset_after=settings.reset_after,
        dtype=ref.dtype,
    )


def seed_for(seed: int, layer: Layer, ref: Weight, op: Op) -> np.random.SeedSequence:
    """Each (layer, direction, role, option) draws from its own stream, so selecting more or
    fewer weights never changes the values drawn for the others."""
    key = (
        zlib.crc32(layer.name.encode("utf-8", "surrogateescape")),  # as the file spells it
        0 if ref.direction == "forward" else 1,
        ROLES.index(ref.role),
        op.index,
    )
    return np.random.SeedSequence(entropy=seed, spawn_key=key)


def plan(
    model: Model,
    ops: list[Op],
    layer_globs: Sequence[str],
    direction: str,
    seed: int,
) -> list[Job]:
    layers = bidirectional_layers_to_change(model, layer_globs, "initialize")
    wanted = directions(direction)
    for op in ops:
        if op.target.gates is not None:
            for layer in layers:
                try:
                    parse_gates(layer.cell, op.target.gates)
                except UsageError as exc:
                    raise UsageError(
                        f"--init '{op.text}' on layer '{layer.name}': {exc.message}"
                    ) from None
    jobs = []
    for layer in layers:
        for ref in layer.weights:
            if ref.direction not in wanted:
                continue
            job = _plan_weight(layer, ref, ops, seed)
            if job is not None:
                jobs.append(job)
    for op in ops:
        if op.target.role is not None and not any(
            ref.role == op.target.role
            for layer in layers
            for ref in layer.weights
            if ref.direction in wanted
        ):
            raise UsageError(
                f"--init '{op.text}': the selected layers have no {op.target.role} "
                "(use_bias=False?)"
            )
    return jobs


def _plan_weight(layer: Layer, ref: Weight, ops: list[Op], seed: int) -> Job | None:
    info = weight_info(layer, ref)
    width = ref.shape[-1]
    owner = np.full(width, -1)
    for op in ops:
        if op.target.role not in (None, ref.role):
            continue
        owner[gate_mask(info.cell, info.units, op.target.gates)] = op.index
    active = [ops[k] for k in sorted(set(owner.tolist())) if k >= 0]
    if not active:
        return None
    for op in active:
        try:
            strategies.check_fit(op.spec, info)
        except UsageError as exc:
            raise UsageError(
                f"--init '{op.text}' does not fit {layer.name}/{ref.direction}/{ref.role} "
                f"{ref.shape}: {exc.message}"
            ) from None
    whole = len(active) == 1 and bool((owner == active[0].index).all())
    parts = []
    for op in active:
        mask = owner == op.index
        if whole:
            gates, part_mask = None, None
        else:
            gates = covered_gates(info.cell, info.units, mask)
            part_mask = mask
        parts.append(Part(gates, part_mask, strategies.describe(op.spec, info)))

    def build(current: np.ndarray) -> np.ndarray:
        if whole:
            return strategies.generate(
                active[0].spec, info, seed_for(seed, layer, ref, active[0]), current.dtype
            )
        new = current.copy()
        for op, part in zip(active, parts):
            drawn = strategies.generate(
                op.spec, info, seed_for(seed, layer, ref, op), current.dtype
            )
            new[..., part.mask] = drawn[..., part.mask]
        return new

    def facts(values: np.ndarray) -> list[Fact]:
        found: list[Fact] = []
        for op, part in zip(active, parts):
            found.extend(strategies.facts(op.spec, info, values, part.mask))
        return found

    return Job(layer, ref, parts, build, facts, dtype_only=whole)


def plan_init(
    path: str,
    init: Sequence[str] = (),
    layers: Sequence[str] = (),
    direction: str = "both",
    seed: int | None = None,
) -> Plan:
    """Plan re-initializing the selected weights of the model at ``path``.

    ``init`` takes ``--init`` options (``"[TARGET=]SPEC"``; later ones win where they
    overlap; default ``keras_default``), ``layers`` globs, ``direction`` one of forward,
    backward, both. The same ``seed`` gives the same bytes; without one a seed is drawn and
    noted. Nothing is read but the layout until the plan is previewed or applied.

    >>> import bilstm_cli as bl
    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", init=["bias[f]=ones"], seed=1)
    >>> [c.role for c in plan.preview().changes]
    ['bias', 'bias']
    """
    ops = parse_ops(init)
    session = Session()
    session.defer_crc(path)  # checked while the writer copies it (or by settle())
    model = formats.read_model(path, session)
    chosen_seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    jobs = plan(model, ops, layers, direction, chosen_seed)
    if not jobs:
        raise UsageError("the selection matched no weight to initialize")
    result = WriteResult("init", path, None, False, seed=chosen_seed)
    if seed is None:
        result.notes.append(f"no --seed given; used --seed {chosen_seed} (pass it to repeat this)")
    if not init:
        result.notes.append(f"no --init given; used {DEFAULT_INIT} (what a fresh Keras layer gets)")
    return Plan(model, result, lambda stack, dry_run: (jobs, None), session)
