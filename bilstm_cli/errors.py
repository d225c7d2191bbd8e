"""Errors raised by bilstm-cli, each carrying the process exit code it maps to.

The command layer turns any :class:`BilstmError` into one line on stderr and exits with the
error's ``exit_code``; everything below it only raises. Messages should say what was wrong and
what was expected, in one line, without a traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's text (its class name if it has none), cut to
    ``limit`` characters: what a one-line error message quotes of a lower layer's failure."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


class BilstmError(Exception):
    """Base class of every error the tool reports to the user.

    >>> try:
    ...     bl.inspect("no/such/file.keras")
    ... except bl.BilstmError as exc:
    ...     (type(exc).__name__, exc.exit_code, exc.message)
    ('InputError', 3, 'no/such/file.keras: no such file')
    """

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
    """Bad option or spec, a selection that matched nothing, or a strategy that does not fit.

    >>> try:
    ...     bl.plan_init("fixtures/k2_seq_lstm.h5", init=["identity"])
    ... except bl.UsageError as exc:
    ...     exc.exit_code
    2
    """

    exit_code = 2


class InputError(BilstmError):
    """An input cannot be read, or the requested operation does not fit it.

    >>> try:
    ...     bl.plan_init("fixtures/k2_plain_lstm_lm.h5")
    ... except bl.InputError as exc:
    ...     exc.message
    'fixtures/k2_plain_lstm_lm.h5: no Bidirectional layer to initialize'
    """

    exit_code = 3


class OutputError(BilstmError):
    """The output cannot be written.

    >>> plan = bl.plan_init("fixtures/k2_seq_lstm.h5", seed=1)
    >>> try:
    ...     bl.apply(plan, "no/such/dir/out.h5")
    ... except bl.OutputError as exc:
    ...     exc.exit_code
    4
    """

    exit_code = 4


class VerifyError(BilstmError):
    """What was written does not match what was intended; nothing was written.

    ``bl.apply`` raises it when any verification check fails; the output path is then left
    as it was, and ``exit_code`` is 1.
    """

    exit_code = 1


__all__ = [
    "BilstmError",
    "InputError",
    "OutputError",
    "UsageError",
    "VerifyError",
    "first_line",
]
