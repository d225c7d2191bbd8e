"""How many bytes a ``.keras`` archive's weights member may inflate to.

Keras stores the member uncompressed, and it is then read in place. Other tools re-zip
archives with DEFLATE, and gzip packs zeros about 1000:1, so a compression ratio cannot tell
a decompression bomb from honest zero weights. What can: the configuration says which
weights the model has. A deflated member is inflated only up to

    MARGIN_BYTES + SLOTS × Σ (values of every layer the configuration describes) × 8 bytes

(8 bytes a value covers float64; SLOTS covers an optimizer's state: Adam keeps two values per
weight beside it), and never beyond the end the HDF5 superblock declares, plus
``EOA_SLACK``. Layers whose weights cannot be told from their configuration count nothing;
the margin covers their small ones.
"""

from __future__ import annotations

import math
import struct
from typing import Any

MARGIN_BYTES = 64 * 1024**2
SLOTS = 3
BYTES_PER_VALUE = 8
EOA_SLACK = 1024**2
_GATES = {"LSTM": 4, "GRU": 3, "ConvLSTM": 4}
_MAX_NODES = 2_000_000


def weights_bytes(config: Any) -> int:
    """The inflated size allowed for the weights member of a model with this configuration."""
    values = 0
    stack: list[tuple[Any, int]] = [(config, 0)]
    seen = 0
    while stack and seen < _MAX_NODES:
        node, inputs = stack.pop()
        seen += 1
        if isinstance(node, list):
            stack.extend((x, inputs) for x in node)
            continue
        if not isinstance(node, dict):
            continue
        conf = node.get("config")
        inputs = _input_features(node) or inputs
        if isinstance(conf, dict):
            values += _layer_values(str(node.get("class_name", "")), conf, inputs)
            for key in ("layers", "layer", "backward_layer", "cell", "cells"):
                if key in conf:
                    stack.append((conf[key], inputs))
        elif isinstance(conf, list):
            stack.append((conf, inputs))
    return MARGIN_BYTES + SLOTS * BYTES_PER_VALUE * values


def _number(x: Any) -> int:
    return int(x) if isinstance(x, int) and not isinstance(x, bool) and x > 0 else 0


def _input_features(node: dict[str, Any]) -> int:
    build = node.get("build_config")
    shape = build.get("input_shape") if isinstance(build, dict) else None
    conf = node.get("config")
    if shape is None and isinstance(conf, dict):
        shape = conf.get("batch_input_shape") or conf.get("batch_shape")
    if isinstance(shape, list) and shape and not isinstance(shape[0], list):
        return _number(shape[-1])
    return 0


def _layer_values(class_name: str, conf: dict[str, Any], inputs: int) -> int:
    gates = next((g for key, g in _GATES.items() if key in class_name), 1)
    units = _number(conf.get("units"))
    filters = _number(conf.get("filters"))
    if filters:
        size = conf.get("kernel_size")
        sizes = size if isinstance(size, list) else [size]
        taps = math.prod(_number(s) or 1 for s in sizes)
        return taps * (inputs + filters) * filters * gates + 2 * filters * gates
    if units:
        # An input kernel, a recurrent kernel (RNNs only, counted anyway) and two biases.
        return (inputs + units + 2) * units * gates
    dims = _number(conf.get("input_dim")) * _number(conf.get("output_dim"))
    return dims or 4 * inputs


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def declared_end(head: bytes) -> int | None:
    """The end-of-file address an HDF5 superblock at offset 0 of ``head`` declares, or None."""
    if not head.startswith(_SIGNATURE) or len(head) < 16:
        return None
    version = head[8]
    if version in (0, 1):
        size = head[13]
        at = (24 if version == 0 else 28) + 2 * size
    elif version in (2, 3):
        size = head[9]
        at = 12 + 2 * size
    else:
        return None
    if size not in (2, 4, 8) or len(head) < at + size:
        return None
    end: int = struct.unpack_from({2: "<H", 4: "<I", 8: "<Q"}[size], head, at)[0]
    return end
