"""Model files made of several files: a sharded weights JSON with its shards, or a model
folder. What they share: files named relative to one folder that must stay inside it, a
staging folder beside the output, byte-for-byte copies checked as such, and renames that are
made durable.

A set of files cannot be renamed at once. Outputs are therefore assembled complete, under
their final names, inside a hidden staging folder beside the target (so they can be opened
and verified as they will be), and only then moved into place one by one, the file that
makes the set loadable (the weights JSON) last, or the whole folder in one rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

from bilstm_cli.errors import InputError, OutputError
from bilstm_cli.formats.outputs import os_error
from bilstm_cli.model import Model

if TYPE_CHECKING:
    from bilstm_cli.formats.base import Session

BLOCK = 1 << 20


def member_path(folder: str, name: str, what: str) -> str:
    """The path of file ``name`` that must lie directly in ``folder``.

    Refused, before it is opened: names with a folder part (``../x.h5``, ``sub/x.h5``), absolute
    paths, and symbolic links resolving outside ``folder``; a missing file is an InputError
    too. Keras itself looks shards up with ``Path.with_name``, which takes plain names only.
    """
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
    ):
        raise InputError(f"{what} '{name}' is not a file name in the same folder; refused")
    path = os.path.join(folder, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InputError(f"{what} '{name}' is missing") from None
    except OSError as exc:
        raise InputError(f"{what} '{name}' cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(path)
        if os.path.dirname(real) != os.path.realpath(folder):
            raise InputError(f"{what} '{name}' is a link to a file outside the folder; refused")
        try:
            st = os.stat(real)
        except OSError:
            raise InputError(f"{what} '{name}' is a link to a missing file") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} '{name}' is not a regular file")
    return path


def read_limited(path: str, limit: int, what: str) -> bytes:
    """The bytes of a small text file (a JSON document), refused past ``limit``."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what} is larger than {limit} bytes; refused as implausible")
    return data


def same_bytes(a: str, b: str) -> bool:
    """Whether two files hold the same bytes (compared a block at a time)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(BLOCK), fb.read(BLOCK)
            if x != y:
                return False
            if not x:
                return True


def copy_durably(source: str, dest: str) -> None:
    """Copy a file byte for byte and flush it to disk."""
    shutil.copyfile(source, dest)
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def weights_model(path: str) -> Model:
    """The one-file model the staging machinery edits for one HDF5 member of a set."""
    return Model(path=path, format="weights.h5", keras_version=None, layers=[], config_known=False)


def check_parent(output: str) -> str:
    """``output`` made absolute, once its folder is known to exist and be writable."""
    out = os.path.abspath(output)
    directory = os.path.dirname(out)
    if not os.path.isdir(directory):
        raise OutputError(f"{output}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{output}: directory {directory} is not writable")
    return out


def check_file_target(output: str, path: str, inputs: list[str], force: bool) -> None:
    """Refuse to write the file ``path`` (part of output ``output``) over what must stay."""
    name = os.path.basename(path)
    if os.path.isdir(path):
        raise OutputError(f"{output}: {name} is a directory")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise OutputError(f"{output}: {name} is not a regular file; not replacing it")
    if not os.path.exists(path):
        return
    if any(os.path.exists(p) and os.path.samefile(path, p) for p in inputs) and not force:
        raise OutputError(f"{output}: {name} is part of the input; pass --force to replace it")
    if not force:
        raise OutputError(f"{output}: {name} already exists; pass --force to overwrite it")


def sync_folder(folder: str) -> None:
    """Make renames in ``folder`` durable; not every file system can sync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ordinary_mode(path: str, folder: bool = False) -> None:
    """Give a staged file or folder the permissions a new one would get."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


class StagingFolder:
    """A hidden folder beside ``output`` (``.NAME.xxxxxxxxxxxx.tmp``), removed with all its
    contents on :meth:`close` if it is still there (a staged folder renamed into place is
    not). SIGTERM while it exists is turned into an interruption so that it is removed."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.path = ""
        # The handler comes first: a SIGTERM landing just after the folder is made must find
        # it and remove it (the name is known before the folder exists).
        self._previous_term: Any = None
        try:
            self._previous_term = signal.signal(signal.SIGTERM, _on_term)
        except ValueError:  # not the main thread
            self._previous_term = None

    def make(self) -> str:
        """Create the folder and return its path. Call it once the object is kept where
        cleanup will find it: a signal can land at any moment after this starts."""
        directory, base = os.path.split(self.output)
        for _ in range(100):
            self.path = os.path.join(directory, f".{base[:120]}.{os.urandom(6).hex()}.tmp")
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                self.path = ""  # someone else's
                continue
            except OSError as exc:
                self.path = ""
                raise os_error(self.output, exc) from None
            return self.path
        self.path = ""
        raise os_error(self.output, FileExistsError(errno.EEXIST, "no free temporary name"))

    def close(self) -> None:
        if self.path and os.path.lexists(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
        if self._previous_term is not None:
            signal.signal(signal.SIGTERM, self._previous_term)
            self._previous_term = None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while several renames complete: an interruption then
    lands before or after them, never between them."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # no POSIX signal masks here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def aside_name(path: str) -> str:
    """A free hidden name beside ``path`` to move an old output to before replacing it."""
    directory, base = os.path.split(path)
    for _ in range(100):
        candidate = os.path.join(directory, f".{base[:120]}.{os.urandom(6).hex()}.old")
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


class FolderStage:
    """What the staged outputs made of several files (a model folder, a sharded set) share:
    a :class:`StagingFolder` and the edited copies entered on an exit stack. Leaving it
    without committing removes both; subclasses stage the files and commit them."""

    def __init__(
        self, model: Model, output: str, datasets: Sequence[str], session: Session
    ) -> None:
        self.model = model
        self.output = output
        self.session = session
        self.written: dict[str, str] = {}
        self.staged_path = ""
        self._datasets = list(datasets)
        self._stack = contextlib.ExitStack()
        self._folder: StagingFolder | None = None

    def _stage(self) -> None:
        """Make the staging folder and the staged files in it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self._stage()
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            if isinstance(exc, OSError):
                raise os_error(self.output, exc) from None
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # The staged copies are told why they are left: a signal becomes an interruption.
        try:
            self._stack.__exit__(exc_type, exc, tb)
        finally:
            if self._folder is not None:
                self._folder.close()
