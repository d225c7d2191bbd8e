"""The ``bilstm`` commands: options in, one library call, rendering out.

Errors are turned into one ``Error:`` line and the exit code in one place (funnel.py); the
console script's own start and exit are in entry.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from bilstm_cli import __version__
from bilstm_cli.cli.check_options import check_command_options, check_option
from bilstm_cli.cli.complete import complete_init, complete_role
from bilstm_cli.cli.export import export as export_command
from bilstm_cli.cli.funnel import ErrorFunnel, is_debug, report, set_answer
from bilstm_cli.cli.options import (
    MODEL_PATH,
    by_option,
    direction_option,
    json_option,
    layer_option,
    write_options,
)
from bilstm_cli.errors import UsageError

if TYPE_CHECKING:
    from bilstm_cli.ops.apply import Plan
    from bilstm_cli.results import WriteResult


@click.group(cls=ErrorFunnel, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bilstm")
@click.option("--debug", is_flag=True, help="Show a traceback when something fails.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Inspect, re-initialize, transplant, check and export the weights of Bidirectional RNN
    layers, working directly on the file: Keras .keras, .h5, .weights.h5 and sharded
    .weights.json, PyTorch, safetensors, ONNX (no TensorFlow or torch needed)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _needs_output(command: str, output: str | None, dry_run: bool) -> None:
    if output is None and not dry_run:
        raise UsageError(f"{command} needs -o OUT (or --dry-run)")


def _needs_keras(verify: str | None, dry_run: bool) -> None:
    """Missing Keras for ``--verify keras`` is said before any work is done."""
    if verify == "keras" and not dry_run:
        from bilstm_cli.ops.verify_keras import require

        require()


def _preview_or_apply(
    plan: Plan, output: str | None, force: bool, dry_run: bool, verify: str | None
) -> WriteResult:
    """The dry run's prediction, or the plan written and verified (with a progress bar on
    stderr when that takes a while on a terminal)."""
    from bilstm_cli.cli.progress import ProgressBar
    from bilstm_cli.ops.apply import apply

    with ProgressBar() as bar:
        if dry_run or output is None:
            return plan.preview(output, bar)
        return apply(plan, output, force, verify, bar)


def _with_check(result: WriteResult, with_check: bool) -> None:
    if with_check:
        from bilstm_cli.cli.health import add_check

        add_check(result)


def _check_summary(result: WriteResult, with_check: bool, as_json: bool) -> None:
    if with_check and not as_json:
        from bilstm_cli.cli.health import render_check_summary

        render_check_summary(result)


@cli.command()
@click.argument("model", nargs=-1, required=True, type=MODEL_PATH)
@layer_option
@click.option("--gates", "with_gates", is_flag=True, help="Add one row per gate block.")
@click.option("--hist", "with_hist", is_flag=True, help="Add per-gate histograms (Unicode).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document; for several files, one per line (JSON Lines).",
)
@click.pass_context
def inspect(
    ctx: click.Context,
    model: tuple[str, ...],
    layers: tuple[str, ...],
    with_gates: bool,
    with_hist: bool,
    as_json: bool,
) -> None:
    """List every Bidirectional layer of each MODEL with each weight's role, shape and
    statistics.

    Several files are listed one after another; with --json, each file's document is one
    line (JSON Lines). A file that cannot be read gets its 'Error:' line on stderr and the
    others are still listed; the exit code is the highest of the files' codes. With several
    files, each --layer GLOB needs to match in one file only (exit 2 if in none), and a file
    in which no GLOB matches is left out.
    """
    from bilstm_cli.cli import render
    from bilstm_cli.cli.progress import ProgressBar
    from bilstm_cli.ops.inspect import inspect as run_inspect

    if len(model) > 1:
        ctx.exit(_inspect_many(ctx, model, layers, with_gates, as_json, with_hist))
    with ProgressBar() as bar:
        result = run_inspect(model[0], layers, with_gates, bar)
    if with_hist:
        from bilstm_cli.cli.health import show_inspect_hist

        show_inspect_hist(result, with_gates, as_json, False, False)
    elif as_json:
        render.dump_json(result.to_dict())
    else:
        render.render_inspect(result, with_gates)


def _inspect_many(
    ctx: click.Context,
    models: tuple[str, ...],
    layers: tuple[str, ...],
    with_gates: bool,
    as_json: bool,
    with_hist: bool = False,
) -> int:
    """``inspect`` of several files; the worst of their exit codes.

    Results are held back only while some --layer glob has matched in no file yet (so that
    a glob matching nowhere leaves stdout empty); from then on each is printed as it comes.
    """
    import json

    from bilstm_cli.cli import render
    from bilstm_cli.cli.progress import ProgressBar
    from bilstm_cli.ops.inspect import inspect as run_inspect
    from bilstm_cli.ops.inspect import inspect_matching
    from bilstm_cli.ops.select import layer_matches
    from bilstm_cli.results import InspectResult

    bar = ProgressBar()

    unmatched = list(dict.fromkeys(layers))  # globs that have matched in no file yet
    available: list[str] = []
    pending: list[tuple[InspectResult | Exception, str]] = []  # held back while unmatched
    codes = [0]
    read = shown = 0

    def show(item: InspectResult | Exception, path: str) -> None:
        nonlocal shown
        bar.clear()  # off the screen before anything is printed
        if isinstance(item, Exception):
            codes.append(report(item, path))
            return
        if with_hist:
            from bilstm_cli.cli.health import show_inspect_hist

            show_inspect_hist(item, with_gates, as_json, bool(shown), True)
        elif as_json:
            doc = json.dumps(item.to_dict(), separators=(",", ":"), allow_nan=False)
            sys.stdout.write(doc + "\n")
        else:
            if shown:
                render.Output().line()
            render.render_inspect(item, with_gates)
        sys.stdout.flush()
        shown += 1

    for k, path in enumerate(models):
        bar("files", k, len(models))
        item: InspectResult | Exception
        try:
            if layers:
                item = inspect_matching(path, layers, with_gates)
            else:
                item = run_inspect(path, (), with_gates)
            read += 1
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            if is_debug(ctx):
                raise
            item = exc
        if isinstance(item, InspectResult) and layers:
            names = [layer.name for layer in item.model.layers]
            available += [n for n in names if n not in available]
            unmatched = [
                g for g in unmatched if not any(layer_matches(r.layer, g) for r in item.layers)
            ]
            if not item.layers:
                continue  # no glob matches in this file: nothing to list
        pending.append((item, path))
        if not unmatched:
            for held, held_path in pending:
                show(held, held_path)
            pending.clear()
    bar.clear()
    # Some glob matched nowhere: the files' errors still, but no listing.
    for held, held_path in pending:
        if isinstance(held, Exception):
            show(held, held_path)
    if unmatched and read:
        codes.append(
            report(
                UsageError(
                    f"--layer '{unmatched[0]}' matches no Bidirectional layer in any file "
                    f"({read} of {len(models)} read; available: {', '.join(available) or 'none'})"
                )
            )
        )
    return max(codes)


@cli.command()
@click.argument("model", type=MODEL_PATH)
@click.option(
    "--init",
    "inits",
    multiple=True,
    metavar="[TARGET=]SPEC",
    shell_complete=complete_init,
    help="Strategy, optionally for one role or gate blocks: 'glorot_uniform', "
    "'recurrent_kernel=orthogonal', 'bias[f]=ones', 'truncated_normal:stddev=0.05'. "
    "Repeatable; later options override earlier ones. Default: keras_default.",
)
@layer_option
@direction_option
@click.option("--seed", type=click.IntRange(min=0), help="Seed; the same seed gives the same file.")
@write_options
@check_option
def init(
    model: str,
    inits: tuple[str, ...],
    layers: tuple[str, ...],
    direction: str,
    seed: int | None,
    output: str | None,
    force: bool,
    dry_run: bool,
    verify: str | None,
    as_json: bool,
    with_check: bool,
) -> None:
    """Re-initialize weights of the Bidirectional layers of MODEL and write OUT.

    Strategies: zeros, ones, constant:V, uniform:minval=,maxval=, normal:mean=,stddev=,
    truncated_normal:mean=,stddev=, glorot_uniform, glorot_normal, he_uniform, he_normal,
    lecun_uniform, lecun_normal, orthogonal:gain=, identity:gain=, unit_forget_bias,
    chrono:tmax=T, keras_default, pytorch_default, npy:PATH, npz:PATH:KEY.
    """
    from bilstm_cli.cli import render
    from bilstm_cli.ops.plan_init import plan_init

    _needs_output("init", output, dry_run)
    _needs_keras(verify, dry_run)
    plan = plan_init(model, inits, layers, direction, seed)
    result = _preview_or_apply(plan, output, force, dry_run, verify)
    _with_check(result, with_check)
    render.write_result(result, as_json)
    _check_summary(result, with_check, as_json)


@cli.command()
@click.argument("donor", type=MODEL_PATH)
@click.argument("model", type=MODEL_PATH)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="SRC[/DIR]=DST[/DIR]",
    help="Pair a donor layer with a target layer: 'bi_a=encoder', 'enc/forward=dec/backward', "
    "'lstm=tagger/forward' (a plain LSTM/GRU/SimpleRNN fills one direction). Repeatable.",
)
@layer_option
@direction_option
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="ROLE[GATES]",
    shell_complete=complete_role,
    help="Only these weights or gate blocks: 'kernel', 'recurrent_kernel[i,f]'. Repeatable.",
)
@by_option
@click.option(
    "--allow-nonfinite", is_flag=True, help="Copy donor weights even if they hold NaN or Inf."
)
@write_options
@check_option
def transplant(
    donor: str,
    model: str,
    maps: tuple[str, ...],
    layers: tuple[str, ...],
    direction: str,
    roles: tuple[str, ...],
    by: str,
    allow_nonfinite: bool,
    output: str | None,
    force: bool,
    dry_run: bool,
    verify: str | None,
    as_json: bool,
    with_check: bool,
) -> None:
    """Copy Bidirectional weights from DONOR into MODEL and write OUT."""
    from bilstm_cli.cli import render
    from bilstm_cli.ops.plan_transplant import plan_transplant

    _needs_output("transplant", output, dry_run)
    _needs_keras(verify, dry_run)
    plan = plan_transplant(donor, model, maps, layers, direction, roles, by, allow_nonfinite)
    # Shown once the outcome is known: a failed transplant leaves stdout empty.
    result = _preview_or_apply(plan, output, force, dry_run, verify)
    _with_check(result, with_check)
    if not as_json:
        render.transplant_plan(result)
    render.write_result(result, as_json)
    _check_summary(result, with_check, as_json)


@cli.command()
@click.argument("a", type=MODEL_PATH)
@click.argument("b", type=MODEL_PATH)
@layer_option
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="ROLE[GATES]",
    shell_complete=complete_role,
    help="Only compare these weights or gate blocks. Repeatable.",
)
@click.option("--gates", "with_gates", is_flag=True, help="Add one row per gate block.")
@by_option
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="A_LAYER=B_LAYER",
    help="Compare these two layers (repeatable); layers not named are left out.",
)
@json_option
@click.pass_context
def diff(
    ctx: click.Context,
    a: str,
    b: str,
    layers: tuple[str, ...],
    roles: tuple[str, ...],
    with_gates: bool,
    by: str,
    maps: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compare the Bidirectional weights of A and B. Exit 0 when identical, 1 when not."""
    from bilstm_cli.cli import render
    from bilstm_cli.ops.diff import diff as run_diff

    result = run_diff(a, b, layers, roles, with_gates, by, maps)
    set_answer(ctx, 0 if result.identical else 1)  # stands even if stdout is closed
    render.diff_result(result, as_json)
    if not result.identical:
        ctx.exit(1)


@cli.command()
@click.argument("model", nargs=-1, required=True, type=MODEL_PATH)
@check_command_options
@click.pass_context
def check(
    ctx: click.Context,
    model: tuple[str, ...],
    layers: tuple[str, ...],
    fail_on: str,
    sets: tuple[str, ...],
    with_hist: bool,
    as_json: bool,
    report_path: str | None,
) -> None:
    """Check the health of the Bidirectional weights of each MODEL: non-finite values,
    exploding or vanishing recurrent blocks, forget-gate time scales, saturated or dead
    units, identical directions, weights that look freshly initialized.

    Exit 0 when no finding reaches --fail-on, 1 when one does, 3 when a file cannot be read.
    """
    from bilstm_cli.cli.health import run_check

    ctx.exit(run_check(ctx, model, layers, fail_on, sets, with_hist, as_json, report_path))


cli.add_command(export_command)
