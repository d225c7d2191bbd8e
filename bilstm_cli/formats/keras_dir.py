"""Model folders: ``save_model(model, "dir", zipped=False)`` writes the members of a ``.keras``
archive (``config.json``, ``metadata.json``, ``model.weights.h5``, maybe ``assets/``) into a
folder. They are read exactly as the archive's members are (keras_zip.py); only the files
directly in the folder are opened, and a link leading out of it is refused.

Writing (``-o NEWDIR``) builds the new folder as a hidden sibling: every file copied byte for
byte except ``model.weights.h5``, which is a staged, edited copy (staging.py). It is verified
there and renamed into place in one step; with ``--force`` an existing model folder is moved
aside only after the new one verified, and removed once the new one is in place.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from typing import Any

import numpy as np

from bilstm_cli.errors import InputError, OutputError
from bilstm_cli.formats import compare
from bilstm_cli.formats.archive import CONFIG, METADATA, WEIGHTS_H5, WEIGHTS_NPZ
from bilstm_cli.formats.base import (
    Comparison,
    Format,
    OnWritten,
    Probe,
    Session,
    Writer,
    path_identity,
)
from bilstm_cli.formats.fileset import (
    FolderStage,
    StagingFolder,
    aside_name,
    check_parent,
    copy_durably,
    member_path,
    ordinary_mode,
    read_limited,
    same_bytes,
    signals_held,
    sync_folder,
    weights_model,
)
from bilstm_cli.formats.hdf5 import H5Reader, about, open_h5
from bilstm_cli.formats.keras_config import MAX_CONFIG_BYTES, load_json
from bilstm_cli.formats.keras_zip import tracked_model
from bilstm_cli.formats.outputs import os_error
from bilstm_cli.model import Model

# What Keras writes into a model folder; only a folder holding nothing else is replaced.
KERAS_MEMBERS = {CONFIG, METADATA, WEIGHTS_H5, WEIGHTS_NPZ, "assets"}
MAX_FILES = 100_000


def claims(probe: Probe, session: Session) -> bool:
    """A folder holding ``config.json`` or a weights file Keras writes there."""
    return probe.kind == "dir" and any(
        os.path.lexists(os.path.join(probe.path, name))
        for name in (CONFIG, WEIGHTS_H5, WEIGHTS_NPZ)
    )


def weights_path(folder: str) -> str:
    """``model.weights.h5`` of a model folder, checked to be a file in it."""
    if not os.path.lexists(os.path.join(folder, WEIGHTS_H5)) and os.path.lexists(
        os.path.join(folder, WEIGHTS_NPZ)
    ):
        # Keras writes that file with numpy.save of Python objects: reading it means
        # unpickling, which would run whatever the file names.
        raise InputError(
            f"its weights are stored as {WEIGHTS_NPZ}, which holds pickled Python objects; "
            "they are never loaded (re-save with the default weights format)"
        )
    return member_path(folder, WEIGHTS_H5, "model folder file")


def read_model(path: str, session: Session) -> Model:
    """The layers of a model folder, from its configuration; no weight values."""
    with about(path):
        if not os.path.lexists(os.path.join(path, CONFIG)):
            raise InputError(f"a folder with Keras weights but no {CONFIG}")
        config_file = member_path(path, CONFIG, "model folder file")
        config = load_json(read_limited(config_file, MAX_CONFIG_BYTES, CONFIG), CONFIG)
        meta = None
        if os.path.lexists(os.path.join(path, METADATA)):
            meta_file = member_path(path, METADATA, "model folder file")
            meta = load_json(read_limited(meta_file, 1 << 20, METADATA), METADATA)
        weights = weights_path(path)
        with open_h5(weights, path_identity(weights), session) as f:
            return tracked_model(path, "keras-dir", config, meta, f)


def open_reader(path: str, session: Session) -> H5Reader:
    with about(path):
        return H5Reader(weights_path(path), session)


def _files(folder: str) -> list[str]:
    """Every file and folder below ``folder``, relative to it (folders end in ``/``, so that
    an empty one such as the ``assets/`` Keras writes is kept); links and special files are
    refused."""
    found: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(folder, rel)) as it:
            for entry in it:
                name = os.path.join(rel, entry.name) if rel else entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    stack.append(name)
                    found.append(name + "/")
                elif stat.S_ISREG(mode):
                    found.append(name)
                else:
                    raise InputError(f"'{name}' is a link or special file; not copied")
                if len(found) + len(stack) > MAX_FILES:
                    raise InputError("the model folder holds too many files")
    return sorted(found)


def check_output(model: Model, output: str, force: bool) -> str:
    """Refuse an output folder that cannot or should not be written; return it absolute."""
    out = check_parent(output)
    if out.lower().endswith(".keras"):
        raise OutputError(f"{output}: a model folder must not be named .keras (Keras refuses it)")
    if not os.path.lexists(out):
        return out
    if not os.path.isdir(out) or os.path.islink(out):
        raise OutputError(f"{output}: exists and is not a folder; not replacing it")
    if os.path.samefile(out, model.path) and not force:
        raise OutputError(f"{output}: is the input folder; pass --force to replace it")
    if not force:
        raise OutputError(f"{output}: already exists; pass --force to replace it")
    others = set(os.listdir(out)) - KERAS_MEMBERS
    if CONFIG not in os.listdir(out) or others:
        raise OutputError(f"{output}: is a folder but not a Keras model folder; not replacing it")
    return out


class DirStage(FolderStage):
    """The staged output folder. Use as a context manager; leaving it without
    :meth:`commit` removes everything staged."""

    def __init__(
        self, model: Model, output: str, datasets: Sequence[str], session: Session
    ) -> None:
        super().__init__(model, output, datasets, session)
        self._edit: Any = None

    def _stage(self) -> None:
        from bilstm_cli.formats.staging import StagedWrite

        with about(self.model.path):
            source = weights_path(self.model.path)
            files = _files(self.model.path)
        self._folder = folder = StagingFolder(self.output)
        self.staged_path = folder.make()
        for rel in files:  # sorted: a folder comes before what is in it
            if rel.endswith("/"):
                os.mkdir(os.path.join(folder.path, rel))
            elif rel != WEIGHTS_H5:
                copy_durably(os.path.join(self.model.path, rel), os.path.join(folder.path, rel))
        edit = StagedWrite(
            weights_model(source),
            os.path.join(folder.path, WEIGHTS_H5),
            self._datasets,
            self.session,
        )
        self._edit = self._stack.enter_context(edit)

    def read(self, location: str) -> np.ndarray:
        values: np.ndarray = self._edit.read(location)
        return values

    def write(self, location: str, values: np.ndarray) -> None:
        self._edit.write(location, values)
        self.written[location] = self._edit.written[location]

    def finish(self) -> None:
        self._edit.finish()
        self._edit.commit()  # a rename inside the staged folder: nothing is in place yet

    def seal(self) -> None:
        """Nothing left to finish: the staged folder is complete after :meth:`finish`."""

    def commit(self) -> None:
        """Rename the staged folder into place; an old one is moved aside first, then removed."""
        aside = None
        try:
            ordinary_mode(self.staged_path, folder=True)
            with signals_held():
                if os.path.lexists(self.output):
                    aside = aside_name(self.output)
                    os.rename(self.output, aside)
                try:
                    os.rename(self.staged_path, self.output)
                except OSError:
                    if aside is not None:
                        os.rename(aside, self.output)
                    raise
        except OSError as exc:
            raise os_error(self.output, exc) from None
        sync_folder(os.path.dirname(self.output))
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def unchanged_except(
    model: Model,
    staged: str,
    written: dict[str, str],
    on_written: OnWritten | None,
    session: Session,
) -> Comparison:
    """How the staged folder differs from the input folder: each file byte for byte, and
    ``model.weights.h5`` as a single weights file is compared."""
    problems: list[str] = []
    with about(model.path):
        before = _files(model.path)
    with about(staged):
        after = _files(staged)
    if before != after:
        problems.append("the folder's files changed")
    for rel in sorted(set(before) & set(after) - {WEIGHTS_H5}):
        old, new = os.path.join(model.path, rel), os.path.join(staged, rel)
        if not rel.endswith("/") and not same_bytes(old, new):
            problems.append(f"'{rel}' changed")
    found = compare.unchanged_except(
        weights_model(os.path.join(model.path, WEIGHTS_H5)),
        os.path.join(staged, WEIGHTS_H5),
        written,
        on_written,
        session,
    )
    problems.extend(found.unchanged)
    return Comparison(problems[: compare.MAX_PROBLEMS], found.not_as_written, found.read_back)


WRITER = Writer(check_output, DirStage, unchanged_except)


def _writer() -> Writer:
    return WRITER


FORMAT = Format("keras-dir", claims, read_model, open_reader, _writer)
