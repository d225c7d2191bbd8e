"""Errors raised by bilstm-cli, each carrying the process exit code it maps to.

The command layer turns any :class:`BilstmError` into one line on stderr and exits with the
error's ``exit_code``; everything below it only raises. Messages should say what was wrong and
what was expected, in one line, without a traceback.
"""

from __future__ import annotations


class BilstmError(Exception):
    """Base class of every error the tool reports to the user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # The CLI prints the message as a single stderr line, so embedded newlines (for example
        # from a wrapped OS error) are folded here rather than at every raise site.
        super().__init__(" ".join(part.strip() for part in str(message).splitlines()))

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self.args[0]) if self.args else ""


class UsageError(BilstmError):
    """Bad option or spec, a selection that matched nothing, or a strategy that does not fit."""

    exit_code = 2


class InputError(BilstmError):
    """An input cannot be read, or the requested operation does not fit it."""

    exit_code = 3


class OutputError(BilstmError):
    """The output cannot be written."""

    exit_code = 4


class VerifyError(BilstmError):
    """What was written does not match what was intended; nothing was written."""

    exit_code = 1


__all__ = ["BilstmError", "InputError", "OutputError", "UsageError", "VerifyError"]
