"""``transplant``: copy Bidirectional weights (or one direction, some roles, some gates) from a
donor file into a model file, and prove the result computes what the donor computed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np

from bilstm_cli import dtypes, formats
from bilstm_cli.cells import cudnn
from bilstm_cli.cells.blocks import covered_gates, parse_gates
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.formats import Session, digest
from bilstm_cli.model import WeightReader
from bilstm_cli.ops.apply import Job, Part, Plan
from bilstm_cli.ops.forward_check import ForwardChecks
from bilstm_cli.ops.pairs import Pair, check_pair, donor_values, plan_pairs, role_targets
from bilstm_cli.results import Fact, WriteResult


def _job(
    pair: Pair,
    role: str,
    mask: np.ndarray,
    donor_reader: WeightReader,
    donor_path: str,
    allow_nonfinite: bool,
    forward: ForwardChecks | None,
) -> Job:
    ref = next(w for w in pair.target.weights if w.direction == pair.direction and w.role == role)
    settings = pair.target.settings[pair.direction]
    whole = bool(mask.all())
    gates = None if whole else covered_gates(settings.cell, settings.units, mask)
    converted = " (converted from CuDNN)" if cudnn.is_cudnn(pair.source.stored_cell) else ""
    if pair.source.raw is not None:
        converted = f" (converted from {pair.source.raw.framework})"
    stored_as, donor_dtype = ref.dtype, pair.source.refs[role].dtype
    cast_note = f" (cast {donor_dtype} → {stored_as})" if donor_dtype != stored_as else ""
    part = Part(gates, None if whole else mask, f"from {pair.source.label}{converted}{cast_note}")

    def donor(current: np.ndarray) -> np.ndarray:
        values = donor_values(donor_reader, pair.source, role)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad and not allow_nonfinite:
            raise InputError(
                f"{donor_path}: {pair.source.label} {role} has {bad} non-finite value(s); "
                "pass --allow-nonfinite to copy them anyway"
            )
        # The target keeps its dtype: the donor's values are rounded to it once (nearest,
        # ties to even), and everything after (fingerprints, forward pass) uses them so.
        cast = dtypes.cast(values, dtypes.storage(current))
        # Kept as they are (the same dtype), finite values stay finite: nothing to count.
        lost = 0 if cast is values else dtypes.overflowed(values, cast)
        if lost:
            raise InputError(
                f"{donor_path}: {pair.source.label} {role} has {lost} value(s) beyond the "
                f"range of the target's {dtypes.storage(current)} weights "
                f"({ref.location} in {pair.target.name}/{pair.direction})"
            )
        if forward is not None:  # the donor's cell runs on the values as the target holds them
            forward.donor_values(pair, role, cast, ref.location if whole else None)
        return cast

    equal = "bit for bit" + (f" as cast to {stored_as}" if cast_note else "")

    if whole:
        # The donor's own array is what gets written, so the fingerprint the verification walk
        # checks the read-back weight against is the donor's: reaching the facts at all means
        # the written weight equals the donor bit for bit.
        def build_whole(current: np.ndarray) -> np.ndarray:
            return donor(current)

        def facts_whole(written: np.ndarray) -> list[Fact]:
            return [Fact("equals donor", True, equal)]

        return Job(pair.target, ref, [part], build_whole, facts_whole)

    # Only some gate blocks move: the donor's blocks are fingerprinted as read from the donor,
    # and the same blocks of the written weight are fingerprinted again as read back.
    donor_digest: list[str] = []

    def build(current: np.ndarray) -> np.ndarray:
        values = donor(current)
        donor_digest[:] = [digest(np.ascontiguousarray(values[..., mask]))]
        new = current.copy()
        new[..., mask] = values[..., mask]
        return new

    def facts(written: np.ndarray) -> list[Fact]:
        same = [digest(np.ascontiguousarray(written[..., mask]))] == donor_digest
        return [Fact("equals donor", same, equal if same else "differs from the donor")]

    return Job(pair.target, ref, [part], build, facts)


def plan_transplant(
    donor: str,
    path: str,
    maps: Sequence[str] = (),
    layers: Sequence[str] = (),
    direction: str = "both",
    roles: Sequence[str] = (),
    by: str = "name",
    allow_nonfinite: bool = False,
) -> Plan:
    """Plan copying weights from the model at ``donor`` into the model at ``path``.

    Layers pair ``by`` name or by order, or as ``maps`` say (``"SRC[/DIR]=DST[/DIR]"``; a
    plain LSTM/GRU/SimpleRNN fills one direction). ``roles`` narrows to weights or gate
    blocks (``"recurrent_kernel[i,f]"``). The plan's ``result.extra["pairs"]`` lists what
    moves; applying it runs each moved cell, the donor's and the written one, on a probe
    batch and requires the same outputs.

    >>> import bilstm_cli as bl
    >>> donor, target = "fixtures/k2_seq_lstm.h5", "fixtures/k3_seq_input_lstm_concat.keras"
    >>> plan = bl.plan_transplant(donor, target)
    >>> [p["target"] for p in plan.result.extra["pairs"]]
    ['bidirectional/forward', 'bidirectional/backward']
    """
    if by not in ("name", "order"):
        raise UsageError(f"by must be 'name' or 'order', not {by!r}")
    targets = role_targets(roles)
    session = Session()
    if os.path.realpath(donor) != os.path.realpath(path):
        session.defer_crc(path)  # checked while the writer copies it (or by settle())
        session.crc_beside(donor)  # checked whole while the work goes on (settle() waits)
    donor_model = formats.read_model(donor, session)
    target = formats.read_model(path, session)
    pairs = plan_pairs(donor_model, target, maps, layers, direction, by)
    for r in targets:
        if r.gates is not None:
            for p in pairs:
                parse_gates(p.target.cell, r.gates)
    result = WriteResult("transplant", path, None, False)
    result.extra["donor"] = donor
    moved = [(pair, check_pair(pair, targets, donor)) for pair in pairs]
    for pair in pairs:
        for difference in pair.differences:
            result.notes.append(f"{pair.label}: {difference}")
    for d_layer, t_layer in {
        (id(p.whole[0]), id(p.whole[1])): p.whole for p in pairs if p.whole
    }.values():
        if d_layer.config_known and d_layer.merge_mode != t_layer.merge_mode:
            result.notes.append(
                f"{d_layer.name} → {t_layer.name}: merge_mode {d_layer.merge_mode} (donor) vs "
                f"{t_layer.merge_mode} (target); each direction is checked on its own"
            )
    casts = sorted(
        {
            (p.source.refs[role].dtype, w.dtype)
            for p, picked in moved
            for role, _ in picked
            for w in p.target.direction_weights(p.direction)
            if w.role == role and p.source.refs[role].dtype != w.dtype
        }
    )
    for src_dtype, dst_dtype in casts:
        result.notes.append(
            f"{src_dtype} donor weights are cast to the target's {dst_dtype} (rounded to "
            f"nearest); the written weights and the forward pass are checked in {dst_dtype}"
        )
    result.extra["pairs"] = [
        {
            "donor": p.source.label,
            "target": f"{p.target.name}/{p.direction}",
            "roles": p.roles,
            "moves": p.moves,
            "complete": p.complete,
            "differences": p.differences,
        }
        for p in pairs
    ]

    def make_jobs(
        stack: contextlib.ExitStack, dry_run: bool
    ) -> tuple[list[Job], ForwardChecks | None]:
        donor_reader = formats.open_reader(donor, session)
        stack.callback(donor_reader.close)
        forward = None
        if not dry_run:
            forward = ForwardChecks(donor_model, target, donor_reader, session)
            stack.callback(forward.close)
        jobs = [
            _job(pair, role, mask, donor_reader, donor, allow_nonfinite, forward)
            for pair, picked in moved
            for role, mask in picked
        ]
        if forward is not None:
            forward.plan(pairs)
        return jobs, forward

    return Plan(target, result, make_jobs, session)
