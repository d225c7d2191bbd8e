"""What each operation returns: plain dataclasses whose ``to_dict()`` is exactly the JSON
document the ``bilstm`` command prints with ``--json`` (the keys are documented in the README
and are interface)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bilstm_cli.model import Layer, Model, Weight

STAT_COLUMNS = ("mean", "std", "min", "max", "l2")


def stats_doc(stats: dict[str, Any]) -> dict[str, Any]:
    """The ``stats`` object of a weight: mean, population std, min, max, L2 norm over the
    finite values, whether every value is finite, and how many are not."""
    return {k: stats[k] for k in (*STAT_COLUMNS, "finite", "nonfinite")}


def _gate_doc(g: dict[str, Any]) -> dict[str, Any]:
    doc = {"gate": g["gate"], **stats_doc(g)}
    for extra in ("orth_error", "max_singular"):
        if extra in g:
            doc[extra] = g[extra]
    return doc


# --- inspect -----------------------------------------------------------------------------------


@dataclass
class WeightReport:
    """One weight with its statistics (and per-gate statistics when asked for).

    >>> w = bl.inspect("fixtures/k2_seq_lstm.h5").layers[0].weights[2]
    >>> w.ref.role, w.ref.shape, w.stats["finite"], w.to_dict()["dataset"].endswith("bias:0")
    ('bias', (12,), True, True)
    """

    ref: Weight
    stats: dict[str, Any]
    gates: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "direction": self.ref.direction,
            "role": self.ref.role,
            "shape": list(self.ref.shape),
            "dtype": self.ref.dtype,
            "dataset": self.ref.location,
            "stats": stats_doc(self.stats),
        }
        if self.gates is not None:
            doc["gate_stats"] = [_gate_doc(g) for g in self.gates]
        return doc


@dataclass
class LayerReport:
    """One Bidirectional layer with the reports of its weights.

    >>> report = bl.inspect("fixtures/k2_seq_lstm.h5").layers[0]
    >>> report.gate_names, len(report.weights), report.to_dict()["merge_mode"]
    (('i', 'f', 'c', 'o'), 6, 'concat')
    """

    layer: Layer
    gate_names: tuple[str, ...] = ()
    weights: list[WeightReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        layer = self.layer
        doc: dict[str, Any] = {
            "name": layer.name,
            "cell": layer.cell,
            "units": layer.units,
            "merge_mode": layer.merge_mode if layer.config_known else None,
            "gates": list(self.gate_names),
            "group": layer.group,
            "supported": layer.supported,
            "settings": {d: s.to_dict() for d, s in layer.settings.items()},
            "weights": [w.to_dict() for w in self.weights],
        }
        if layer.notes:
            doc["notes"] = list(layer.notes)
        return doc


@dataclass
class InspectResult:
    """What :func:`bilstm_cli.inspect` found: the file's layout and the selected layers.

    >>> doc = bl.inspect("fixtures/k2_seq_lstm.h5").to_dict()
    >>> doc["format"], [x["name"] for x in doc["layers"]]
    ('h5', ['bidirectional'])
    """

    model: Model
    layers: list[LayerReport]

    def to_dict(self) -> dict[str, Any]:
        model = self.model
        doc: dict[str, Any] = {
            "file": model.path,
            "format": model.format,
            "keras_version": model.keras_version,
            "config_known": model.config_known,
            "layers": [r.to_dict() for r in self.layers],
        }
        layout = getattr(model, "layout", None)
        if layout is not None:  # another framework's file: whose names and semantics it holds
            doc["layout"] = layout
        if model.notes:
            doc["notes"] = list(model.notes)
        return doc


# --- init / transplant -------------------------------------------------------------------------


@dataclass
class Change:
    """One changed weight, or some gate blocks of it, with statistics before and after.

    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", init=["bias[f]=ones"], seed=1)
    >>> change = plan.preview().changes[0]
    >>> change.direction, change.role, change.gates, change.after["mean"]
    ('forward', 'bias', ('f',), 1.0)
    """

    layer: str
    direction: str
    role: str
    gates: tuple[str, ...] | None
    source: str
    before: dict[str, Any]
    after: dict[str, Any]
    dataset: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "direction": self.direction,
            "role": self.role,
            "gates": list(self.gates) if self.gates else None,
            "source": self.source,
            "dataset": self.dataset,
            "before": stats_doc(self.before),
            "after": stats_doc(self.after),
        }


PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class Fact(NamedTuple):
    """One promise checked on a written weight (what a strategy or a transplant promised of
    it); each becomes a :class:`Check` of the result."""

    name: str
    ok: bool
    detail: str
    checked: int = 1


@dataclass
class Check:
    """One verification check: where, what, its ``status`` (``passed``, ``failed`` or
    ``skipped``), the detail (for a skip, why), how many things it ``checked`` (gate blocks,
    weights), and whether it ``applies``: a check that applies but was skipped leaves the
    result unverified; one that cannot apply to this file (no cell settings to run a forward
    pass with) is reported and does not.

    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", init=["bias=zeros"], seed=1)
    >>> check = bl.apply(plan, "zeros.h5").checks[0]
    >>> check.to_dict()
    {'where': 'file', 'check': 'written weights read back', 'status': 'passed', 'ok': True,
     'detail': '2 of 2 bit for bit as intended', 'checked': 2, 'applies': True}
    """

    where: str
    name: str
    status: str
    detail: str
    checked: int = 1
    applies: bool = True

    @property
    def ok(self) -> bool:
        """Whether the check ran and passed."""
        return self.status == PASSED

    @classmethod
    def of(cls, where: str, name: str, ok: bool, detail: str, checked: int = 1) -> Check:
        """A check that ran: passed when ``ok``, failed otherwise."""
        return cls(where, name, PASSED if ok else FAILED, detail, checked)

    @classmethod
    def skipped(cls, where: str, name: str, why: str, applies: bool = True) -> Check:
        """A check that did not run, and why."""
        return cls(where, name, SKIPPED, why, 0, applies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "check": self.name,
            "status": self.status,
            "ok": self.ok,
            "detail": self.detail,
            "checked": self.checked,
            "applies": self.applies,
        }


@dataclass
class WriteResult:
    """What ``init`` or ``transplant`` did (or, for a dry run, would do).

    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", init=["recurrent_kernel=identity"], seed=2)
    >>> result = bl.apply(plan, "identity.h5")
    >>> result.verified, result.seed, [c.role for c in result.changes]
    (True, 2, ['recurrent_kernel', 'recurrent_kernel'])
    """

    command: str
    input: str
    output: str | None
    dry_run: bool
    verified: bool = False
    changes: list[Change] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "command": self.command,
            "input": self.input,
            "output": self.output,
            "dry_run": self.dry_run,
            "verified": self.verified,
            "changes": [c.to_dict() for c in self.changes],
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.seed is not None:
            doc["seed"] = self.seed
        doc.update(self.extra)
        return doc


# --- diff --------------------------------------------------------------------------------------


@dataclass
class WeightDiff:
    """How one weight (or one gate block of it) compares between A and B.

    >>> d = bl.diff("fixtures/k2_seq_lstm.h5", "fixtures/k3_seq_input_lstm_concat.keras")
    >>> w = d.layers[0].weights[0]
    >>> w.direction, w.role, w.equal, w.max_abs > 0
    ('forward', 'kernel', False, True)
    """

    direction: str
    role: str
    gate: str | None
    equal: bool
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    max_abs: float | None = None
    max_rel: float | None = None
    stats_a: dict[str, Any] | None = None
    stats_b: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "role": self.role,
            "gate": self.gate,
            "equal": self.equal,
            "shape_a": list(self.shape_a) if self.shape_a is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
            "a": stats_doc(self.stats_a) if self.stats_a else None,
            "b": stats_doc(self.stats_b) if self.stats_b else None,
        }


@dataclass
class LayerDiff:
    """One layer of a diff: ``same``, ``different``, ``only in A`` or ``only in B``.

    >>> d = bl.diff("fixtures/k2_seq_lstm.h5", "fixtures/k3_functional_mixed.keras")
    >>> [(x.name, x.status) for x in d.layers]
    [('bidirectional', 'only in A'), ('bi_lstm_ave', 'only in B'),
     ('bi_gru_mul', 'only in B'), ('my_bi', 'only in B')]
    """

    name: str
    cell: str
    status: str
    weights: list[WeightDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The layer of B compared with ``name`` of A (another name with ``--by order``/``--map``).
    name_b: str = ""

    def __post_init__(self) -> None:
        self.name_b = self.name_b or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "name_b": self.name_b,
            "cell": self.cell,
            "status": self.status,
            "notes": self.notes,
            "weights": [w.to_dict() for w in self.weights],
        }


@dataclass
class DiffResult:
    """What :func:`bilstm_cli.diff` found; ``identical`` is the exit status's answer.

    >>> a, b = "fixtures/k3_functional_mixed.keras", "fixtures/k3_functional_mixed.weights.h5"
    >>> bl.diff(a, b).identical
    True
    """

    a: str
    b: str
    layers: list[LayerDiff]
    notes: list[str] = field(default_factory=list)  # about the files, e.g. a check not made

    @property
    def identical(self) -> bool:
        return all(layer.status == "same" for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.notes:
            doc["notes"] = list(self.notes)
        return doc


# --- export ------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What :func:`bilstm_cli.export` wrote: the tensors by name, the layers they came from,
    and the checks that verified them; ``to_dict()`` is ``bilstm export --json``.

    >>> result = bl.export("fixtures/k2_seq_lstm.h5", "lstm.npz", layout="onnx")
    >>> [(t["name"], t["shape"]) for t in result.tensors]
    [('bidirectional.W', [2, 12, 4]), ('bidirectional.R', [2, 12, 3]), ('bidirectional.B', [2, 24])]
    """

    input: str
    output: str
    layout: str
    verified: bool = False
    #: One entry per exported layer: its name, cell, units, prefix, index and tensor names.
    layers: list[dict[str, Any]] = field(default_factory=list)
    #: One entry per written tensor: its name, shape, dtype and the layer it holds.
    tensors: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "export",
            "input": self.input,
            "output": self.output,
            "layout": self.layout,
            "verified": self.verified,
            "layers": [dict(x) for x in self.layers],
            "tensors": [dict(t) for t in self.tensors],
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
