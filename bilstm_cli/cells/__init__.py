"""Recurrent cells: gate blocks, weight shapes, framework conventions and a NumPy forward pass.

Every cell family lives in its own module and is registered here, once; the registry API of
:mod:`bilstm_cli.cells.base` is exported from this package. Adding a family means writing its
module (a :class:`Cell` with its gates, shape rules and step) and registering it below; the
registration order is the order the families are listed in (``known()``, error messages).
"""

from __future__ import annotations

from bilstm_cli.cells import conv_lstm, cudnn, gru, lstm, simple_rnn
from bilstm_cli.cells.base import (
    Cell,
    StoredVariant,
    conv_class_for_rank,
    expected_shape,
    for_tracked_group,
    get,
    keras_settings,
    kernel_rank,
    known,
    layer_block_count,
    layer_class_for_blocks,
    layer_classes,
    register,
    register_variant,
    supported,
    variant,
)
from bilstm_cli.cells.conv_lstm import conv_settings

register(lstm.CELL)
register(gru.CELL)
register(simple_rnn.CELL)
for _conv_cell in conv_lstm.CELLS:
    register(_conv_cell)
register_variant(cudnn.CUDNN_LSTM)
register_variant(cudnn.CUDNN_GRU)

__all__ = [
    "Cell",
    "StoredVariant",
    "conv_class_for_rank",
    "conv_settings",
    "expected_shape",
    "for_tracked_group",
    "get",
    "keras_settings",
    "kernel_rank",
    "known",
    "layer_block_count",
    "layer_class_for_blocks",
    "layer_classes",
    "register",
    "register_variant",
    "supported",
    "variant",
]
