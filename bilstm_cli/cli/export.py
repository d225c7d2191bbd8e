"""``bilstm export``: a model's Bidirectional weights as another framework's named tensors."""

from __future__ import annotations

import click

from bilstm_cli.cli.options import MODEL_PATH, json_option, layer_option


@click.command()
@click.argument("model", type=MODEL_PATH)
@click.option(
    "-o", "--output", required=True, metavar="OUT", help="The .safetensors or .npz to write."
)
@click.option(
    "--layout",
    type=click.Choice(["pytorch", "keras", "onnx"]),
    default="pytorch",
    show_default=True,
    help="Whose names and layout the tensors take.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="LAYER=MODULE.lK",
    help="Put LAYER into the multi-layer PyTorch module MODULE as its layer K: "
    "'enc_1=lstm.l0', 'enc_2=lstm.l1'. Repeatable.",
)
@layer_option
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@json_option
def export(
    model: str,
    output: str,
    layout: str,
    maps: tuple[str, ...],
    layers: tuple[str, ...],
    force: bool,
    as_json: bool,
) -> None:
    """Write the Bidirectional weights of MODEL as another framework's named tensors.

    pytorch: <layer>.weight_ih_l0, .weight_hh_l0, .bias_ih_l0, .bias_hh_l0 and the _reverse
    four, for load_state_dict(strict=True) into nn.LSTM/GRU/RNN(..., bidirectional=True,
    batch_first=True). keras: <layer>/forward/kernel, ... onnx: <layer>.W, .R, .B.
    """
    from bilstm_cli.cli import render
    from bilstm_cli.ops.export import export as run_export

    render.export_result(run_export(model, output, layout, maps, layers, force), as_json)
