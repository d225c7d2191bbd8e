"""Shell completion: what ``--init``, ``--layer`` and ``--role`` values complete to.

Click drives completion (``eval "$(_BILSTM_COMPLETE=bash_source bilstm)"``, ``zsh_source``,
``fish_source``); the callbacks here supply the values. They never print and never fail: a
model file that cannot be read simply offers no layer names.

Bash splits the word being completed at ``=`` and ``:`` (its ``COMP_WORDBREAKS``), so that
``--init recurrent_kernel=orth`` reaches the program as three words and the shell replaces
only ``orth``. :class:`BashComplete` joins those pieces again before Click sees them and
hands back only the part of each completion that bash replaces.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

import click
from click.shell_completion import (
    CompletionItem,
    ShellComplete,
    add_completion_class,
    split_arg_string,
)

# The parameters whose files hold the layers that --layer selects: init's and inspect's
# MODEL, transplant's target MODEL (not the donor), and both files of diff.
_LAYER_FILES = ("model", "a", "b")


# The complete words before the one being completed (program name left out), while Click
# resolves a completion: see _reparsed.
_WORDS: ContextVar[list[str] | None] = ContextVar("_WORDS", default=None)


def _items(values: list[str], incomplete: str) -> list[CompletionItem]:
    seen = dict.fromkeys(v for v in values if v.startswith(incomplete))
    return [CompletionItem(v) for v in seen]


def complete_init(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Strategy names, also after a ``TARGET=``: ``recurrent_kernel=orth`` →
    ``recurrent_kernel=orthogonal``. Nothing once a strategy's ``:ARGS`` begin."""
    try:
        from bilstm_cli.strategies import STRATEGY_USAGE

        target, eq, spec = incomplete.partition("=")
        if ":" in incomplete or "=" in spec:
            return []
        prefix = target + eq if eq else ""
        return _items([prefix + name for name in STRATEGY_USAGE], incomplete)
    except Exception:
        return []


def complete_role(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """The three weight roles."""
    from bilstm_cli.cells.blocks import ROLES  # loaded only when completing, not at start-up

    return _items(list(ROLES), incomplete)


def complete_layer(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Names of the Bidirectional layers in the model file(s) already on the command line:
    full names (``outer/inner``) and, for nested layers, their own names."""
    paths = _model_paths(ctx.params)
    if not paths:
        paths = _model_paths(_reparsed(ctx))
    names: list[str] = []
    for path in paths:
        names += _layer_names(os.path.expanduser(path))
    names += [n.rsplit("/", 1)[-1] for n in names if "/" in n]
    return _items(names, incomplete)


def _model_paths(params: dict[str, Any]) -> list[str]:
    paths: list[str] = []
    for key in _LAYER_FILES:
        value = params.get(key)
        if isinstance(value, str):
            paths.append(value)
        elif isinstance(value, (tuple, list)):
            paths += [v for v in value if isinstance(v, str)]
    return paths


def _reparsed(ctx: click.Context) -> dict[str, Any]:
    """The command's parameters parsed again without the option being completed.

    Click parses the words before the one being completed, which end with the option that
    takes it (``inspect m.keras --layer``); the missing value fails that parse, and none of
    the parameters get their values. Without that option the same words parse.
    """
    words = _WORDS.get()
    if not words or ctx.info_name not in words:
        return {}
    rest = words[words.index(ctx.info_name) + 1 :]
    while rest and rest[-1].startswith("-"):
        rest.pop()
    try:
        sub = ctx.command.make_context(
            ctx.info_name, rest, parent=ctx.parent, resilient_parsing=True
        )
        return dict(sub.params)
    except Exception:
        return {}


def _layer_names(path: str) -> list[str]:
    """The Bidirectional layers' names in the file at ``path``; none if it cannot be read."""
    import contextlib
    import io
    import warnings

    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            from bilstm_cli.formats import open_model

            with open_model(path) as model:
                return [layer.name for layer in model.layers]
    except Exception:
        return []


def _is_break(word: str) -> bool:
    return word != "" and all(c in "=:" for c in word)


class _KeepsWords(ShellComplete):
    """Lets the completion callbacks see the words typed so far (see :func:`_reparsed`)."""

    def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
        token = _WORDS.set(list(args))
        try:
            return super().get_completions(args, incomplete)
        finally:
            _WORDS.reset(token)


class ZshComplete(_KeepsWords, click.shell_completion.ZshComplete):
    """Click's zsh completion."""


class FishComplete(_KeepsWords, click.shell_completion.FishComplete):
    """Click's fish completion."""


class BashComplete(_KeepsWords, click.shell_completion.BashComplete):
    """Click's bash completion, with words that bash split at ``=`` or ``:`` joined again."""

    _kept = ""  # the start of the incomplete value that bash does not replace

    def get_completion_args(self) -> tuple[list[str], str]:
        cwords = split_arg_string(os.environ["COMP_WORDS"])
        cword = int(os.environ["COMP_CWORD"])
        words = cwords[1 : cword + 1]
        fresh = len(cwords) <= cword  # the cursor starts a new, empty word
        joined: list[str] = []
        glue = False
        for word in words:
            if joined and (glue or _is_break(word)):
                joined[-1] += word
            else:
                joined.append(word)
            glue = _is_break(word)
        if fresh or not joined:
            joined.append("")
        args, incomplete = joined[:-1], joined[-1]
        if incomplete.startswith("-") and "=" in incomplete:
            name, _, incomplete = incomplete.partition("=")  # --init=VALUE
            args.append(name)
        # What bash replaces: the text after the last break character.
        replaced = "" if fresh or not words or _is_break(words[-1]) else words[-1]
        if incomplete.endswith(replaced):
            self._kept = incomplete[: len(incomplete) - len(replaced)]
        return args, incomplete

    def format_completion(self, item: CompletionItem) -> str:
        value = item.value
        if item.type == "plain" and self._kept and value.startswith(self._kept):
            value = value[len(self._kept) :]
        return f"{item.type},{value}"


for _shell in (BashComplete, ZshComplete, FishComplete):
    add_completion_class(_shell)
