"""Model files: the only part of the tool that knows how a format lays weights out.

Each format is one module with a ``FORMAT`` entry (:class:`~bilstm_cli.formats.base.Format`),
listed once in :data:`FORMATS`, in the order they are asked whether they claim a file.
"""

from __future__ import annotations

import os

from bilstm_cli.errors import InputError
from bilstm_cli.formats import foreign_kind, h5_legacy, keras_dir, keras_zip, sharded, weights_only
from bilstm_cli.formats.base import Format, Session, Writer, digest, sniff, unclaimed
from bilstm_cli.formats.hdf5 import about
from bilstm_cli.model import Model, WeightReader

# Other frameworks' files come first: a PyTorch .pt and a .npz are zip archives too.
FORMATS: tuple[Format, ...] = (
    foreign_kind.FORMAT,
    keras_zip.FORMAT,
    h5_legacy.FORMAT,
    weights_only.FORMAT,
    sharded.FORMAT,
    keras_dir.FORMAT,
)


def format_of(path: str, session: Session) -> Format:
    """The format that claims the file at ``path``."""
    with about(path):
        probe = sniff(path)
        for fmt in FORMATS:
            if fmt.claims(probe, session):
                return fmt
        raise unclaimed(probe)


def read_model(path: str, session: Session | None = None) -> Model:
    """Everything the tool needs to know about a model file, without reading weight values."""
    session = session if session is not None else Session()
    return _noted(format_of(path, session).read_model(path, session), session)


def _noted(model: Model, session: Session) -> Model:
    """``model`` with what reading it left to say (a check not made) among its notes."""
    model.notes.extend(n for n in session.notes if n not in model.notes)
    return model


def open_reader(path: str, session: Session) -> WeightReader:
    """A reader of the weight values in the file at ``path``."""
    return format_of(path, session).open_reader(path, session)


def open_model(path: str, session: Session | None = None) -> Model:
    """The model file at ``path``, read-only: its layout now, weight values on demand.

    Use it as a context manager; inside the block ``Weight.read()`` returns a weight's
    values, and the file is closed on leaving it.

    >>> import bilstm_cli as bl
    >>> with bl.open_model("fixtures/k2_seq_lstm.h5") as model:
    ...     w = model.layers[0].weights[0]
    ...     (w.direction, w.role, w.shape, w.read().dtype.name)
    ('forward', 'kernel', (4, 12), 'float32')
    """
    session = session if session is not None else Session()
    fmt = format_of(path, session)
    if fmt.open_model is not None:
        return _noted(fmt.open_model(path, session), session)
    model = fmt.read_model(path, session)
    model.bind(fmt.open_reader(path, session))
    return _noted(model, session)


def component_files(path: str) -> list[str]:
    """Every file the model at ``path`` is made of: the file itself, a weights JSON and its
    shards, or each file in a model folder. Unreadable parts are left out; reading the model
    reports them."""
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(files)]
        return found
    if path.endswith(".json"):
        from bilstm_cli.formats.sharded import load_plan

        try:
            plan = load_plan(path)
        except InputError:
            return [path]
        return [path] + [plan.shard_path(name) for name in plan.shards]
    return [path]


def check_writable(model: Model) -> None:
    """Refuse, before any work, a model whose format is only read here."""
    if model.format in foreign_kind.READ_ONLY:
        raise InputError(
            f"{model.path}: a {model.format} file is read-only here; take weights from it "
            "with transplant, or write other frameworks' layouts with bilstm export"
        )


def writer_for(model: Model) -> Writer:
    """How to write a changed copy of ``model``."""
    check_writable(model)
    for fmt in FORMATS:
        if fmt.name == model.format and fmt.writer is not None:
            return fmt.writer()
    raise InputError(f"{model.path}: {model.format} files cannot be written")


__all__ = [
    "FORMATS",
    "Format",
    "Session",
    "Writer",
    "check_writable",
    "component_files",
    "digest",
    "format_of",
    "open_model",
    "open_reader",
    "read_model",
    "writer_for",
]
