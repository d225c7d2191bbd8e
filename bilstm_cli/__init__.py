"""bilstm-cli: the weights of bidirectional RNN layers, read and written in the model file.

A library first; the ``bilstm`` command is a thin layer over it::

    import bilstm_cli as bl

    report = bl.inspect("m.keras", layers=["enc*"], gates=True)   # .to_dict() == inspect --json
    plan = bl.plan_init("m.keras", init=["recurrent_kernel=orthogonal", "bias[f]=ones"], seed=7)
    result = bl.apply(plan, "out.keras")                           # verified, or VerifyError
    delta = bl.diff("m.keras", "out.keras")
    bl.export("m.keras", "m.safetensors", layout="pytorch")       # for torch load_state_dict
    health = bl.check("m.keras")                                   # findings; .ok, .to_dict()

Importing the package has no side effects and loads nothing heavy: each name is imported
from its module on first use. Every failure is a :class:`BilstmError` whose ``exit_code`` is
the one the command exits with and whose message is the line it prints.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "open_model": "bilstm_cli.formats",
    "inspect": "bilstm_cli.ops.inspect",
    "plan_init": "bilstm_cli.ops.plan_init",
    "plan_transplant": "bilstm_cli.ops.plan_transplant",
    "apply": "bilstm_cli.ops.apply",
    "diff": "bilstm_cli.ops.diff",
    "export": "bilstm_cli.ops.export",
    "check": "bilstm_cli.ops.check",
    "CheckResult": "bilstm_cli.findings",
    "Finding": "bilstm_cli.findings",
    "Plan": "bilstm_cli.ops.apply",
    "Model": "bilstm_cli.model",
    "Layer": "bilstm_cli.model",
    "Direction": "bilstm_cli.model",
    "Weight": "bilstm_cli.model",
    "PlainLayer": "bilstm_cli.model",
    "CellSettings": "bilstm_cli.model",
    "InspectResult": "bilstm_cli.results",
    "LayerReport": "bilstm_cli.results",
    "WeightReport": "bilstm_cli.results",
    "WriteResult": "bilstm_cli.results",
    "Change": "bilstm_cli.results",
    "Check": "bilstm_cli.results",
    "DiffResult": "bilstm_cli.results",
    "LayerDiff": "bilstm_cli.results",
    "WeightDiff": "bilstm_cli.results",
    "ExportResult": "bilstm_cli.results",
    "BilstmError": "bilstm_cli.errors",
    "UsageError": "bilstm_cli.errors",
    "InputError": "bilstm_cli.errors",
    "VerifyError": "bilstm_cli.errors",
    "OutputError": "bilstm_cli.errors",
}

__all__ = [
    "__version__",
    "open_model",
    "inspect",
    "plan_init",
    "plan_transplant",
    "apply",
    "diff",
    "export",
    "check",
    "CheckResult",
    "Finding",
    "Plan",
    "Model",
    "Layer",
    "Direction",
    "Weight",
    "PlainLayer",
    "CellSettings",
    "InspectResult",
    "LayerReport",
    "WeightReport",
    "WriteResult",
    "Change",
    "Check",
    "DiffResult",
    "LayerDiff",
    "WeightDiff",
    "ExportResult",
    "BilstmError",
    "UsageError",
    "InputError",
    "VerifyError",
    "OutputError",
]

if TYPE_CHECKING:
    from bilstm_cli.errors import BilstmError, InputError, OutputError, UsageError, VerifyError
    from bilstm_cli.findings import CheckResult, Finding
    from bilstm_cli.formats import open_model
    from bilstm_cli.model import CellSettings, Direction, Layer, Model, PlainLayer, Weight
    from bilstm_cli.ops.apply import Plan, apply
    from bilstm_cli.ops.check import check
    from bilstm_cli.ops.diff import diff
    from bilstm_cli.ops.export import export
    from bilstm_cli.ops.inspect import inspect
    from bilstm_cli.ops.plan_init import plan_init
    from bilstm_cli.ops.plan_transplant import plan_transplant
    from bilstm_cli.results import (
        Change,
        Check,
        DiffResult,
        ExportResult,
        InspectResult,
        LayerDiff,
        LayerReport,
        WeightDiff,
        WeightReport,
        WriteResult,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bilstm_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
