"""The ``bilstm`` command: options in, one library call, rendering out.

All error handling lives in :func:`main`: every :class:`BilstmError` becomes one ``Error:``
line on stderr and its exit code; tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from bilstm_cli import __version__
from bilstm_cli.errors import BilstmError

EXIT_INTERRUPTED = 130


def layer_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--layer",
        "layers",
        multiple=True,
        metavar="GLOB",
        help="Only layers whose name matches GLOB (repeatable; 'enc*', 'outer/inner').",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bilstm")
@click.option("--debug", is_flag=True, help="Show a traceback when something fails.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Inspect, re-initialize and transplant the weights of Keras Bidirectional RNN layers,
    working directly on .keras, .h5 and .weights.h5 files (no TensorFlow needed)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, allow_dash=False))
@layer_option
@click.option("--gates", "with_gates", is_flag=True, help="Add one row per gate block.")
@json_option
def inspect(model: str, layers: tuple[str, ...], with_gates: bool, as_json: bool) -> None:
    """List every Bidirectional layer of MODEL with each weight's role, shape and statistics."""
    from bilstm_cli import render
    from bilstm_cli.ops.inspect import inspect as run_inspect

    result = run_inspect(model, layers, with_gates)
    if as_json:
        render.dump_json(render.inspect_doc(result))
    else:
        render.render_inspect(result, with_gates)


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("BILSTM_DEBUG") == "1"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bilstm`` console script and of ``python -m bilstm_cli``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=args, prog_name="bilstm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BilstmError as exc:
        if _wants_debug(args):
            raise
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `bilstm inspect … | head` closed the pipe: not an error of ours.
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a line
        if _wants_debug(args):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {detail} (run with --debug for a traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
