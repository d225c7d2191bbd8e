"""Write bench3x512.pth: the weights of bench3x512.h5 as a PyTorch state dict.

    python bench/make_pth.py OUT_DIR

The three Bidirectional(LSTM(512)) layers become one ``nn.LSTM(64, 512, num_layers=3,
bidirectional=True)`` held as attribute ``lstm`` (keys ``lstm.weight_ih_l0``, …, with the
``_reverse`` directions), saved by torch itself. Keras → PyTorch: each matrix transposed,
``bias_ih`` = the Keras bias, ``bias_hh`` = zeros. The same 57 MiB of weights as the .h5, so
``inspect`` on the two files reads the same values from two formats (bench/ratio.py).
"""

from __future__ import annotations

import os
import sys

NAME = "bench3x512"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 2 if len(argv) != 1 else 0
    out_dir = argv[0]
    target = os.path.join(out_dir, f"{NAME}.pth")
    if os.path.exists(target):
        print(f"exists, kept: {target}")
        return 0
    import numpy as np
    import torch

    import bilstm_cli as bl

    state = {}
    with bl.open_model(os.path.join(out_dir, f"{NAME}.h5")) as model:
        for k, layer in enumerate(model.layers):
            for direction, suffix in (("forward", ""), ("backward", "_reverse")):
                kernel = layer.weight(direction, "kernel").read()
                recurrent = layer.weight(direction, "recurrent_kernel").read()
                bias = layer.weight(direction, "bias").read()
                state[f"lstm.weight_ih_l{k}{suffix}"] = kernel.T
                state[f"lstm.weight_hh_l{k}{suffix}"] = recurrent.T
                state[f"lstm.bias_ih_l{k}{suffix}"] = bias
                state[f"lstm.bias_hh_l{k}{suffix}"] = np.zeros_like(bias)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    torch.save(tensors, target + ".part")
    os.replace(target + ".part", target)
    print(f"wrote {target}: {os.path.getsize(target) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
