"""Sharded weights: ``save_weights("m.weights.json", max_shard_size=…)`` (Keras 3.10+).

The JSON's ``weight_map`` maps each variable group (``/layers/…/vars``) to the shard files
holding its variables: one file name as a string (Keras 3.10, and 3.11+ for a group of one
variable) or a list of names (3.11+), because one group's variables can be split over several
shards. Keras looks a variable up in the group's shards in the listed order; so does this
reader. Shard names must be plain file names in the JSON's folder: anything else (``../x.h5``,
an absolute path, a link leading out) is refused before any shard is opened.

There is no model configuration, so layers are recognised exactly as in a single weights file
(:mod:`~bilstm_cli.formats.weights_only`): the shards' trees are merged into one in-memory
outline (groups, attributes, and each dataset's type and shape, no values) and that inference
runs on it. Values are read from the shards themselves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from bilstm_cli.errors import InputError, UsageError, first_line
from bilstm_cli.formats import h5heaps, h5safe
from bilstm_cli.formats.base import Format, Probe, Session, Writer, path_identity
from bilstm_cli.formats.fileset import member_path, read_limited
from bilstm_cli.formats.hdf5 import about, open_h5
from bilstm_cli.formats.keras_config import MAX_CONFIG_BYTES, load_json
from bilstm_cli.formats.weights_only import _tracked_layers_inferred as layers_inferred
from bilstm_cli.model import Model

MAX_SHARDS = 100_000
MAX_OBJECTS = 1_000_000
MAX_OPEN_SHARDS = 64


@dataclass(frozen=True)
class ShardPlan:
    """A weights JSON as read: its document, its shards in order of first mention, and the
    shards each group's variables are in (in the order Keras searches them)."""

    path: str
    doc: dict[str, Any]
    shards: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def shard_path(self, name: str) -> str:
        return os.path.join(self.folder, name)


def load_plan(path: str) -> ShardPlan:
    """Read and check a weights JSON; every shard it names must be a file beside it."""
    doc = load_json(read_limited(path, MAX_CONFIG_BYTES, "the weights JSON"), "the weights JSON")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise InputError("a JSON file, but not sharded Keras weights (no weight_map)")
    if not weight_map:
        raise InputError("the weight_map is empty")
    shards: dict[str, None] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for group, value in weight_map.items():
        if not (group == "/vars" or (group.startswith("/") and group.endswith("/vars"))):
            raise InputError(f"weight_map key '{group[:200]}' is not a variable group path")
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InputError(f"weight_map entry '{group}' is not a shard name or list of names")
        for name in names:
            member_path(os.path.dirname(os.path.abspath(path)), name, "shard")
            shards.setdefault(name)
        if len(shards) > MAX_SHARDS:
            raise InputError(f"the weight_map names more than {MAX_SHARDS} shards")
        groups[group] = tuple(dict.fromkeys(names))
    return ShardPlan(path, doc, tuple(shards), groups)


@contextlib.contextmanager
def in_shard(name: str) -> Iterator[None]:
    """Name the shard in every error raised while reading it."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"shard '{name}': {exc.message}") from None
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(
            f"shard '{name}': damaged or unreadable data ({first_line(exc)})"
        ) from None


def open_shard(plan: ShardPlan, name: str, session: Session) -> h5py.File:
    path = plan.shard_path(name)
    with in_shard(name), h5safe.no_filter_plugins():
        return open_h5(path, path_identity(path), session)


def _copy_attrs(source: Any, dest: Any) -> None:
    for key in source.attrs:
        if key in dest.attrs:
            continue
        try:
            dest.attrs[key] = h5safe.attr(source, key)
        except (InputError, OSError, RuntimeError, ValueError, TypeError, KeyError):
            continue  # an attribute that cannot be read tells the inference nothing


@contextlib.contextmanager
def merged_outline(plan: ShardPlan, session: Session) -> Iterator[tuple[h5py.File, dict[str, str]]]:
    """All shards' groups merged into one in-memory HDF5 file, with each dataset Keras would
    read (type and shape only: no storage is allocated), and the shard each one is in."""
    outline = h5py.File(
        f"bilstm-outline-{os.urandom(8).hex()}", "w", driver="core", backing_store=False
    )
    h5heaps.register(outline, None)  # built here from checked values
    located: dict[str, str] = {}
    try:
        visited = [0]
        for name in plan.shards:
            f = open_shard(plan, name, session)
            try:
                with in_shard(name):
                    _merge_shard(plan, name, f, outline, located, visited)
            finally:
                f.close()
        yield outline, located
    finally:
        outline.close()


def _merge_shard(
    plan: ShardPlan,
    shard: str,
    f: h5py.File,
    outline: h5py.File,
    located: dict[str, str],
    visited: list[int],
) -> None:
    seen: set[Any] = set()
    stack = [""]
    while stack:
        path = stack.pop()
        visited[0] += 1
        if visited[0] > MAX_OBJECTS:
            raise InputError("the shards hold more objects than any model has")
        g = h5safe.group(f, path) if path else f
        key = h5safe.object_key(g)
        if key in seen:
            continue  # reached again through another hard link
        seen.add(key)
        mirror = outline.require_group(path) if path else outline
        _copy_attrs(g, mirror)
        mapped = shard in plan.groups.get(f"/{path}", ())
        for child in g.keys():
            if not isinstance(g.get(child, getlink=True), h5py.HardLink):
                continue  # links are never followed; reading such a weight refuses it
            node = g.get(child)
            where = f"{path}/{child}" if path else child
            if isinstance(node, h5py.Group):
                stack.append(where)
            elif isinstance(node, h5py.Dataset) and mapped:
                if where in located:
                    raise InputError(f"'{where}' is also in shard '{located[where]}'")
                located[where] = shard
                h5py.h5d.create(
                    mirror.id, child.encode(), node.id.get_type().copy(), node.id.get_space()
                )
                _copy_attrs(node, mirror[child])
    for group, names in plan.groups.items():
        if shard in names and not h5safe.has(f, group.strip("/")):
            raise InputError(f"the weight_map places '{group}' here, but it has no such group")


def claims(probe: Probe, session: Session) -> bool:
    """A file named ``*.json``; :func:`read_model` says whether it is a weights JSON."""
    return probe.kind == "other" and probe.path.lower().endswith(".json")


def read_model(path: str, session: Session) -> Model:
    """The Bidirectional layers in a sharded weights file, inferred from names and shapes."""
    with about(path):
        plan = load_plan(path)
        with merged_outline(plan, session) as (outline, _):
            if not (h5safe.has(outline, "layers") or h5safe.has(outline, "vars")):
                raise InputError("the shards hold no Keras weights (no 'layers' or 'vars')")
            version = h5safe.attr_string(outline, "keras_version")
            layers = layers_inferred(outline)
    notes = [
        f"weights only, in {len(plan.shards)} shard(s): no configuration, so cells and "
        "settings are inferred from group names and shapes (activations, merge mode unknown)"
    ]
    return Model(path, "weights.json", version, layers, False, notes=notes)


class ShardedReader:
    """Reads weights of a sharded weights file by dataset path, opening shards as needed."""

    def __init__(self, path: str, session: Session) -> None:
        self.path = path
        with about(path):
            self.plan = load_plan(path)
        self._session = session
        self._files: dict[str, h5py.File] = {}
        self._closed = False

    def _open(self, name: str) -> h5py.File:
        if name in self._files:
            self._files[name] = self._files.pop(name)  # now the most recently used
            return self._files[name]
        if len(self._files) >= MAX_OPEN_SHARDS:
            # A model can have thousands of shards; file descriptors are fewer.
            oldest = next(iter(self._files))
            with contextlib.suppress(Exception):
                self._files.pop(oldest).close()
        self._files[name] = open_shard(self.plan, name, self._session)
        return self._files[name]

    def shard_of(self, location: str) -> str:
        """The shard holding dataset ``location``: the first of its group's shards that has it."""
        group = "/" + location.rpartition("/")[0]
        with about(self.path):
            for name in self.plan.groups.get(group, ()):
                with in_shard(name):
                    f = self._open(name)
                    if location.rpartition("/")[2] in h5safe.group(f, group.strip("/")):
                        return name
            raise InputError(f"'{location}' is in none of the shards the weight_map names for it")

    def read(self, location: str) -> np.ndarray:
        if self._closed:
            raise UsageError(f"{self.path} is closed; read weights inside its 'with' block")
        name = self.shard_of(location)
        with about(self.path), in_shard(name):
            return h5safe.read(h5safe.dataset(self._open(name), location), location)

    def close(self) -> None:
        self._closed = True
        files, self._files = self._files, {}
        for f in files.values():
            with contextlib.suppress(Exception):
                f.close()


def open_reader(path: str, session: Session) -> ShardedReader:
    return ShardedReader(path, session)


def _writer() -> Writer:
    from bilstm_cli.formats.sharded_write import WRITER

    return WRITER


FORMAT = Format("weights.json", claims, read_model, open_reader, _writer)
