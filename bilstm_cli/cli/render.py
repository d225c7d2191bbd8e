"""Turning result objects into JSON documents and into tables for people.

JSON goes to stdout as one document. Tables use Rich on a terminal and plain aligned text
when the output is piped, so ``grep`` and ``awk`` see no box drawing or colour codes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from bilstm_cli.results import FAILED, SKIPPED

if TYPE_CHECKING:  # only for annotations
    from bilstm_cli.results import Check, DiffResult, ExportResult, InspectResult, WriteResult

from bilstm_cli.results import STAT_COLUMNS


def dump_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


# --- tables -----------------------------------------------------------------------------------


class Output:
    """Where tables and lines go: Rich on a terminal, plain aligned text otherwise."""

    def __init__(self, stderr: bool = False) -> None:
        self.stream = sys.stderr if stderr else sys.stdout
        self.rich = self.stream.isatty() and os.environ.get("NO_COLOR") is None
        self._console: Any = None
        if self.rich:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, emoji=False)

    def line(self, text: str = "", style: str | None = None) -> None:
        if self._console is not None:
            from rich.markup import escape

            self._console.print(escape(text), style=style)
        else:
            self.stream.write(text + "\n")

    def table(self, title: str, columns: list[tuple[str, bool]], rows: list[list[str]]) -> None:
        """``columns`` are (header, right-aligned) pairs; every row has one text per column."""
        if self._console is not None:
            # Laid out here rather than by Rich's Table, which cuts cells with an ellipsis
            # when the terminal is narrower than the table (see layout.py).
            from rich.text import Text

            from bilstm_cli.cli.layout import lay_out

            for text, style in lay_out(title, columns, rows, self._console.width):
                self._console.print(Text(text, style=style or ""), soft_wrap=True)
            return
        widths = [len(h) for h, _ in columns]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

        def fmt(cells: list[str]) -> str:
            parts = [
                cell.rjust(w) if right else cell.ljust(w)
                for cell, w, (_, right) in zip(cells, widths, columns)
            ]
            return "  ".join(parts).rstrip()

        self.stream.write(title + "\n")
        self.stream.write(fmt([h for h, _ in columns]) + "\n")
        for row in rows:
            self.stream.write(fmt(row) + "\n")


def num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.4g}"


def shape_text(shape: Any) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def finite_cell(s: dict[str, Any], counted: bool) -> str:
    """``yes``, or ``NO``; on a terminal ``NO (n)`` with the count of NaN and Inf entries
    (piped text keeps the bare ``NO`` that scripts already match)."""
    if s["finite"]:
        return "yes"
    return f"NO ({s['nonfinite']})" if counted and "nonfinite" in s else "NO"


def stat_cells(s: dict[str, Any], counted: bool = False) -> list[str]:
    return [num(s[k]) for k in STAT_COLUMNS] + [finite_cell(s, counted)]


def layer_title(layer: Any) -> str:
    parts = [f"{layer.units} units"]
    if layer.cell == "GRU" and layer.forward.reset_after is not None:
        parts.append(f"reset_after={layer.forward.reset_after}")
    if layer.config_known:
        parts.append(f"merge_mode={layer.merge_mode}")
    return f"{layer.name}: Bidirectional({layer.cell}, {', '.join(parts)})  [{layer.group}]"


def render_inspect(result: InspectResult, with_gates: bool) -> None:
    out = Output()
    model = result.model
    version = f", written by Keras {model.keras_version}" if model.keras_version else ""
    layout = getattr(model, "layout", None)
    if layout is not None:  # another framework's file
        version = f", {layout or 'no'} layout"
    out.line(f"{model.path}: {model.format}{version}")
    for note in model.notes:
        out.line(f"note: {note}")
    if not result.layers:
        out.line("no Bidirectional layers")
        return
    columns = [("direction", False), ("role", False)]
    if with_gates:
        columns.append(("gate", False))
    columns += [("shape", False), ("dtype", False)]
    columns += [(k, True) for k in STAT_COLUMNS] + [("finite", False)]
    if with_gates:
        columns += [("‖QᵀQ−I‖", True), ("σmax", True)]
    columns.append(("dataset", False))
    for report in result.layers:
        rows = []
        for w in report.weights:
            row = [w.ref.direction, w.ref.role]
            row += [""] if with_gates else []
            row += [shape_text(w.ref.shape), w.ref.dtype, *stat_cells(w.stats, out.rich)]
            row += ["", ""] if with_gates else []
            rows.append([*row, w.ref.location])
            for g in w.gates or []:
                if g["gate"] is None:
                    continue
                orth = ["", ""]
                if "orth_error" in g:
                    orth = [num(g["orth_error"]), num(g["max_singular"])]
                rows.append(["", "", g["gate"], "", "", *stat_cells(g, out.rich), *orth, ""])
        out.line()
        out.table(layer_title(report.layer), columns, rows)
        for note in report.layer.notes:
            out.line(f"note: {note}")


# --- init / transplant -------------------------------------------------------------------------


def _moved(before: dict[str, Any], after: dict[str, Any], key: str) -> str:
    return f"{num(before[key])} → {num(after[key])}"


def transplant_plan(result: WriteResult) -> None:
    """What a transplant is about to move, shown before anything is written."""
    out = Output()
    rows = [
        [
            p["donor"],
            p["target"],
            ", ".join(p["moves"]),
            "; ".join(p["differences"]) or ("" if p["complete"] else "partial"),
        ]
        for p in result.extra.get("pairs", [])
    ]
    out.table(
        f"plan: {result.extra.get('donor')} → {result.input}",
        [("donor", False), ("target", False), ("moves", False), ("notes", False)],
        rows,
    )
    out.line()
    out.stream.flush()


def write_result(result: WriteResult, as_json: bool) -> None:
    if as_json:
        dump_json(result.to_dict())
        return
    out = Output()
    columns = [
        ("layer", False),
        ("direction", False),
        ("role", False),
        ("gates", False),
        ("source", False),
    ]
    columns += [(f"{k} before → after", True) for k in ("mean", "std", "min", "max")]
    columns.append(("finite", False))
    rows = []
    for c in result.changes:
        rows.append(
            [c.layer, c.direction, c.role, ",".join(c.gates) if c.gates else "all", c.source]
            + [_moved(c.before, c.after, k) for k in ("mean", "std", "min", "max")]
            + [finite_cell(c.after, out.rich)]
        )
    title = f"{result.command} {result.input}" + (" (dry run)" if result.dry_run else "")
    out.table(title, columns, rows)
    if result.checks:
        out.line()
        out.table(
            "checks",
            [("check", False), ("result", False), ("where", False), ("detail", False)],
            check_rows(result.checks),
        )
    for note in result.notes:
        out.line(f"note: {note}")
    if result.dry_run:
        out.line("dry run: nothing was written")
    elif result.verified:
        out.line(f"wrote {result.output} (verified)")
    else:
        unrun = [c for c in result.checks if not c.ok and c.applies]
        out.line(f"wrote {result.output} (NOT verified: {len(unrun)} check(s) could not run)")


def check_rows(checks: list[Check]) -> list[list[str]]:
    """One row per kind of check: how many things passed of how many checked, skips said as
    such (with why), and where the first failure or skip was."""
    grouped: dict[str, list[Check]] = {}
    for check in checks:
        grouped.setdefault(check.name, []).append(check)
    rows = []
    for name, group in grouped.items():
        failed = [c for c in group if c.status == FAILED]
        skipped = [c for c in group if c.status == SKIPPED]
        ran = [c for c in group if c.status != SKIPPED]
        passed = sum(c.checked for c in ran if c.ok)
        total = sum(c.checked for c in ran)
        if failed:
            result, shown = f"{passed}/{total} FAILED", failed[0]
        elif ran:
            result, shown = f"{passed}/{total} passed", ran[-1]
        else:
            result, shown = "skipped", skipped[0]
        if ran and skipped:
            result += f", {len(skipped)} skipped"
        places = len(group)
        where = shown.where if failed or places == 1 else f"{places} places"
        detail = shown.detail if ran or not shown.detail else f"skipped: {shown.detail}"
        rows.append([name, result, where, detail])
    return rows


# --- diff --------------------------------------------------------------------------------------


def diff_result(result: DiffResult, as_json: bool) -> None:
    if as_json:
        dump_json(result.to_dict())
        return
    out = Output()
    out.line(f"A: {result.a}")
    out.line(f"B: {result.b}")
    for note in result.notes:
        out.line(f"note: {note}")
    for layer in result.layers:
        out.line()
        if layer.status.startswith("only"):
            out.line(f"{layer.name}: Bidirectional({layer.cell}) {layer.status}")
            continue
        columns = [
            ("direction", False),
            ("role", False),
            ("gate", False),
            ("equal", False),
            ("max |A−B|", True),
            ("max rel", True),
            ("mean A → B", True),
            ("std A → B", True),
        ]
        rows = []
        for w in layer.weights:
            if w.stats_a is None or w.stats_b is None:
                shapes = f"{w.shape_a} vs {w.shape_b}"
                rows.append([w.direction, w.role, w.gate or "", "NO", shapes, "", "", ""])
                continue
            rows.append(
                [
                    w.direction,
                    w.role,
                    w.gate or "",
                    "yes" if w.equal else "NO",
                    num(w.max_abs),
                    num(w.max_rel),
                    _moved(w.stats_a, w.stats_b, "mean"),
                    _moved(w.stats_a, w.stats_b, "std"),
                ]
            )
        name = layer.name if layer.name_b == layer.name else f"{layer.name} ↔ {layer.name_b}"
        out.table(f"{name}: Bidirectional({layer.cell}) {layer.status}", columns, rows)
        for note in layer.notes:
            out.line(f"note: {note}")
    out.line()
    out.line("identical" if result.identical else "different")


# --- export ------------------------------------------------------------------------------------


def export_result(result: ExportResult, as_json: bool) -> None:
    if as_json:
        dump_json(result.to_dict())
        return
    out = Output()
    rows = [[t["name"], shape_text(t["shape"]), t["dtype"], t["layer"]] for t in result.tensors]
    out.table(
        f"export {result.input} ({result.layout} layout)",
        [("tensor", False), ("shape", False), ("dtype", False), ("from layer", False)],
        rows,
    )
    out.line()
    out.table(
        "checks",
        [("check", False), ("result", False), ("where", False), ("detail", False)],
        check_rows(result.checks),
    )
    for note in result.notes:
        out.line(f"note: {note}")
    state = "verified" if result.verified else "NOT verified"
    out.line(f"wrote {result.output} ({state})")
