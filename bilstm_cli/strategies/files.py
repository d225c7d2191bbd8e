"""Strategies that copy an exact array from a file: ``npy`` and ``npz``.

Reading the files named by the user is the only I/O done by any strategy.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from abc import abstractmethod

import numpy as np

from bilstm_cli.errors import InputError, UsageError
from bilstm_cli.strategies.checks import Fact
from bilstm_cli.strategies.registry import Strategy, register
from bilstm_cli.strategies.spec import ArgValue, Spec, WeightInfo

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)
_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _regular(path: str) -> None:
    """Refuse at once anything but a regular file: opening a FIFO would wait for a writer
    forever, and a device can stream without end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    for test, kind in _SPECIAL:
        if test(mode):
            raise InputError(f"{path} is {kind}, not a regular file; refused")


class _ArrayFile(Strategy):
    """The weight is the array the spec names, which must have exactly the weight's shape."""

    @abstractmethod
    def source(self, spec: Spec) -> str:
        """Where the array comes from, as messages name it."""

    @abstractmethod
    def load(self, spec: Spec, header_only: bool) -> np.ndarray:
        """The array; with ``header_only`` its values may be left unread."""

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:
        arr = self.load(spec, header_only=True)
        if tuple(arr.shape) != tuple(info.shape):
            raise UsageError(
                f"{self.source(spec)} holds an array of shape {tuple(arr.shape)}, but the "
                f"{info.where()} needs {tuple(info.shape)}"
            )
        if arr.dtype.kind not in "fiub":
            raise UsageError(f"{self.source(spec)} holds {arr.dtype} values; expected real numbers")

    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        return self.load(spec, header_only=False).astype(work, copy=False)

    def describe(self, spec: Spec, info: WeightInfo) -> str:
        return f"exact array from {self.source(spec)}"

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        return [Fact("shape", tuple(arr.shape) == tuple(info.shape), str(tuple(arr.shape)))]


@register
class Npy(_ArrayFile):
    """``npy:PATH``: the array stored in a ``.npy`` file."""

    name = "npy"
    usage = "npy:PATH"

    def parse(self, rest: str) -> dict[str, ArgValue]:
        path = rest.strip()
        if path.lower().startswith("path="):
            path = path[len("path=") :].strip()
        if not path:
            raise UsageError("npy needs a file, e.g. npy:weights/kernel.npy")
        return {"path": path}

    def source(self, spec: Spec) -> str:
        return str(spec.args["path"])

    def load(self, spec: Spec, header_only: bool) -> np.ndarray:
        path = str(spec.args["path"])
        _regular(path)
        try:
            # A memory map reads only the .npy header.
            loaded = np.load(path, allow_pickle=False, mmap_mode="r" if header_only else None)
        except _READ_ERRORS as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            raise UsageError(f"{path} is a .npz archive; use npz:{path}:KEY")
        return loaded


@register
class Npz(_ArrayFile):
    """``npz:PATH:KEY``: the array ``KEY`` of a ``.npz`` archive."""

    name = "npz"
    usage = "npz:PATH:KEY"

    def parse(self, rest: str) -> dict[str, ArgValue]:
        body = rest.strip()
        # Keyword form "path=P,key=K" first, since a path may itself contain ':'.
        m = re.fullmatch(r"path=(?P<path>.+),\s*key=(?P<key>[^,]+)", body)
        if m:
            path, key = m["path"].strip(), m["key"].strip()
        else:
            # PATH:KEY split at the last ':', unless what follows it looks like part of a path
            # (a Windows drive such as C:\\x.npz), in which case no key was given.
            path, sep, key = body.rpartition(":")
            if not sep or "/" in key or "\\" in key or not path:
                path, key = body, ""
            path, key = path.strip(), key.strip()
        if not path or not key:
            raise UsageError("npz needs a file and an array name, e.g. npz:weights.npz:kernel")
        return {"path": path, "key": key}

    def source(self, spec: Spec) -> str:
        return f"{spec.args['path']}:{spec.args['key']}"

    def load(self, spec: Spec, header_only: bool) -> np.ndarray:
        # A member of an archive is read in full even for its shape: there is no header to peek.
        path, key = str(spec.args["path"]), str(spec.args["key"])
        _regular(path)
        try:
            loaded = np.load(path, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc
        if isinstance(loaded, np.ndarray):
            raise UsageError(f"{path} is a .npy file, not a .npz archive; use npy:{path}")
        with loaded as archive:
            if key not in archive.files:
                held = ", ".join(archive.files) or "nothing"
                raise UsageError(f"{path} has no array {key!r}; it holds {held}")
            try:
                return np.asarray(archive[key])
            except _READ_ERRORS as exc:
                raise InputError(f"cannot read array {key!r} from {path}: {exc}") from exc
