"""Fitting a table into a terminal's width without dropping or cutting anything.

Rich's own table, given too little room, squeezes columns and cuts their cells with an
ellipsis, so at 80 or 100 columns shapes, numbers and dataset paths were lost. Here a table is
laid out by a fixed ladder of arrangements; the first one that fits the width is used:

1. flat: one line per row, like the piped text (what a wide terminal always showed);
2. free text below: free-text columns (dataset path, source, plan moves and notes, check
   where and detail) leave the grid, widest first and only as many as needed, for indented
   lines of their own under their row;
3. stacked: the identifying columns (layer, direction, role, gates, shape, dtype, check,
   donor, target) become a heading line above their rows, shared by consecutive rows that
   identify the same thing, with the free text on it when all of it fits; the gate and number
   columns form an indented grid below, where ``before → after`` cells break after the arrow
   if that is what it takes;
4. records: if even that grid is too wide, each of its lines becomes ``header value`` pairs.

Nothing is ever cut: text wraps at spaces, a path after a ``/``, and only a single word longer
than a whole line is folded. Only the terminal path uses this; piped text is untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.cells import cell_len

Lines = list[tuple[str, str | None]]  # (text, Rich style) per screen line

# What a column holds, by header; any other header holds values (kept in the grid).
TEXT = frozenset({"dataset", "source", "moves", "notes", "where", "detail"})
KEYS = frozenset(
    {"layer", "direction", "role", "gates", "shape", "dtype", "check", "donor", "target"}
)
GAP = "  "
INDENT = "  "
ARROW_BREAK = re.compile(r"(?<=→) ")


def _fold(word: str, width: int) -> list[str]:
    """A word longer than the line, in pieces of at most ``width`` cells."""
    pieces, current = [], ""
    for ch in word:
        if current and cell_len(current + ch) > width:
            pieces.append(current)
            current = ""
        current += ch
    return [*pieces, current]


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells: broken at spaces, then after ``/``."""
    width = max(width, 1)
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if not word and not line:
            continue  # a run of spaces where a line breaks
        joined = f"{line} {word}" if line else word
        if cell_len(joined) <= width:
            line = joined
            continue
        if line:
            lines.append(line.rstrip())
            line = ""
        if cell_len(word) <= width:
            line = word
            continue
        # A path (or other long word): packed by its "/"-ended segments, folded if need be.
        for segment in re.findall(r"[^/]*/+|[^/]+", word):
            if cell_len(line + segment) <= width:
                line += segment
                continue
            if line:
                lines.append(line)
            *full, line = _fold(segment, width)
            lines.extend(full)
    return [*lines, line] if line or not lines else lines


def _pieces(cell: str, width: int) -> list[str]:
    """A grid cell in lines of ``width``: only ``a → b`` breaks, after its arrow."""
    if cell_len(cell) <= width:
        return [cell]
    lines: list[str] = []
    for part in ARROW_BREAK.split(cell):
        if lines and cell_len(f"{lines[-1]} {part}") <= width:
            lines[-1] += f" {part}"
        else:
            lines.append(part)
    return lines


def _narrowest(cell: str) -> int:
    return max(cell_len(p) for p in ARROW_BREAK.split(cell))


class Table:
    """A table's title, column headers and alignments, and rows of cell texts."""

    def __init__(
        self, title: str, columns: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]]
    ) -> None:
        self.title = title
        self.headers = [h for h, _ in columns]
        self.right = [r for _, r in columns]
        self.rows = [list(r) for r in rows]

    def natural(self, col: int, rows: Sequence[list[str]] | None = None) -> int:
        cells = [self.headers[col], *(r[col] for r in (self.rows if rows is None else rows))]
        return max(cell_len(c) for c in cells)

    def fit(self, cols: list[int], room: int, breaking: bool) -> list[int] | None:
        """Column widths for a grid of ``cols`` in ``room`` cells, or None if it cannot fit."""
        if breaking:
            widths = [
                max(_narrowest(c) for c in [self.headers[i], *(r[i] for r in self.rows)])
                for i in cols
            ]
        else:
            widths = [self.natural(i) for i in cols]
        return widths if sum(widths) + len(GAP) * (len(cols) - 1) <= room else None

    def grid_lines(self, cells: list[str], cols: list[int], widths: list[int]) -> list[str]:
        """One row of a grid, over as many lines as its tallest cell needs."""
        stacks = [_pieces(cells[i], w) for i, w in zip(cols, widths)]
        out = []
        for n in range(max((len(s) for s in stacks), default=0)):
            parts = []
            for stack, i, w in zip(stacks, cols, widths):
                piece = stack[n] if n < len(stack) else ""
                pad = " " * (w - cell_len(piece))
                parts.append(pad + piece if self.right[i] else piece + pad)
            out.append(GAP.join(parts).rstrip())
        return out


def _with_rule(title: Lines, header: Lines, body: Lines, width: int) -> Lines:
    span = max((cell_len(t) for t, _ in header + body), default=0)
    return [*title, *header, ("─" * min(span, width), None), *body]


def lay_out(
    title: str, columns: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]], width: int
) -> Lines:
    """The screen lines of a table at ``width`` columns (see the module docstring)."""
    table = Table(title, columns, rows)
    title_lines: Lines = [(t, "bold") for t in wrap(title, width)]
    n = len(table.headers)
    text = [i for i in range(n) if table.headers[i] in TEXT]

    # 1 and 2: the grid, with free-text columns moved below it, widest first, until it fits.
    grid = list(range(n))
    below: list[int] = []
    while True:
        widths = table.fit(grid, width, breaking=False)
        if widths is not None:
            return _flat(table, title_lines, grid, widths, sorted(below), width)
        left = [i for i in text if i in grid]
        if not left:
            break
        widest = max(left, key=table.natural)
        grid.remove(widest)
        below.append(widest)
    return _stacked(table, title_lines, width)


def _text_lines(table: Table, cells: list[str], cols: list[int], width: int) -> Lines:
    return [
        (INDENT + line, None)
        for i in cols
        if cells[i]
        for line in wrap(cells[i], width - len(INDENT))
    ]


def _flat(
    table: Table, title: Lines, grid: list[int], widths: list[int], below: list[int], width: int
) -> Lines:
    header: Lines = [(t, "bold") for t in table.grid_lines(table.headers, grid, widths)]
    header += [(INDENT + table.headers[i], "bold") for i in below]
    body: Lines = []
    for row in table.rows:
        body += [(t, None) for t in table.grid_lines(row, grid, widths)]
        body += _text_lines(table, row, below, width)
    return _with_rule(title, header, body, width)


def _stacked(table: Table, title: Lines, width: int) -> Lines:
    n = len(table.headers)
    keys = [i for i in range(n) if table.headers[i] in KEYS]
    text = [i for i in range(n) if table.headers[i] in TEXT]
    values = [i for i in range(n) if i not in keys and i not in text]

    # Which rows open a heading: those whose identifying cells differ from the row before
    # (rows with none, like a weight's gate rows, continue the heading above them).
    opens, previous = [], None
    for row in table.rows:
        ident = [row[i] for i in keys]
        opens.append(any(ident) and ident != previous)
        previous = ident if any(ident) else previous
    heads = [r for r, o in zip(table.rows, opens) if o]
    text_elsewhere = any(row[i] for row, o in zip(table.rows, opens) if not o for i in text)
    head_cols = keys + ([] if text_elsewhere else text)
    head_widths = [table.natural(i, heads) for i in head_cols]
    if sum(head_widths) + len(GAP) * (len(head_cols) - 1) > width:
        head_cols = keys
        head_widths = [table.natural(i, heads) for i in keys]
    # Identifying cells too long for one aligned line are joined and wrapped instead.
    aligned = sum(head_widths) + len(GAP) * (len(head_cols) - 1) <= width
    own_lines = [i for i in text if i not in head_cols]

    def heading(cells: list[str], style: str | None) -> Lines:
        if not head_cols:
            return []
        if aligned:
            return [(t, style) for t in table.grid_lines(cells, head_cols, head_widths)]
        return [(t, style) for t in wrap(GAP.join(cells[i] for i in keys if cells[i]), width)]

    room = width - len(INDENT)
    widths = table.fit(values, room, breaking=False) or table.fit(values, room, breaking=True)
    header = heading(table.headers, "bold")
    header += [(INDENT + table.headers[i], "bold") for i in own_lines]
    if widths is not None and values:
        header += [(INDENT + t, "bold") for t in table.grid_lines(table.headers, values, widths)]
    body: Lines = []
    for row, opened in zip(table.rows, opens):
        if opened:
            body += heading(row, None)
        body += _text_lines(table, row, own_lines, width)
        if not any(row[i] for i in values):
            continue
        if widths is not None:
            body += [(INDENT + t, None) for t in table.grid_lines(row, values, widths)]
        else:
            body += _record(table, row, values, room)
    return _with_rule(title, header, body, width)


def _record(table: Table, row: list[str], cols: list[int], room: int) -> Lines:
    """Last resort for a very narrow terminal: ``header value`` pairs, wrapped."""
    lines: list[str] = []
    for i in cols:
        if not row[i]:
            continue
        pair = f"{table.headers[i]} {row[i]}"
        if lines and cell_len(lines[-1] + GAP + pair) <= room:
            lines[-1] += GAP + pair
        else:
            lines += wrap(pair, room)
    return [(INDENT + t, None) for t in lines]
