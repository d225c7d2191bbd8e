"""Options shared by several commands, each defined once and stacked where it applies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bilstm_cli.cli.complete import complete_layer

# Model arguments are checked by the reader, which says precisely what is wrong (exit 3);
# Click's own existence and permission checks would turn that into a usage error.
MODEL_PATH = click.Path(readable=False, dir_okay=True, allow_dash=False)


def layer_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--layer",
        "layers",
        multiple=True,
        metavar="GLOB",
        shell_complete=complete_layer,
        help="Only layers whose name matches GLOB (repeatable; 'enc*', 'outer/inner').",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(f)


def direction_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--direction",
        type=click.Choice(["forward", "backward", "both"]),
        default="both",
        show_default=True,
        help="Which direction's weights to change.",
    )(f)


def write_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """-o, --force, --dry-run and --json, shared by the commands that write a model."""
    f = json_option(f)
    f = click.option(
        "--verify",
        type=click.Choice(["keras"]),
        help="Also load the result with Keras (if installed) and compare; slower.",
    )(f)
    f = click.option("--force", is_flag=True, help="Overwrite OUT if it exists (even the input).")(
        f
    )
    f = click.option(
        "--dry-run", is_flag=True, help="Show the plan and the predicted result; write nothing."
    )(f)
    return click.option("-o", "--output", metavar="OUT", help="Where to write the new model file.")(
        f
    )


def by_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--by name|order: how layers of two files are paired (transplant, diff)."""
    return click.option(
        "--by",
        type=click.Choice(["name", "order"]),
        default="name",
        show_default=True,
        help="Pair layers by name, or the k-th Bidirectional of each file.",
    )(f)
