"""The forward-pass check of a transplant: each moved cell, the donor's and the written one,
runs on the same probe batch in NumPy, and the outputs must agree.

The weights pass by anyway (the donor's as each job reads them, the written ones as the
verification walk reads them back), so the cells are fed from there rather than by reading
both files again; the arithmetic runs in a helper thread beside the writing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from bilstm_cli import formats
from bilstm_cli.cells import conv_forward as conv_reference
from bilstm_cli.cells import forward as reference
from bilstm_cli.concurrency import SerialWorker
from bilstm_cli.errors import InputError
from bilstm_cli.formats import Session
from bilstm_cli.model import CellSettings, Layer, Model, WeightReader
from bilstm_cli.ops.apply import Verifier
from bilstm_cli.ops.cross_check import CrossProbe
from bilstm_cli.ops.forward_stack import StackProbe, stack_probes
from bilstm_cli.ops.forward_stack import cell_config as _cell_config
from bilstm_cli.ops.pairs import Pair, donor_values, keras_major
from bilstm_cli.results import Check

# Float64 reference runs of identical float32 weights agree to the last bit; anything above
# this is a real difference.
OUTPUT_TOLERANCE = 1e-6


Fetch = Callable[[str], Any]


def _engine(cfg: reference.CellConfig) -> Any:
    """The reference module that runs a cell: the convolutional one for ConvLSTM layers."""
    return conv_reference if isinstance(cfg, conv_reference.ConvCellConfig) else reference


class _Batch:
    """The probe input for cells that all read it, drawn when a cell first runs: a
    transplant in which every written cell takes its donor cell's outputs runs no cell, and
    so never draws it. Only the arithmetic thread asks for it."""

    def __init__(self, draw: Callable[[], np.ndarray]) -> None:
        self._draw = draw
        self._x: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._x is None:
            self._x = self._draw()
        return self._x


def _probe_batch(cfgs: list[reference.CellConfig], input_dim: int, seed: int) -> np.ndarray:
    """The probe input for cells that all read it: (batch, time, features), or for ConvLSTM
    layers (batch, time, *spatial, channels) long enough for every cell's window."""
    convs = [c for c in cfgs if isinstance(c, conv_reference.ConvCellConfig)]
    if not convs:
        return reference.probe_batch(input_dim, seed=seed)
    shape = np.max([conv_reference.probe_shape(c, input_dim) for c in convs], axis=0)
    rng = np.random.default_rng(seed)
    return rng.standard_normal(tuple(int(d) for d in shape)).astype(np.float32)


class _CellRun:
    """One cell run on the probe batch, fed its weights as they pass by anyway: the donor's
    as each job reads them, the written ones as the verification walk reads them back. Roles
    nothing will feed (those not transplanted) are fetched from the file on the first feed.
    The kernel is handed to the arithmetic thread for projection at once; the recurrent
    kernel waits at most for the bias, so a run holds about one weight, never a whole layer.

    A written cell whose weights are, bit for bit, the ones its donor cell ran on (each
    role moved whole, read back and found equal to what was written) and whose settings
    and probe are the donor's computes exactly what the donor's computed: it takes the
    donor's outputs instead of running the same arithmetic a second time. When every written
    cell of a check does, the outputs are known equal and neither side needs to run at all:
    a donor run expected to be mirrored so is held off (``hold``), keeping nothing of what it
    is fed, and runs, on its weights read again, only if its outputs are asked for after
    all."""

    def __init__(
        self,
        x: _Batch,
        cfg: reference.CellConfig,
        fetch: Fetch,
        fed: set[str],
        work: SerialWorker,
        twin: _CellRun | None = None,
        datasets: dict[str, str] | None = None,
    ):
        self.x = x
        self.cfg = cfg
        self._fetch = fetch
        self._work = work
        self._needed = ["kernel", "recurrent_kernel"] + (["bias"] if cfg.use_bias else [])
        self._fed = fed
        self._have: dict[str, Any] = {}
        self._proj: np.ndarray | None = None  # set by the arithmetic thread
        self._output: np.ndarray | None = None  # set by the arithmetic thread
        self._started = False
        self._queued = False
        # A donor run: the roles fed with the very values then written whole, and where.
        self.written_as: dict[str, str] = {}
        # A written run: its donor run, where each role is read back from, and the roles
        # read back equal to what was written but not kept (the twin ran on them).
        self._twin = twin
        self._datasets = datasets or {}
        self._mirrored: set[str] = set()
        self._held = False

    def hold(self) -> None:
        """Run nothing on what is fed until the outputs are asked for (see the class)."""
        self._held = True

    def held(self) -> bool:
        """Whether this run still holds off its arithmetic (see the class)."""
        return self._held

    def mirrored(self) -> bool:
        """Whether this written run takes its donor run's outputs for every role."""
        return self._twin is not None and self._mirrored.issuperset(self._needed)

    def same_arithmetic(self, other: _CellRun) -> bool:
        """Whether ``other`` runs the same settings on the same probe for the same roles, so
        that on the same weights it computes the very same outputs."""
        return other.cfg == self.cfg and other.x is self.x and other._needed == self._needed

    def _mirrors_twin(self) -> bool:
        """Whether this written run would repeat its donor run's arithmetic exactly."""
        twin = self._twin
        if twin is None or not self.same_arithmetic(twin):
            return False
        return all(
            role in self._datasets and twin.written_as.get(role) == self._datasets[role]
            for role in self._needed
        )

    def feed_written(self, role: str, values: np.ndarray) -> None:
        """``values`` for ``role`` as read back, already found equal to what was written."""
        if role in self._needed and self._mirrors_twin():
            self._mirrored.add(role)
            return
        self.feed(role, values)

    def feed(self, role: str, values: np.ndarray) -> bool:
        """Run on ``values`` for ``role``; False when the run already has that role."""
        if self._queued or role not in self._needed or role in self._have:
            return False
        if self._held:
            self._have[role] = None  # fed, and so written as these values; not kept
            return True
        if not self._started:
            self._started = True
            for other in self._needed:
                if other != role and other not in self._fed:
                    self._take(other, self._fetch(other))
        self._take(role, values)
        return True

    def _take(self, role: str, values: Any) -> None:
        if role in self._have:
            return
        if role == "kernel":
            self._have[role] = None
            self._work.submit(partial(self._project, values))
        else:
            self._have[role] = values
        if not self._queued and all(r in self._have for r in self._needed):
            self._queued = True
            rk, bias = self._have["recurrent_kernel"], self._have.get("bias")
            self._have = dict.fromkeys(self._have)
            # Queued after the projection, so it runs after it.
            self._work.submit(partial(self._recur, rk, bias))

    def _project(self, kernel: np.ndarray) -> None:
        self._proj = _engine(self.cfg).input_projection(self.x.array(), kernel, self.cfg)

    def _recur(self, rk: np.ndarray, bias: np.ndarray | None) -> None:
        assert self._proj is not None
        self._output = _engine(self.cfg).recurrence(self._proj, rk, bias, self.cfg)
        self._proj = None

    def output(self) -> np.ndarray:
        """The cell's outputs; whatever was not fed by now is fetched."""
        if self.mirrored():
            assert self._twin is not None
            return self._twin.output()
        if self._held:  # asked for after all: the weights are read again
            self._held, self._have = False, {}
            for role in self._needed:
                self._take(role, self._fetch(role))
        for role in self._needed:
            if not self._queued and role not in self._have:
                self.feed(role, self._fetch(role))
        self._work.finish()
        assert self._output is not None
        return self._output


@dataclass
class _Probe:
    """One forward-pass comparison: the donor's cells against the written ones."""

    label: str
    name: str
    pair: Pair  # says whether the outputs must agree
    donor: list[_CellRun]
    written: list[_CellRun]
    merge_mode: str | None = None  # whole Bidirectional layers only

    def identical(self) -> bool:
        """Whether every written cell took its donor cell's outputs, which no cell computed:
        they are then equal without running either side."""
        return all(run.mirrored() for run in self.written) and all(run.held() for run in self.donor)

    def outputs(self, runs: list[_CellRun]) -> Any:
        if len(runs) == 1:
            return runs[0].output()
        return reference.merge_directions(runs[0].output(), runs[1].output(), self.merge_mode)


class ForwardChecks(Verifier):
    """Run each moved cell, the donor's and the written one, on the same probe batch, and
    compare. A Bidirectional moved whole is run as one layer, merge mode included."""

    def __init__(
        self, donor: Model, target: Model, donor_reader: WeightReader, session: Session
    ) -> None:
        self.donor = donor
        self.target = target
        self.donor_reader = donor_reader
        self.session = session
        self._entries: list[Check | _Probe | StackProbe | CrossProbe] = []
        self._donor_runs: dict[tuple[int, str], list[_CellRun]] = {}
        self._written_runs: dict[str, list[tuple[_CellRun, str]]] = {}
        self._staged_path: str | None = None
        self._staged_reader: WeightReader | None = None
        self._work = SerialWorker()

    # Planning, once every pair knows the roles it moves.
    def plan(self, pairs: list[Pair]) -> None:
        major = keras_major(self.target)
        for pair in pairs:
            if pair.source.raw is not None:
                self._cross_framework(pair, major)
        pairs = [p for p in pairs if p.source.raw is None]
        covered = _whole_pairs(pairs)
        for pair in pairs:
            if any(pair is p for _, _, moved in covered for p in moved):
                continue
            src = pair.source.settings
            tgt = pair.target.settings[pair.direction]
            if src.activation is None or tgt.activation is None:
                # Not a check this file allows: nothing says which activations the cells use.
                why = "a weights-only file holds no cell settings (activations) to run it with"
                self._skip(pair.label, "forward pass", why, applies=False)
                continue
            unknown = _unknown_activation([(src, pair.source.keras_major), (tgt, major)])
            if unknown:
                self._skip(pair.label, "forward pass", unknown)
                continue
            donor_cfg = _cell_config(src, pair.source.keras_major, False)
            written_cfg = _cell_config(tgt, major, False)
            x = _Batch(
                partial(
                    _probe_batch, [donor_cfg, written_cfg], pair.source.refs["kernel"].shape[-2], 0
                )
            )
            donor_run = self._donor_run(pair, x, donor_cfg)
            written_run = self._written_run(
                pair.target, pair.direction, x, written_cfg, set(pair.roles), donor_run
            )
            _hold_if_mirrored(pair, donor_run, written_run)
            self._entries.append(
                _Probe(pair.label, "forward pass", pair, [donor_run], [written_run])
            )
        for d_layer, t_layer, moved in covered:
            label = f"{d_layer.name} → {t_layer.name}"
            ordered = sorted(moved, key=lambda p: p.direction != "forward")
            unknown = _unknown_activation(
                [(p.source.settings, p.source.keras_major) for p in ordered]
                + [(t_layer.forward, major), (t_layer.backward, major)]
            )
            if unknown:
                self._skip(label, "Bidirectional forward pass", unknown)
                continue
            donor_cfgs = [
                _cell_config(
                    p.source.settings, p.source.keras_major, p.source.settings.go_backwards
                )
                for p in ordered
            ]
            written_cfgs = [
                _cell_config(s, major, s.go_backwards) for s in (t_layer.forward, t_layer.backward)
            ]
            for cfgs in (donor_cfgs, written_cfgs):
                reference.check_directions(*cfgs)
            kernel = t_layer.weight("forward", "kernel")
            assert kernel is not None  # the readers refuse a layer without one
            x = _Batch(partial(_probe_batch, [*donor_cfgs, *written_cfgs], kernel.shape[-2], 1))
            whole_pair = Pair(moved[0].source, t_layer, "both")
            whole_pair.complete = all(p.complete for p in moved)
            whole_pair.differences = [d for p in moved for d in p.differences]
            donor_runs = [self._donor_run(p, x, cfg) for p, cfg in zip(ordered, donor_cfgs)]
            written_runs = [
                self._written_run(t_layer, p.direction, x, cfg, set(p.roles), twin)
                for p, cfg, twin in zip(ordered, written_cfgs, donor_runs)
            ]
            for p, donor_run, written_run in zip(ordered, donor_runs, written_runs):
                _hold_if_mirrored(p, donor_run, written_run)
            self._entries.append(
                _Probe(
                    label,
                    "Bidirectional forward pass",
                    whole_pair,
                    donor_runs,
                    written_runs,
                    d_layer.merge_mode,
                )
            )
        # A stack's cells are checked one by one above; the stack as a whole here.
        self._entries.extend(stack_probes(pairs, major))

    def _cross_framework(self, pair: Pair, major: int) -> None:
        """Another framework's donor cell, run on its stored tensors in its own semantics,
        against the written Keras cell (each direction reading time its own way)."""
        raw = pair.source.raw
        assert raw is not None
        name = f"forward pass ({raw.framework} semantics)"
        tgt = pair.target.settings[pair.direction]
        if tgt.activation is None:
            why = "a weights-only file holds no cell settings (activations) to run it with"
            self._skip(pair.label, name, why, applies=False)
            return
        unknown = _unknown_activation([(tgt, major)])
        if unknown:
            self._skip(pair.label, name, unknown)
            return
        x = reference.probe_batch(pair.source.refs["kernel"].shape[0], seed=0)
        cfg = _cell_config(tgt, major, raw.reverse)
        batch = _Batch(lambda: x)
        written = self._written_run(pair.target, pair.direction, batch, cfg, set(pair.roles), None)
        reader = self.donor_reader

        def donor() -> np.ndarray:
            from bilstm_cli.formats.foreign import ForeignReader, raw_forward

            assert isinstance(reader, ForeignReader)
            return raw_forward(reader, raw, x)

        dtypes = [pair.source.refs["kernel"].dtype]
        target_kernel = pair.target.weight(pair.direction, "kernel")
        if target_kernel is not None:
            dtypes.append(target_kernel.dtype)
        self._entries.append(CrossProbe(pair, name, donor, written, raw.reverse, dtypes))

    def _skip(self, label: str, name: str, why: str, applies: bool = True) -> None:
        self._entries.append(Check.skipped(label, name, why, applies))

    def _donor_run(self, pair: Pair, x: _Batch, cfg: reference.CellConfig) -> _CellRun:
        source = pair.source

        def fetch(role: str) -> np.ndarray | None:
            if role not in source.refs:
                return None
            return donor_values(self.donor_reader, source, role)

        run = _CellRun(x, cfg, fetch, set(pair.roles), self._work)
        for role in pair.roles:
            self._donor_runs.setdefault((id(pair), role), []).append(run)
        return run

    def _written_run(
        self,
        layer: Layer,
        direction: str,
        x: _Batch,
        cfg: reference.CellConfig,
        fed: set[str],
        twin: _CellRun | None,
    ) -> _CellRun:
        refs = {w.role: w for w in layer.weights if w.direction == direction}

        def fetch(role: str) -> np.ndarray | None:
            if role not in refs:
                return None
            dataset = refs[role].location
            return self._staged_weights().read(dataset)

        datasets = {role: ref.location for role, ref in refs.items()}
        run = _CellRun(x, cfg, fetch, fed, self._work, twin, datasets)
        for role, ref in refs.items():
            self._written_runs.setdefault(ref.location, []).append((run, role))
        return run

    def _staged_weights(self) -> WeightReader:
        if self._staged_reader is None:
            assert self._staged_path is not None
            self._staged_reader = formats.open_reader(self._staged_path, self.session)
        return self._staged_reader

    # Feeding, from the jobs (donor values) and from the verification walk (written values).
    def donor_values(
        self, pair: Pair, role: str, values: np.ndarray, written_as: str | None = None
    ) -> None:
        """The donor's ``values`` for ``role``; ``written_as``: the dataset these very values
        are written to, whole (not when only some gate blocks move)."""
        for run in self._donor_runs.get((id(pair), role), ()):
            if run.feed(role, values) and written_as is not None:
                run.written_as[role] = written_as

    def begin(self, staged_path: str) -> None:
        self._staged_path = staged_path

    def written(self, dataset: str, values: np.ndarray) -> None:
        for run, role in self._written_runs.get(dataset, ()):
            run.feed_written(role, values)

    def checks(self) -> list[Check]:
        out = []
        for entry in self._entries:
            if isinstance(entry, Check):
                out.append(entry)
                continue
            if isinstance(entry, StackProbe):
                diff = _max_diff(*entry.outputs(self.donor_reader, self._staged_weights()))
                out.append(_agreement(entry.pair, entry.name, diff, entry.label))
                continue
            if isinstance(entry, CrossProbe):
                out.append(entry.check())
                continue
            if entry.identical():
                out.append(_agreement(entry.pair, entry.name, 0.0, entry.label, _IDENTICAL))
                continue
            diff = _max_diff(entry.outputs(entry.donor), entry.outputs(entry.written))
            out.append(_agreement(entry.pair, entry.name, diff, entry.label))
        return out

    def close(self) -> None:
        self._work.close()
        if self._staged_reader is not None:
            reader, self._staged_reader = self._staged_reader, None
            reader.close()


# Why a check whose written cells all took their donor cells' outputs ran neither side.
_IDENTICAL = "the donor cells' weights bit for bit and settings: not run"


def _hold_if_mirrored(pair: Pair, donor: _CellRun, written: _CellRun) -> None:
    """Hold off ``donor``'s arithmetic when ``written`` is expected to take its outputs: the
    same settings and probe, and every weight the cell runs on moved whole in its own dtype
    (so that reading it again from the donor gives the values the cell would have run on)."""
    if not written.same_arithmetic(donor):
        return
    target = {w.role: w for w in pair.target.weights if w.direction == pair.direction}
    for role in donor._needed:
        if role not in pair.moves or role not in target or role not in pair.source.refs:
            return
        if pair.source.refs[role].dtype != target[role].dtype:
            return
    donor.hold()


def _unknown_activation(settings: list[tuple[CellSettings, int]]) -> str | None:
    """Why the reference cannot run these cells (an activation it does not know, a
    convolution it does not run), if so. A custom activation's code is never run: the check
    is skipped and says why."""
    for cell, major in settings:
        if cell.conv is not None:
            problem = conv_reference.conv_problem(cell.cell, cell.conv)
            if problem is not None:
                return f"the reference does not run a {problem}"
        for name in (cell.activation, cell.recurrent_activation):
            if name is None:
                continue
            try:
                reference.get_activation(name, major)
            except InputError:
                owner = cell.name or cell.cell
                return f"activation '{name}' of {owner} is not one the reference knows"
    return None


def _whole_pairs(pairs: list[Pair]) -> list[tuple[Layer, Layer, list[Pair]]]:
    """Donor/target Bidirectional layers moved in both directions, runnable as whole layers."""
    groups: dict[tuple[int, int], list[Pair]] = {}
    for p in pairs:
        if p.whole:
            groups.setdefault((id(p.whole[0]), id(p.whole[1])), []).append(p)
    out = []
    for moved in groups.values():
        d_layer, t_layer = moved[0].whole  # type: ignore[misc]
        if d_layer.stack is not None or t_layer.stack is not None:
            continue  # one cell of a stack is not the layer: see forward_stack
        if len(moved) != 2 or d_layer.merge_mode != t_layer.merge_mode:
            continue
        if any(s.activation is None for s in (d_layer.forward, t_layer.forward)):
            continue
        out.append((d_layer, t_layer, moved))
    return out


def _max_diff(a: Any, b: Any) -> float:
    """Largest absolute difference; NaN where both have NaN counts as agreement."""
    if isinstance(a, list):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:  # convolutions with other padding or strides: other output shapes
        return float("inf")
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        d = np.where(both_nan, 0.0, np.abs(a - b))
    if np.isnan(d).any():
        return float("inf")
    return float(d.max()) if d.size else 0.0


def _agreement(
    pair: Pair, name: str, diff: float, label: str | None = None, how: str | None = None
) -> Check:
    label = label or pair.label
    if pair.complete and not pair.differences:
        ok = diff <= OUTPUT_TOLERANCE
        detail = f"largest output difference {diff:.3g}" + (f" ({how})" if how else "")
        return Check.of(label, name, ok, detail if ok else detail + " (should be 0)")
    # The outputs are expected to differ, so agreement proves nothing either way: what moved
    # is proved bit for bit by the written weights' own checks.
    why = "a partial transplant" if not pair.complete else "settings that differ"
    return Check.skipped(
        label,
        name,
        f"outputs differ by up to {diff:.3g}, as expected with {why}; not a check here",
        applies=False,
    )
