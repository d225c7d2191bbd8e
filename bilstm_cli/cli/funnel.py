"""Where every failure of a command becomes one ``Error:`` line on stderr and its exit code:
the library's errors carry theirs; running out of memory on an input is 3; anything else is
unexpected (1); Ctrl-C is 130; a closed pipe is no error of ours (a command's answer stands).
Tracebacks appear only with ``--debug``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bilstm_cli.errors import BilstmError

EXIT_INTERRUPTED = 130
EXIT_INPUT = 3
# The key under which a command records its answer before printing it (ctx.meta is shared by
# every context of one invocation), so that a closed stdout cannot turn it into 0.
ANSWER = "bilstm.answer"


def set_answer(ctx: click.Context, code: int) -> None:
    """Record the exit code a command will end with once its output is printed."""
    ctx.meta[ANSWER] = code


class ErrorFunnel(click.Group):
    """Turns the library's errors into one line and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            # Raised as Abort so that Click adds no blank line: main() prints the one line.
            if is_debug(ctx):
                raise
            raise click.Abort() from None
        except BrokenPipeError:
            # `bilstm inspect … | head` closed the pipe: not an error of ours. A command whose
            # exit code is its answer (`diff`: 1 for differences) keeps that answer.
            silence_stdout()
            ctx.exit(int(ctx.meta.get(ANSWER, 0)))
        except Exception as exc:
            if is_debug(ctx):
                raise
            ctx.exit(report(exc))


def report(exc: Exception, file: str | None = None) -> int:
    """Print the one ``Error:`` line for a failure and return its exit code.

    A library error is its message (exit code its own); anything else is unexpected (1).
    ``file`` names the input that failed when the message does not already. Ctrl-C that hit a
    library calling back into Python (h5py reading an archive member), which reported it as
    a failure of its own, is an interruption: raised as :class:`click.Abort`.
    """
    import signal

    if getattr(signal.getsignal(signal.SIGINT), "landed", False):
        raise click.Abort() from None
    if isinstance(exc, BilstmError):
        message, code = exc.message, exc.exit_code
    elif isinstance(exc, MemoryError):
        # Reading what an input declares took more memory than the process may have: the
        # input does not fit the operation (exit 3), like any other refused input.
        message, code = "not enough memory for this input (MemoryError); refused", EXIT_INPUT
    else:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        message = f"unexpected {type(exc).__name__}: {detail} (run with --debug for a traceback)"
        code = 1
    if file is not None and not message.startswith(f"{file}: "):
        message = f"{file}: {message}"
    click.echo(f"Error: {message}", err=True)
    return code


def is_debug(ctx: click.Context) -> bool:
    return bool(ctx.obj and ctx.obj.get("debug")) or os.environ.get("BILSTM_DEBUG") == "1"


def silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
