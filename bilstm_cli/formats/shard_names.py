"""How Keras names the files of sharded weights, and how one shard given alone is recognised.

``save_weights("m.weights.json", max_shard_size=…)`` writes ``m.weights.json`` and shards
``m_00000.weights.h5``, ``m_00001.weights.h5``, … beside it: the base is the JSON's name
without ``.json`` and with ``.weights`` removed (``ShardedH5IOStore.base_name``). Keras opens
``<base>_00000.weights.h5`` when it loads the JSON, so outputs must keep that naming.
"""

from __future__ import annotations

import os
import re

import h5py

from bilstm_cli.formats import h5safe

JSON_SUFFIX = ".weights.json"
SHARD_NAME = re.compile(r"^(?P<base>.+)_(?P<index>\d{5,})\.weights\.h5$")
MAX_GROUPS_VISITED = 200_000


def base_name(json_path: str) -> str:
    """Keras' base for the shards of ``json_path``: ``m.weights.json`` → ``m``."""
    stem = os.path.splitext(os.path.basename(json_path))[0]
    return stem.replace(".weights", "")


def shard_name(json_path: str, index: int) -> str:
    """The name Keras gives shard ``index`` of ``json_path``: ``m_00000.weights.h5``."""
    return f"{base_name(json_path)}_{index:05}.weights.h5"


def json_of_shard(path: str, f: h5py.File) -> tuple[str, bool] | None:
    """Whether the HDF5 file ``f`` at ``path`` is one shard of sharded weights: then the path
    of the weights JSON it belongs to, and whether that JSON is there. A file named as Keras
    names shards is one when its JSON lies beside it, or when its groups are cut as only a
    shard's are (a cell's variables not numbered from 0, or one direction without the other).
    """
    match = SHARD_NAME.match(os.path.basename(path))
    if match is None:
        return None
    candidate = os.path.join(os.path.dirname(path), match["base"] + JSON_SUFFIX)
    if os.path.isfile(candidate):
        return candidate, True
    return (candidate, False) if _cut_like_a_shard(f) else None


def _cut_like_a_shard(f: h5py.File) -> bool:
    stack, visited = [""], 0
    while stack:
        path = stack.pop()
        visited += 1
        if visited > MAX_GROUPS_VISITED:
            return False
        g = h5safe.group(f, path) if path else f
        names = set(g.keys())
        if names & {"forward_layer", "backward_layer"}:
            counts = [_cell_vars(f, f"{path}/{sub}") for sub in ("forward_layer", "backward_layer")]
            if any(c is None for c in counts) or len(set(counts)) > 1:
                return True
        for name in names:
            if isinstance(g.get(name, getlink=True), h5py.HardLink) and isinstance(
                g.get(name), h5py.Group
            ):
                stack.append(f"{path}/{name}" if path else name)
    return False


def _cell_vars(f: h5py.File, sub: str) -> int | None:
    """How many variables ``sub/cell/vars`` holds, numbered 0, 1, …; None when they are not
    all there (a gap, a start past 0, fewer than the kernel and recurrent kernel)."""
    path = f"{sub}/cell/vars"
    if not h5safe.has(f, path):
        return None
    keys = sorted(int(k) for k in h5safe.group(f, path).keys() if k.isdigit())
    if len(keys) < 2 or keys != list(range(len(keys))):
        return None
    return len(keys)
