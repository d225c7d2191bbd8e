"""Where a changed copy may be written, and what a failure to write it means to a user."""

from __future__ import annotations

import errno
import os

from bilstm_cli.errors import OutputError
from bilstm_cli.model import Model

HDF5_SUFFIXES = (".h5", ".hdf5")


def check_output(model: Model, output: str, force: bool) -> str:
    """Refuse an output path that cannot or should not be written; return it absolute.

    A symbolic link is written through: the file it points to is replaced (beside itself,
    keeping its permission bits) and the link stays; a link to nothing is refused."""
    out = os.path.abspath(output)
    if os.path.islink(out):
        if not os.path.exists(out):
            raise OutputError(f"{output}: is a symbolic link to a missing file; not writing it")
        out = os.path.realpath(out)
    directory = os.path.dirname(out)
    if not os.path.isdir(directory):
        raise OutputError(f"{output}: directory {directory} does not exist")
    if os.path.isdir(out):
        raise OutputError(f"{output}: is a directory")
    if os.path.exists(out) and not os.path.isfile(out):
        raise OutputError(f"{output}: is a device, pipe or socket, not a file; not replacing it")
    same = os.path.exists(out) and os.path.samefile(out, model.path)
    if same and not force:
        raise OutputError(f"{output}: is the input file; pass --force to replace it")
    if os.path.exists(out) and not force:
        raise OutputError(f"{output}: already exists; pass --force to overwrite it")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{output}: directory {directory} is not writable")
    lowered = out.lower()
    if model.format == "keras" and not lowered.endswith(".keras"):
        raise OutputError(f"{output}: a .keras model must be written to a .keras file")
    if model.format != "keras" and not lowered.endswith(HDF5_SUFFIXES):
        raise OutputError(f"{output}: an HDF5 model must be written to a .h5 file")
    return out


def os_error(output: str, exc: OSError) -> OutputError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OutputError(f"{output}: no space left to write it ({exc.strerror})")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{output}: cannot write there ({exc.strerror})")
    return OutputError(f"{output}: cannot be written ({exc.strerror or exc})")
