"""Where every failure of a command becomes one ``Error:`` line on stderr and its exit code:
the library's errors carry theirs; anything else is unexpected (1); Ctrl-C is 130; a closed
pipe is no error of ours. Tracebacks appear only with ``--debug``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bilstm_cli.errors import BilstmError

EXIT_INTERRUPTED = 130


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
            # `bilstm inspect … | head` closed the pipe: not an error of ours.
            silence_stdout()
            ctx.exit(0)
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
