"""The report's HTML: every result's findings and, per layer, its figures."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from bilstm_cli import cells, formats
from bilstm_cli.findings import CheckResult
from bilstm_cli.health.rules import Judge
from bilstm_cli.ops.check import read_sides
from bilstm_cli.ops.pairs import keras_major
from bilstm_cli.report import figures

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.error { color: #b00020; font-weight: bold; } .warning { color: #a65e00; font-weight: bold; }
.ok { color: #1b7f3b; font-weight: bold; } .failed { color: #b00020; font-weight: bold; }
figure { margin: 0.5em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def _findings_table(result: CheckResult) -> str:
    if not result.findings:
        return "<p>No findings.</p>"
    rows = [
        "<tr><th>severity</th><th>code</th><th>where</th><th>value</th><th>threshold</th>"
        "<th>detail</th><th>why it matters</th></tr>"
    ]
    for f in result.findings:
        rows.append(
            f'<tr><td class="{escape(f.severity)}">{escape(f.severity)}</td>'
            f"<td><code>{escape(f.code)}</code></td><td>{escape(f.where)}</td>"
            f'<td class="num">{_num(f.value)}</td><td class="num">{_num(f.threshold)}</td>'
            f"<td>{escape(f.detail)}</td><td>{escape(f.why)}</td></tr>"
        )
    return '<table class="findings">' + "".join(rows) + "</table>"


def _skipped(result: CheckResult) -> str:
    if not result.skipped:
        return ""
    items = "".join(
        f"<li>{escape(s.check)} at {escape(_place(s.layer, s.direction, s.role))}: "
        f"{escape(s.why)}</li>"
        for s in result.skipped
    )
    return f"<h3>Not judged</h3><ul>{items}</ul>"


def _place(*parts: str | None) -> str:
    return "/".join(p for p in parts if p)


def _figure(svg: str | None, caption: str) -> str:
    if svg is None:
        return ""
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _layers(result: CheckResult, index: int) -> list[str]:
    parts: list[str] = []
    with formats.open_model(result.file) as model:
        major = keras_major(model)
        for k, layer in enumerate(x for x in model.layers if x.name in set(result.layers)):
            sides = read_sides(Judge(result.settings, major), layer)
            parts.append(
                f"<h3>{escape(layer.name)}: Bidirectional({escape(layer.cell)}, "
                f"{layer.units} units)</h3>"
            )
            if not sides:
                parts.append("<p>No weight of this layer could be read.</p>")
                continue
            salt = f"bilstm-{index}-{k}"
            parts.append(
                _figure(
                    figures.weight_histograms(sides, salt + "-h"),
                    "weight values per role and gate block, both directions",
                )
            )
            parts.append(
                _figure(
                    figures.spectra(sides, salt + "-s"),
                    "singular values of each recurrent gate block (dashed: 1)",
                )
            )
            gate = cells.get(sides[0].cell).forget_gate
            if gate is not None:
                parts.append(
                    _figure(
                        figures.timescale_plot(sides, gate, major, salt + "-t"),
                        f"time scales of the {gate} gate from its bias",
                    )
                )
    return parts


def render_page(results: Sequence[CheckResult]) -> str:
    body = ["<h1>bilstm check</h1>"]
    for index, result in enumerate(results):
        counts = result.counts()
        verdict = (
            '<span class="ok">OK</span>' if result.ok else '<span class="failed">FAILED</span>'
        )
        body.append(f"<h2>{escape(result.file)}</h2>")
        body.append(
            f"<p>{verdict}: {counts['error']} error(s), {counts['warning']} warning(s); "
            f"fails on {escape(result.fail_on)}; format {escape(result.format)}"
            + (f", Keras {escape(result.keras_version)}" if result.keras_version else "")
            + "</p>"
        )
        body += [f"<p>note: {escape(n)}</p>" for n in result.notes]
        body.append(_findings_table(result))
        body.append(_skipped(result))
        body += _layers(result, index)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>bilstm check report</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
