"""``transplant``: copy Bidirectional weights (or one direction, some roles, some gates) from a
donor file into a model file, and prove the result computes what the donor computed."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from bilstm_cli import formats
from bilstm_cli.cells import cudnn
from bilstm_cli.cells import forward as reference
from bilstm_cli.cells.blocks import ROLES, covered_gates, gate_mask, parse_gates
from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.formats import Session, digest
from bilstm_cli.formats.keras_layout import expected_shape
from bilstm_cli.model import CellSettings, Layer, Model, PlainLayer, Weight, WeightReader
from bilstm_cli.ops.apply import Fact, Job, Part, Plan, Verifier
from bilstm_cli.ops.plan_init import bidirectional_layers_to_change
from bilstm_cli.ops.select import directions, layer_matches, select_layers
from bilstm_cli.results import Check, WriteResult
from bilstm_cli.strategies import Target, parse_target

SETTINGS_COMPARED = ("activation", "recurrent_activation", "use_bias", "reset_after")
# Float64 reference runs of identical float32 weights agree to the last bit; anything above
# this is a real difference.
OUTPUT_TOLERANCE = 1e-6


@dataclass
class Source:
    """One donor direction (or a plain donor layer), in the Keras layout after conversion."""

    label: str
    settings: CellSettings  # cell already mapped from CuDNN to its Keras equivalent
    refs: dict[str, Weight]
    stored_cell: str
    keras_major: int


@dataclass
class Pair:
    source: Source
    target: Layer
    direction: str
    whole: tuple[Layer, Layer] | None = None  # donor and target Bidirectional, both ways
    roles: list[str] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)  # roles, with [gates] where only some move
    complete: bool = True
    differences: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.source.label} → {self.target.name}/{self.direction}"


def _major(model: Model) -> int:
    version = model.keras_version or "3"
    return 2 if version.startswith(("1.", "2.")) else 3


def _keras_settings(s: CellSettings) -> CellSettings:
    if not cudnn.is_cudnn(s.cell):
        return s
    # CuDNN layers were fixed to tanh / sigmoid; CuDNNGRU maps to GRU(reset_after=True).
    return CellSettings(
        cell=cudnn.KERAS_CELL[s.cell],
        units=s.units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        reset_after=True if s.cell == "CuDNNGRU" else None,
        go_backwards=s.go_backwards,
        name=s.name,
    )


def _bi_source(model: Model, layer: Layer, direction: str) -> Source:
    settings = layer.settings[direction]
    refs = {w.role: w for w in layer.weights if w.direction == direction}
    return Source(
        f"{layer.name}/{direction}", _keras_settings(settings), refs, settings.cell, _major(model)
    )


def _plain_source(model: Model, layer: PlainLayer) -> Source:
    refs = {w.role: w for w in layer.weights}
    return Source(
        layer.name, _keras_settings(layer.settings), refs, layer.settings.cell, _major(model)
    )


def _split_direction(text: str) -> tuple[str, str | None]:
    for d in ("forward", "backward"):
        if text.endswith("/" + d):
            return text[: -len(d) - 1], d
    return text, None


def _find(layers: Sequence[Any], name: str) -> Any | None:
    exact = [x for x in layers if x.name == name]
    if exact:
        return exact[0]
    by_own = [x for x in layers if x.name.rsplit("/", 1)[-1] == name]
    return by_own[0] if len(by_own) == 1 else None


def _names(layers: Sequence[Any]) -> str:
    return ", ".join(x.name for x in layers) or "none"


def _pairs_from_map(donor: Model, target: Model, text: str, wanted: tuple[str, ...]) -> list[Pair]:
    src_text, eq, dst_text = text.partition("=")
    if not eq or not src_text or not dst_text:
        raise UsageError(f"--map '{text}': expected SRC[/DIR]=DST[/DIR], e.g. enc=enc_new")
    src_name, src_dir = _split_direction(src_text.strip())
    dst_name, dst_dir = _split_direction(dst_text.strip())
    dst = _find(target.layers, dst_name)
    if dst is None:
        raise UsageError(
            f"--map '{text}': no Bidirectional layer '{dst_name}' in {target.path} "
            f"(available: {_names(target.layers)})"
        )
    src_bi = _find(donor.layers, src_name)
    if src_bi is not None:
        if (src_dir is None) != (dst_dir is None):
            raise UsageError(
                f"--map '{text}': give a direction on both sides (enc/forward=dec/backward) "
                "or on neither"
            )
        if src_dir is None:
            return [Pair(_bi_source(donor, src_bi, d), dst, d, whole=(src_bi, dst)) for d in wanted]
        assert dst_dir is not None  # both sides name a direction
        return [Pair(_bi_source(donor, src_bi, src_dir), dst, dst_dir)]
    plain = _find(donor.plain_layers, src_name)
    if plain is None:
        raise UsageError(
            f"--map '{text}': no layer '{src_name}' in {donor.path} (Bidirectional: "
            f"{_names(donor.layers)}; plain RNN: {_names(donor.plain_layers)})"
        )
    if src_dir is not None:
        raise UsageError(f"--map '{text}': '{src_name}' is not Bidirectional; drop '/{src_dir}'")
    if dst_dir is None:
        raise UsageError(
            f"--map '{text}': a plain {plain.settings.cell} fills one direction; "
            f"write {src_name}={dst_name}/forward or {src_name}={dst_name}/backward"
        )
    return [Pair(_plain_source(donor, plain), dst, dst_dir)]


def plan_pairs(
    donor: Model,
    target: Model,
    maps: Sequence[str],
    layer_globs: Sequence[str],
    direction: str,
    by: str,
) -> list[Pair]:
    wanted = directions(direction)
    bidirectional_layers_to_change(target, (), "transplant into")
    if not donor.layers and not donor.plain_layers:
        raise InputError(f"{donor.path}: no Bidirectional or recurrent layer to take weights from")
    if maps:
        pairs = [p for text in maps for p in _pairs_from_map(donor, target, text, wanted)]
        if layer_globs:
            select_layers(target.layers, layer_globs, target.path)
            pairs = [p for p in pairs if any(layer_matches(p.target, g) for g in layer_globs)]
    else:
        targets = select_layers(target.layers, layer_globs, target.path)
        matched: list[tuple[Layer, Layer]] = []
        if by == "order":
            matched = list(zip(donor.layers, targets))
        else:
            for t in targets:
                d = _find(donor.layers, t.name) or _find(donor.layers, t.name.rsplit("/", 1)[-1])
                if d is not None:
                    matched.append((d, t))
        pairs = [
            Pair(_bi_source(donor, d, way), t, way, whole=(d, t))
            for d, t in matched
            for way in wanted
        ]
    if not pairs:
        raise UsageError(
            f"no layer of {target.path} ({_names(target.layers)}) has a counterpart in "
            f"{donor.path} ({_names(donor.layers)}); use --by order or --map SRC=DST"
        )
    for p in pairs:
        if not p.target.supported:
            raise InputError(
                f"{target.path}: layer '{p.target.name}' wraps {p.target.cell}; "
                "only LSTM, GRU and SimpleRNN layers can receive weights"
            )
    return pairs


def _role_targets(role_texts: Sequence[str]) -> list[Target]:
    return [parse_target(t) for t in role_texts]


def _check_pair(pair: Pair, roles: list[Target], donor_path: str) -> list[tuple[str, np.ndarray]]:
    """Shapes, cells and settings of one pair; returns (role, column mask) to transplant."""
    src, tgt = pair.source.settings, pair.target.settings[pair.direction]
    where = f"{pair.source.label} ({donor_path}) → {pair.target.name}/{pair.direction}"
    if src.cell != tgt.cell:
        extra = (
            f" (converted from {pair.source.stored_cell})"
            if cudnn.is_cudnn(pair.source.stored_cell)
            else ""
        )
        raise InputError(f"{where}: a {src.cell}{extra} cannot fill a {tgt.cell}")
    if src.units != tgt.units:
        donor_rk = pair.source.refs.get("recurrent_kernel")
        target_rk = pair.target.weight(pair.direction, "recurrent_kernel")
        raise InputError(
            f"{where}: recurrent_kernel shapes differ, donor "
            f"{donor_rk.shape if donor_rk else '?'} vs target "
            f"{target_rk.shape if target_rk else '?'} ({src.units} vs {tgt.units} units)"
        )
    out = []
    target_refs = {w.role: w for w in pair.target.weights if w.direction == pair.direction}
    for role in ROLES:
        asked = [r for r in roles if r.role in (None, role)] if roles else [Target(None, None)]
        if not asked or role not in target_refs:
            continue
        if role not in pair.source.refs:
            if roles and any(r.role == role for r in roles):
                raise InputError(f"{where}: the donor has no {role} (use_bias=False)")
            pair.differences.append(f"the donor has no {role}; the target's was kept")
            pair.complete = False
            continue
        mask = np.zeros(target_refs[role].shape[-1], dtype=bool)
        for r in asked:
            mask |= gate_mask(tgt.cell, tgt.units, r.gates)
        donor_shape = _converted_shape(pair.source, role)
        if donor_shape != target_refs[role].shape:
            raise InputError(
                f"{where}: {role} shapes differ, donor {donor_shape} vs target "
                f"{target_refs[role].shape}"
            )
        if not mask.all():
            pair.complete = False
        out.append((role, mask))
    if len(out) < len(target_refs):
        pair.complete = False
    if not out:
        raise UsageError(f"{where}: --role selects none of the weights this pair has")
    pair.roles = [r for r, _ in out]
    pair.moves = [_with_gates(tgt, role, mask) for role, mask in out]
    for key in SETTINGS_COMPARED:
        a, b = getattr(src, key), getattr(tgt, key)
        if a is None or b is None:
            continue
        if a != b:
            pair.differences.append(f"{key} {a} (donor) vs {b} (target)")
    # Moving a backward cell onto a forward one flips go_backwards by design; within the same
    # direction a difference means an explicit backward layer that reads time the other way.
    same_direction = pair.source.label.endswith("/" + pair.direction)
    if same_direction and src.go_backwards != tgt.go_backwards and src.activation is not None:
        pair.differences.append(
            f"go_backwards {src.go_backwards} (donor) vs {tgt.go_backwards} (target)"
        )
    if src.activation is None or tgt.activation is None:
        pair.differences.append("cell settings unknown (weights-only file); not compared")
    return out


def _with_gates(settings: CellSettings, role: str, mask: np.ndarray) -> str:
    """``role``, or ``role[gates]`` when only some gate blocks move."""
    if mask.all():
        return role
    return f"{role}[{','.join(covered_gates(settings.cell, settings.units, mask))}]"


def _converted_shape(source: Source, role: str) -> tuple[int, ...]:
    """The donor weight's shape once in the Keras layout (a CuDNN bias changes shape)."""
    if cudnn.is_cudnn(source.stored_cell) and role == "bias":
        return expected_shape(source.settings, "bias", 0)
    return source.refs[role].shape


def _donor_values(reader: WeightReader, source: Source, role: str) -> np.ndarray:
    values = reader.read(source.refs[role].location)
    if cudnn.is_cudnn(source.stored_cell):
        values = cudnn.to_keras(source.stored_cell, role, values, source.settings.units)
    return values


def _job(
    pair: Pair,
    role: str,
    mask: np.ndarray,
    donor_reader: WeightReader,
    donor_path: str,
    allow_nonfinite: bool,
    forward: _ForwardChecks | None,
) -> Job:
    ref = next(w for w in pair.target.weights if w.direction == pair.direction and w.role == role)
    settings = pair.target.settings[pair.direction]
    whole = bool(mask.all())
    gates = None if whole else covered_gates(settings.cell, settings.units, mask)
    converted = " (converted from CuDNN)" if cudnn.is_cudnn(pair.source.stored_cell) else ""
    part = Part(gates, None if whole else mask, f"from {pair.source.label}{converted}")

    def donor(dtype: np.dtype) -> np.ndarray:
        values = _donor_values(donor_reader, pair.source, role)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad and not allow_nonfinite:
            raise InputError(
                f"{donor_path}: {pair.source.label} {role} has {bad} non-finite value(s); "
                "pass --allow-nonfinite to copy them anyway"
            )
        cast = values
        if values.dtype != dtype:
            with np.errstate(over="ignore", invalid="ignore"):
                cast = values.astype(dtype)
            lost = int(np.count_nonzero(np.isfinite(values) & ~np.isfinite(cast)))
            if lost:
                raise InputError(
                    f"{donor_path}: {pair.source.label} {role} has {lost} value(s) beyond the "
                    f"range of the target's {np.dtype(dtype).name} weights"
                )
        if forward is not None:  # the donor's cell runs on its own values, as stored
            forward.donor_values(pair, role, values)
        return cast

    if whole:
        # The donor's own array is what gets written, so the fingerprint the verification walk
        # checks the read-back weight against is the donor's: reaching the facts at all means
        # the written weight equals the donor bit for bit.
        def build_whole(current: np.ndarray) -> np.ndarray:
            return donor(current.dtype)

        def facts_whole(written: np.ndarray) -> list[Fact]:
            return [("equals donor", True, "bit for bit")]

        return Job(pair.target, ref, [part], build_whole, facts_whole)

    # Only some gate blocks move: the donor's blocks are fingerprinted as read from the donor,
    # and the same blocks of the written weight are fingerprinted again as read back.
    donor_digest: list[str] = []

    def build(current: np.ndarray) -> np.ndarray:
        values = donor(current.dtype)
        donor_digest[:] = [digest(np.ascontiguousarray(values[..., mask]))]
        new = current.copy()
        new[..., mask] = values[..., mask]
        return new

    def facts(written: np.ndarray) -> list[Fact]:
        same = [digest(np.ascontiguousarray(written[..., mask]))] == donor_digest
        return [("equals donor", same, "bit for bit" if same else "differs from the donor")]

    return Job(pair.target, ref, [part], build, facts)


def _cell_config(settings: CellSettings, major: int, go_backwards: bool) -> reference.CellConfig:
    return reference.CellConfig(
        cell=settings.cell,
        units=settings.units,
        activation=settings.activation,
        recurrent_activation=settings.recurrent_activation,
        use_bias=settings.use_bias,
        reset_after=bool(settings.reset_after),
        go_backwards=go_backwards,
        keras_major=major,
    )


Fetch = Callable[[str], Any]


class _Arithmetic:
    """A helper thread for the forward-pass arithmetic (NumPy lets go of the interpreter in
    it), so that it runs beside the main thread's reading, writing and statistics. Tasks run in
    the order given, one at a time, and a new one waits until the last is done: the weights
    held for the arithmetic are never more than one."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(1)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, task: Callable[[], None]) -> None:
        if self._thread is None:
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()  # kept only once started: a signal can interrupt start()
            self._thread = thread
        self._idle.acquire()
        self._tasks.put(task)

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                if self._error is None:
                    task()
            except BaseException as exc:  # re-raised by finish(), in the main thread
                self._error = exc
            finally:
                del task  # let go of its weight before saying so
                self._idle.release()

    def finish(self) -> None:
        """Wait for every task given so far; raise the first failure here."""
        if self._thread is not None:
            self._idle.acquire()  # the last task is done
            self._idle.release()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            self._tasks.put(None)
            thread.join()


class _CellRun:
    """One cell run on the probe batch, fed its weights as they pass by anyway: the donor's
    as each job reads them, the written ones as the verification walk reads them back. Roles
    nothing will feed (those not transplanted) are fetched from the file on the first feed.
    The kernel is handed to the arithmetic thread for projection at once; the recurrent
    kernel waits at most for the bias, so a run holds about one weight, never a whole layer."""

    def __init__(
        self,
        x: np.ndarray,
        cfg: reference.CellConfig,
        fetch: Fetch,
        fed: set[str],
        work: _Arithmetic,
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

    def feed(self, role: str, values: np.ndarray) -> None:
        if self._queued or role not in self._needed or role in self._have:
            return
        if not self._started:
            self._started = True
            for other in self._needed:
                if other != role and other not in self._fed:
                    self._take(other, self._fetch(other))
        self._take(role, values)

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
        self._proj = reference.input_projection(self.x, kernel, self.cfg)

    def _recur(self, rk: np.ndarray, bias: np.ndarray | None) -> None:
        assert self._proj is not None
        self._output = reference.recurrence(self._proj, rk, bias, self.cfg)
        self._proj = None

    def output(self) -> np.ndarray:
        """The cell's outputs; whatever was not fed by now is fetched."""
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

    def outputs(self, runs: list[_CellRun]) -> Any:
        if len(runs) == 1:
            return runs[0].output()
        return reference.merge_directions(runs[0].output(), runs[1].output(), self.merge_mode)


class _ForwardChecks(Verifier):
    """Run each moved cell, the donor's and the written one, on the same probe batch, and
    compare. A Bidirectional moved whole is run as one layer, merge mode included."""

    def __init__(
        self, donor: Model, target: Model, donor_reader: WeightReader, session: Session
    ) -> None:
        self.donor = donor
        self.target = target
        self.donor_reader = donor_reader
        self.session = session
        self._entries: list[Check | _Probe] = []
        self._donor_runs: dict[tuple[int, str], list[_CellRun]] = {}
        self._written_runs: dict[str, list[tuple[_CellRun, str]]] = {}
        self._staged_path: str | None = None
        self._staged_reader: WeightReader | None = None
        self._work = _Arithmetic()

    # Planning, once every pair knows the roles it moves.
    def plan(self, pairs: list[Pair]) -> None:
        major = _major(self.target)
        covered = _whole_pairs(pairs)
        for pair in pairs:
            if any(pair is p for _, _, moved in covered for p in moved):
                continue
            src = pair.source.settings
            tgt = pair.target.settings[pair.direction]
            if src.activation is None or tgt.activation is None:
                self._skip(pair.label, "forward pass", "settings unknown")
                continue
            unknown = _unknown_activation([(src, pair.source.keras_major), (tgt, major)])
            if unknown:
                self._skip(pair.label, "forward pass", unknown)
                continue
            x = reference.probe_batch(pair.source.refs["kernel"].shape[0], seed=0)
            donor_run = self._donor_run(pair, x, _cell_config(src, pair.source.keras_major, False))
            written_run = self._written_run(
                pair.target, pair.direction, x, _cell_config(tgt, major, False), set(pair.roles)
            )
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
            x = reference.probe_batch(t_layer.weight("forward", "kernel").shape[0], seed=1)  # type: ignore[union-attr]
            whole_pair = Pair(moved[0].source, t_layer, "both")
            whole_pair.complete = all(p.complete for p in moved)
            whole_pair.differences = [d for p in moved for d in p.differences]
            self._entries.append(
                _Probe(
                    label,
                    "Bidirectional forward pass",
                    whole_pair,
                    [self._donor_run(p, x, cfg) for p, cfg in zip(ordered, donor_cfgs)],
                    [
                        self._written_run(t_layer, p.direction, x, cfg, set(p.roles))
                        for p, cfg in zip(ordered, written_cfgs)
                    ],
                    d_layer.merge_mode,
                )
            )

    def _skip(self, label: str, name: str, why: str) -> None:
        self._entries.append(Check(label, name, True, f"skipped: {why}"))

    def _donor_run(self, pair: Pair, x: np.ndarray, cfg: reference.CellConfig) -> _CellRun:
        source = pair.source

        def fetch(role: str) -> np.ndarray | None:
            if role not in source.refs:
                return None
            return _donor_values(self.donor_reader, source, role)

        run = _CellRun(x, cfg, fetch, set(pair.roles), self._work)
        for role in pair.roles:
            self._donor_runs.setdefault((id(pair), role), []).append(run)
        return run

    def _written_run(
        self,
        layer: Layer,
        direction: str,
        x: np.ndarray,
        cfg: reference.CellConfig,
        fed: set[str],
    ) -> _CellRun:
        refs = {w.role: w for w in layer.weights if w.direction == direction}

        def fetch(role: str) -> np.ndarray | None:
            if role not in refs:
                return None
            dataset = refs[role].location
            return self._staged_weights().read(dataset)

        run = _CellRun(x, cfg, fetch, fed, self._work)
        for role, ref in refs.items():
            self._written_runs.setdefault(ref.location, []).append((run, role))
        return run

    def _staged_weights(self) -> WeightReader:
        if self._staged_reader is None:
            assert self._staged_path is not None
            self._staged_reader = formats.open_reader(self._staged_path, self.session)
        return self._staged_reader

    # Feeding, from the jobs (donor values) and from the verification walk (written values).
    def donor_values(self, pair: Pair, role: str, values: np.ndarray) -> None:
        for run in self._donor_runs.get((id(pair), role), ()):
            run.feed(role, values)

    def begin(self, staged_path: str) -> None:
        self._staged_path = staged_path

    def written(self, dataset: str, values: np.ndarray) -> None:
        for run, role in self._written_runs.get(dataset, ()):
            run.feed(role, values)

    def checks(self) -> list[Check]:
        out = []
        for entry in self._entries:
            if isinstance(entry, Check):
                out.append(entry)
                continue
            diff = _max_diff(entry.outputs(entry.donor), entry.outputs(entry.written))
            out.append(_agreement(entry.pair, entry.name, diff, entry.label))
        return out

    def close(self) -> None:
        self._work.close()
        if self._staged_reader is not None:
            reader, self._staged_reader = self._staged_reader, None
            reader.close()


def _unknown_activation(settings: list[tuple[CellSettings, int]]) -> str | None:
    """Why the reference cannot run these cells (an activation it does not know), if so.
    A custom activation's code is never run: the check is skipped and says why."""
    for cell, major in settings:
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
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        d = np.where(both_nan, 0.0, np.abs(a - b))
    if np.isnan(d).any():
        return float("inf")
    return float(d.max()) if d.size else 0.0


def _agreement(pair: Pair, name: str, diff: float, label: str | None = None) -> Check:
    label = label or pair.label
    if pair.complete and not pair.differences:
        ok = diff <= OUTPUT_TOLERANCE
        detail = f"largest output difference {diff:.3g}"
        return Check(label, name, ok, detail if ok else detail + " (should be 0)")
    why = "partial transplant" if not pair.complete else "settings differ"
    return Check(label, name, True, f"largest output difference {diff:.3g} (expected: {why})")


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
    role_targets = _role_targets(roles)
    session = Session()
    donor_model = formats.read_model(donor, session)
    target = formats.read_model(path, session)
    pairs = plan_pairs(donor_model, target, maps, layers, direction, by)
    for r in role_targets:
        if r.gates is not None:
            for p in pairs:
                parse_gates(p.target.cell, r.gates)
    result = WriteResult("transplant", path, None, False)
    result.extra["donor"] = donor
    moved = [(pair, _check_pair(pair, role_targets, donor)) for pair in pairs]
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
    ) -> tuple[list[Job], _ForwardChecks | None]:
        donor_reader = formats.open_reader(donor, session)
        stack.callback(donor_reader.close)
        forward = None
        if not dry_run:
            forward = _ForwardChecks(donor_model, target, donor_reader, session)
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
