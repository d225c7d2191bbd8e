"""Which other framework's file a probe is, and the ``foreign`` format entry.

Every file the tool opens is first asked whether it belongs to another framework (a PyTorch
``.pt`` and a ``.npz`` are zip archives, as a ``.keras`` file is). Answering needs only the
archive's member names or the first bytes, so this module stays light: the readers of those
files (:mod:`~bilstm_cli.formats.foreign` and what it uses) load only when a file is claimed.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import TYPE_CHECKING

from bilstm_cli.formats.base import Format, Probe, Session

if TYPE_CHECKING:
    from bilstm_cli.formats.foreign import ForeignReader
    from bilstm_cli.model import Model

#: Model formats read from other frameworks' files (the ``format`` of their models), all
#: read-only.
READ_ONLY = ("pytorch", "safetensors", "npz", "onnx")


def kind_of(probe: Probe) -> str | None:
    """The framework whose file ``probe`` is, or ``None`` when it is none of them.

    ``pytorch`` (a zip with a ``*/data.pkl`` record), ``npz`` (a zip of ``.npy`` members
    only), ``safetensors``, ``onnx`` (a ``.onnx`` file whose first bytes parse as a
    ModelProto, or any file that starts with a plausible ModelProto), or ``pickle``: a bare
    Python pickle such as a PyTorch file from before 1.6, which
    :func:`~bilstm_cli.formats.tensors.open_tensors` refuses by name."""
    if probe.kind == "zip":
        names = _zip_names(probe.path)
        if names is None:
            # A damaged zip (cut short, its central directory lost): torch.save writes
            # data.pkl first, numpy.savez only .npy members, so the first member tells.
            from bilstm_cli.formats.torch_zip import first_member

            first = first_member(probe.path)
            names = [first] if first and first.endswith(("/data.pkl", ".npy")) else []
        if not names:
            return None
        if data_pkl_prefixes(names):
            return "pytorch"
        if all(n.endswith(".npy") for n in names):
            return "npz"
        return None
    if probe.kind != "other":
        return None
    head = probe.head
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 10 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2:
        # Claimed even when the length is absurd: the reader then says what is wrong.
        return "safetensors"
    from bilstm_cli.formats.onnx_tensors import looks_like_onnx

    if looks_like_onnx(head, os.path.splitext(probe.path)[1].lower() == ".onnx"):
        return "onnx"
    return None


def data_pkl_prefixes(names: list[str]) -> list[str]:
    """The record prefixes of PyTorch archive members (``archive`` for ``archive/data.pkl``)."""
    return [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]


def _zip_names(path: str) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as z:
            return [i.filename for i in z.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        return None


def claims(probe: Probe, session: Session) -> bool:
    try:
        return kind_of(probe) is not None
    except NotImplementedError:
        # zipfile's answer for an archive needing a newer zip version: not one of ours; the
        # format that does claim it says what is wrong.
        return False


def read_model(path: str, session: Session) -> Model:
    from bilstm_cli.formats import foreign

    return foreign.read_model(path, session)


def open_reader(path: str, session: Session) -> ForeignReader:
    from bilstm_cli.formats import foreign

    return foreign.open_reader(path, session)


FORMAT = Format("foreign", claims, read_model, open_reader)
