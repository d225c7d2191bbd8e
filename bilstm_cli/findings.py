"""What ``check`` reports: the rules (stable codes, severities, default thresholds and why),
the findings, what could not be judged, and the per-block figures behind them.

Every rule has a stable ``code``; its thresholds have names, and ``--set CODE.NAME=VALUE``
(or ``thresholds={"CODE": {"NAME": VALUE}}`` in the library) changes them. ``severity`` is
settable the same way (``error``, ``warning`` or ``off``). ``to_dict()`` of a
:class:`CheckResult` is the document ``bilstm check --json`` prints; its keys are documented
in the README.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bilstm_cli.errors import UsageError

ERROR, WARNING, OFF = "error", "warning", "off"
SEVERITIES = (ERROR, WARNING)
_RANK = {OFF: 0, WARNING: 1, ERROR: 2}


@dataclass(frozen=True)
class Rule:
    """One kind of finding: its code, default severity and thresholds, and why it matters."""

    code: str
    severity: str
    thresholds: Mapping[str, float]
    why: str


RULES: dict[str, Rule] = {
    r.code: r
    for r in (
        Rule(
            "nonfinite",
            ERROR,
            {"count": 1},
            "NaN or Inf in a weight spreads to every output and gradient the first time it "
            "is used.",
        ),
        Rule(
            "recurrent.exploding",
            ERROR,
            {"max_singular": 8.0},
            "a recurrent block with a gain this far above 1 amplifies the state at every step, "
            "so pre-activations blow up, gates saturate and gradients explode.",
        ),
        Rule(
            "recurrent.radius",
            WARNING,
            {"max_radius": 4.0},
            "a spectral radius well above 1 makes the linearized recurrence grow step after step.",
        ),
        Rule(
            "recurrent.vanishing",
            WARNING,
            {"min_singular": 0.05},
            "a recurrent block this close to zero lets the cell ignore its own past: "
            "memory and gradients through time vanish.",
        ),
        Rule(
            "timescale.short",
            ERROR,
            {"min_steps": 1.1, "fraction": 0.5},
            "with this forget (LSTM) or update (GRU) bias most units keep almost nothing of the "
            "previous step: the layer has no memory.",
        ),
        Rule(
            "timescale.long",
            WARNING,
            {"max_steps": 10000.0, "fraction": 0.5},
            "a forget (LSTM) or update (GRU) gate saturated open never forgets, and its "
            "gradient vanishes through the saturated sigmoid.",
        ),
        Rule(
            "units.saturated",
            WARNING,
            {"margin": 4.0, "fraction": 0.1},
            "these units' bias outweighs everything their inputs can add, so the gate is stuck "
            "at one value and no gradient reaches its weights.",
        ),
        Rule(
            "units.dead",
            ERROR,
            {"count": 1},
            "a unit whose incoming weights are all zero computes a constant: it carries no "
            "information and its symmetry is never broken by training.",
        ),
        Rule(
            "units.unused",
            WARNING,
            {"count": 1},
            "a unit whose recurrent row is all zero feeds nothing back into the cell.",
        ),
        Rule(
            "directions.identical",
            ERROR,
            {},
            "the backward direction is an exact copy of the forward one, the sign of a copy or "
            "conversion bug: trained directions never coincide.",
        ),
        Rule(
            "directions.mirrored",
            WARNING,
            {},
            "the backward direction is the forward one negated or with its units reversed: "
            "a copy or conversion bug, not the result of training.",
        ),
        Rule(
            "init.fresh",
            ERROR,
            {"orth_tol": 1e-6},
            "orthogonal recurrent kernels and zero (or unit-forget) biases are exactly what "
            "Keras' initializers produce: this looks saved before training.",
        ),
    )
}


def thresholds_from(settings: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Parse ``CODE.NAME=VALUE`` settings (the ``--set`` options) into the mapping
    :func:`resolve` takes; an unknown code or name, or a bad value, is a :class:`UsageError`."""
    out: dict[str, dict[str, Any]] = {}
    for text in settings:
        key, sep, value = text.partition("=")
        code, dot, name = key.strip().rpartition(".")
        if not sep or not dot:
            raise UsageError(f"--set expects CODE.THRESHOLD=VALUE, not {text!r}")
        parsed: Any = value.strip()
        if name != "severity":
            try:
                parsed = float(parsed)
            except ValueError:
                raise UsageError(f"--set {key}: {value!r} is not a number") from None
        out.setdefault(code, {})[name] = parsed
    return out


@dataclass(frozen=True)
class Settings:
    """The rules in force: severity and thresholds per code."""

    severity: Mapping[str, str]
    thresholds: Mapping[str, Mapping[str, float]]

    def get(self, code: str, name: str) -> float:
        return self.thresholds[code][name]

    def on(self, code: str) -> bool:
        return self.severity[code] != OFF

    def to_dict(self) -> dict[str, Any]:
        return {code: {"severity": self.severity[code], **self.thresholds[code]} for code in RULES}


def resolve(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """The defaults with ``overrides`` (``{code: {name: value}}``) applied; unknown codes,
    unknown threshold names and bad values are a :class:`UsageError` (exit 2)."""
    severity = {code: rule.severity for code, rule in RULES.items()}
    thresholds = {code: dict(rule.thresholds) for code, rule in RULES.items()}
    for code, values in (overrides or {}).items():
        if code not in RULES:
            raise UsageError(f"unknown check code {code!r}; known: {', '.join(RULES)}")
        for name, value in values.items():
            if name == "severity":
                if value not in (*SEVERITIES, OFF):
                    raise UsageError(f"{code}.severity must be error, warning or off")
                severity[code] = str(value)
                continue
            if name not in thresholds[code]:
                known = ", ".join([*thresholds[code], "severity"])
                raise UsageError(f"{code} has no threshold {name!r}; it has {known}")
            number = float(value)
            if not math.isfinite(number):
                raise UsageError(f"{code}.{name} must be a finite number")
            thresholds[code][name] = number
    return Settings(severity, thresholds)


@dataclass
class Finding:
    """One problem found: ``code`` (see :data:`RULES`), ``severity``, where (layer, direction,
    role, gate; None where it does not apply), the measured ``value``, the ``threshold`` it
    crossed, a ``detail`` saying what was measured, and ``why`` it matters.

    >>> f = bl.check("fixtures/check/fresh_lstm_gru.keras").findings[0]
    >>> f.code, f.severity, f.where
    ('init.fresh', 'error', 'bi_lstm/forward/recurrent_kernel')
    """

    code: str
    severity: str
    layer: str
    direction: str | None
    role: str | None
    gate: str | None
    value: float | None
    threshold: float | None
    detail: str

    @property
    def why(self) -> str:
        return RULES[self.code].why

    @property
    def where(self) -> str:
        parts = [self.layer, self.direction, self.role]
        place = "/".join(p for p in parts if p)
        return f"{place}[{self.gate}]" if self.gate else place

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "layer": self.layer,
            "direction": self.direction,
            "role": self.role,
            "gate": self.gate,
            "value": _json(self.value),
            "threshold": _json(self.threshold),
            "detail": self.detail,
            "why": self.why,
        }


@dataclass
class Skipped:
    """Something ``check`` could not judge, and why."""

    layer: str
    direction: str | None
    role: str | None
    check: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "direction": self.direction,
            "role": self.role,
            "check": self.check,
            "why": self.why,
        }


def _json(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class CheckResult:
    """What :func:`bilstm_cli.check` found in one file.

    ``blocks`` holds the figures measured per recurrent gate block (``max_singular``,
    ``spectral_radius``, ``orth_error``) and per direction (``timescale`` quantiles);
    ``ok`` is whether no finding reaches ``fail_on``.

    >>> health = bl.check("fixtures/k2_trained_adam.h5", fail_on="warning")
    >>> health.ok, health.counts(), sorted(health.to_dict())[:4]
    (True, {'error': 0, 'warning': 0}, ['blocks', 'counts', 'fail_on', 'file'])
    """

    file: str
    format: str
    keras_version: str | None
    layers: list[str]
    settings: Settings
    fail_on: str = ERROR
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> list[Finding]:
        """The findings that reach ``fail_on``."""
        bar = _RANK[self.fail_on]
        return [f for f in self.findings if _RANK[f.severity] >= bar]

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "keras_version": self.keras_version,
            "ok": self.ok,
            "fail_on": self.fail_on,
            "counts": self.counts(),
            "layers": list(self.layers),
            "findings": [f.to_dict() for f in self.findings],
            "skipped": [s.to_dict() for s in self.skipped],
            "blocks": [{k: _clean(v) for k, v in b.items()} for b in self.blocks],
            "thresholds": self.settings.to_dict(),
            "notes": list(self.notes),
        }


def _clean(v: Any) -> Any:
    return _json(v) if isinstance(v, float) else v


def check_fail_on(fail_on: str) -> str:
    if fail_on not in SEVERITIES:
        raise UsageError(f"fail_on must be error or warning, not {fail_on!r}")
    return fail_on


__all__ = [
    "ERROR",
    "OFF",
    "RULES",
    "SEVERITIES",
    "WARNING",
    "CheckResult",
    "Finding",
    "Rule",
    "Settings",
    "Skipped",
    "check_fail_on",
    "resolve",
    "thresholds_from",
]
