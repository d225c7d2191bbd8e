"""The ``bilstm`` console script and ``python -m bilstm_cli``: process-wide settings that only
the command may make, the command run, and a quick exit."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bilstm_cli.cli.funnel import EXIT_INTERRUPTED
from bilstm_cli.cli.main import cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bilstm`` console script and of ``python -m bilstm_cli``."""
    import signal

    args = list(sys.argv[1:] if argv is None else argv)

    def on_interrupt(signum: int, frame: Any) -> None:
        on_interrupt.landed = True  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    previous = None
    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # `cmd &` ignores Ctrl-C
            previous = signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:  # not the main thread: Python's own handling stays
        previous = None
    try:
        code = cli.main(args=args, prog_name="bilstm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # `bilstm` alone: the help text, as usual
        code = 2
    except click.UsageError as exc:
        # One line, like every other error: what was wrong, and where to read what is expected.
        where = exc.ctx.command_path if exc.ctx is not None else "bilstm"
        message = " ".join(exc.format_message().split())
        click.echo(f"Error: {message} (see '{where} --help')", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("Error: interrupted", err=True)
        code = EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    sys.exit(code if isinstance(code, int) else 0)


def _keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed memory for reuse rather than hand it back.

    A command allocates and frees one weight-sized array after another. By default glibc
    returns such blocks to the system at once, so the next weight faults in fresh pages
    (some 30,000 faults on a 57 MB model, a tenth of the run time). Keeping them bounds the
    process at its working set, which it reaches anyway, and costs a run of a second nothing.
    Elsewhere (no glibc) nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, ImportError):
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks below it come from the heap
    mallopt(m_trim_threshold, 1 << 30)  # and stay there once freed
    # One heap for every thread: the helper threads allocate weight-sized blocks too, and in
    # heaps of their own each would keep its own high-water mark (some 15 MiB more at peak
    # in the orthogonal recipe). Their few large allocations never wait long for the lock.
    mallopt(m_arena_max, 1)


def _one_blas_thread() -> None:
    """The tool's linear algebra is many small products (per-gate blocks, a probe batch
    through a cell), where waking BLAS threads costs more than it saves, badly so on a busy
    CI machine; the work that does pay off in parallel (drawing random numbers, CRC passes)
    uses its own threads. This must happen before NumPy loads, so only the command does it,
    for its own process; a value the user exported wins."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def _no_uname_process() -> None:
    """h5py takes the machine's name, on import, as ``platform.uname()[4]``; indexing that
    tuple makes Python fill in its ``processor`` field too, which on Linux it does by running
    ``uname -p`` in a child process: some 10 ms of every command, more on a busy machine. The
    command never reports the processor, so its process declares it undetermined (an empty
    string, which is what Python gives when it cannot tell) before h5py loads."""
    import platform

    uname = platform.uname()
    try:
        if "processor" not in vars(uname):  # not asked yet: its cached value is set instead
            uname.processor = ""  # type: ignore[misc]
    except (TypeError, AttributeError):  # a Python that keeps it otherwise: left as it is
        pass


def run() -> None:
    """The console script: :func:`main`, then leave without tearing the interpreter down.

    By the time a command returns, every file is closed and the output renamed into place;
    what is left is freeing NumPy, h5py and their caches, which takes longer than some
    commands. Flushing and exiting at once keeps ``bilstm`` quick in shell loops.
    """
    _one_blas_thread()
    _keep_freed_memory()
    _no_uname_process()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass
    try:
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    os._exit(code)
