"""Writing sharded weights: ``-o OUT.weights.json`` writes the JSON and its shards beside it,
named as Keras names them (``OUT_00000.weights.h5``, …), with the input's shard plan: the
input's n-th shard (in order of first mention in the ``weight_map``) becomes ``OUT_0000n``
and holds the same groups and variables.

A shard holding a changed weight is a staged, edited copy (staging.py); every other shard is
copied byte for byte. Everything is assembled under its final name in a hidden folder beside
the output and verified there, as Keras would load it; then the shards are renamed into place
and the JSON last: it is what makes the set loadable, the commit point.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bilstm_cli.errors import OutputError
from bilstm_cli.formats import compare
from bilstm_cli.formats.base import Comparison, OnWritten, Session, Writer
from bilstm_cli.formats.fileset import (
    FolderStage,
    StagingFolder,
    check_file_target,
    check_parent,
    copy_durably,
    same_bytes,
    signals_held,
    sync_folder,
    weights_model,
)
from bilstm_cli.formats.hdf5 import about
from bilstm_cli.formats.outputs import os_error
from bilstm_cli.formats.shard_names import JSON_SUFFIX, shard_name
from bilstm_cli.formats.sharded import ShardedReader, ShardPlan, load_plan
from bilstm_cli.formats.staging import StagedWrite
from bilstm_cli.model import Model


def renamed(plan: ShardPlan, output: str) -> dict[str, str]:
    """Input shard name -> output shard name, keeping the order of first mention."""
    return {name: shard_name(output, i) for i, name in enumerate(plan.shards)}


def renamed_doc(plan: ShardPlan, names: dict[str, str]) -> dict[str, Any]:
    """The input's JSON document with its shard names replaced, everything else kept."""
    doc = dict(plan.doc)
    doc["weight_map"] = {
        group: names[value] if isinstance(value, str) else [names[v] for v in value]
        for group, value in plan.doc["weight_map"].items()
    }
    return doc


def check_output(model: Model, output: str, force: bool) -> str:
    """Refuse an output that cannot or should not be written; return it absolute."""
    out = check_parent(output)
    if not out.lower().endswith(JSON_SUFFIX):
        raise OutputError(f"{output}: sharded weights must be written to a {JSON_SUFFIX} file")
    with about(model.path):
        plan = load_plan(model.path)
    inputs = [model.path] + [plan.shard_path(n) for n in plan.shards]
    for name in [os.path.basename(out), *renamed(plan, out).values()]:
        check_file_target(output, os.path.join(os.path.dirname(out), name), inputs, force)
    return out


class ShardedStage(FolderStage):
    """The staged output of a sharded weights file (see the module docstring). Use as a
    context manager; leaving it without :meth:`commit` removes everything staged."""

    def __init__(
        self, model: Model, output: str, datasets: Sequence[str], session: Session
    ) -> None:
        super().__init__(model, output, datasets, session)
        self._edits: dict[str, StagedWrite] = {}  # input shard -> its edited copy
        self._where: dict[str, str] = {}  # dataset -> input shard
        self._committed = False

    def _stage(self) -> None:
        reader = ShardedReader(self.model.path, self.session)
        try:
            self.plan = reader.plan
            for dataset in self._datasets:
                self._where[dataset] = reader.shard_of(dataset)
        finally:
            reader.close()
        self.names = renamed(self.plan, self.output)
        self._folder = StagingFolder(self.output)
        self._folder.make()
        self.staged_path = os.path.join(self._folder.path, os.path.basename(self.output))
        for name in self.plan.shards:
            source = self.plan.shard_path(name)
            staged = os.path.join(self._folder.path, self.names[name])
            mine = [d for d in self._datasets if self._where[d] == name]
            if mine:
                edit = StagedWrite(weights_model(source), staged, mine, self.session)
                self._edits[name] = self._stack.enter_context(edit)
            else:
                copy_durably(source, staged)

    def read(self, location: str) -> np.ndarray:
        return self._edits[self._where[location]].read(location)

    def write(self, location: str, values: np.ndarray) -> None:
        edit = self._edits[self._where[location]]
        edit.write(location, values)
        self.written[location] = edit.written[location]

    def finish(self) -> None:
        """Complete every edited shard under its final name and write the JSON beside them."""
        for edit in self._edits.values():
            edit.finish()
            edit.commit()  # a rename inside the staging folder: nothing is in place yet
        text = json.dumps(renamed_doc(self.plan, self.names), indent=4)
        try:
            with open(self.staged_path, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise os_error(self.output, exc) from None

    def seal(self) -> None:
        """Nothing left to finish: every staged file is complete after :meth:`finish`."""

    def commit(self) -> None:
        """Rename the shards into place, then the JSON."""
        assert self._folder is not None
        directory = os.path.dirname(self.output)
        try:
            with signals_held():
                for name in self.plan.shards:
                    new = self.names[name]
                    os.replace(os.path.join(self._folder.path, new), os.path.join(directory, new))
                sync_folder(directory)
                os.replace(self.staged_path, self.output)
        except OSError as exc:
            raise os_error(self.output, exc) from None
        self._committed = True
        sync_folder(directory)


def unchanged_except(
    model: Model,
    staged: str,
    written: dict[str, str],
    on_written: OnWritten | None,
    session: Session,
) -> Comparison:
    """How the staged set differs from the input: its JSON beyond the shard names, each
    copied shard byte for byte, each edited shard as a single weights file is compared."""
    problems: list[str] = []
    not_as_written: list[str] = []
    read_back = 0
    reader = ShardedReader(model.path, session)
    try:
        before = reader.plan
        where = {dataset: reader.shard_of(dataset) for dataset in written}
    finally:
        reader.close()
    with about(staged):
        after = load_plan(staged)
    names = renamed(before, staged)
    if json.dumps(after.doc) != json.dumps(renamed_doc(before, names)):
        problems.append("the weights JSON changed beyond its shard names")
    if list(after.shards) != list(names.values()):
        problems.append("the shards changed")
        return Comparison(problems, not_as_written, 0)
    for name in before.shards:
        old, new = before.shard_path(name), after.shard_path(names[name])
        mine = {d: digest for d, digest in written.items() if where[d] == name}
        if not mine:
            if not same_bytes(old, new):
                problems.append(f"shard '{names[name]}' changed but holds no written weight")
            continue
        found = compare.unchanged_except(weights_model(old), new, mine, on_written, session)
        problems.extend(f"shard '{names[name]}': {p}" for p in found.unchanged)
        not_as_written.extend(f"shard '{names[name]}': {p}" for p in found.not_as_written)
        read_back += found.read_back
    return Comparison(
        problems[: compare.MAX_PROBLEMS], not_as_written[: compare.MAX_PROBLEMS], read_back
    )


WRITER = Writer(check_output, ShardedStage, unchanged_except)
