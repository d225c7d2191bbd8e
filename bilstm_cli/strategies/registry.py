"""What a strategy is, the table of known ones, and finding one by the name in a spec.

A strategy is a :class:`Strategy` subclass decorated with :func:`register`; the decorator makes
its one instance and files it under its name. Family modules (``constant``, ``distributions``,
...) hold the strategies, and :mod:`bilstm_cli.strategies` imports them in the order in which
the names are listed in messages.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from bilstm_cli.errors import UsageError
from bilstm_cli.strategies.checks import Fact
from bilstm_cli.strategies.spec import (
    ArgValue,
    Param,
    Spec,
    Target,
    WeightInfo,
    canonical_name,
    parse_args,
    parse_target,
)


class Strategy(ABC):
    """One initialization strategy: how its arguments are read, and what it does to a weight.

    Subclasses set :attr:`name`, :attr:`usage` and :attr:`params`, implement :meth:`generate`
    and :meth:`describe`, and override :meth:`validate`, :meth:`check_fit` and :meth:`facts`
    where the strategy refuses some arguments or weights, or promises more than finite values.
    """

    #: Canonical name, as written before the ``:`` of a spec.
    name: str
    #: One-line usage for help texts and error messages.
    usage: str
    #: Parameters in positional order.
    params: tuple[Param, ...] = ()

    def parse(self, rest: str) -> dict[str, ArgValue]:
        """Every argument resolved from ``rest``, the text after ``NAME:`` ('' without one)."""
        args = parse_args(self.name, self.params, self.usage, rest)
        self.validate(args)
        return args

    # validate and check_fit are optional hooks, empty on purpose: most strategies accept
    # every argument value of the right kind and every well-formed weight.
    def validate(self, args: Mapping[str, ArgValue]) -> None:  # noqa: B027
        """Raise :class:`UsageError` on argument values the strategy cannot work with."""

    def check_fit(self, spec: Spec, info: WeightInfo) -> None:  # noqa: B027
        """Raise :class:`UsageError` when the strategy cannot fill this (well-formed) weight."""

    @abstractmethod
    def generate(
        self, spec: Spec, info: WeightInfo, seed: np.random.SeedSequence, work: np.dtype
    ) -> np.ndarray:
        """The whole weight of ``info.shape`` as ``work`` (float32 or float64)."""

    @abstractmethod
    def describe(self, spec: Spec, info: WeightInfo) -> str:
        """One line saying what the strategy does to this weight."""

    def facts(
        self,
        spec: Spec,
        info: WeightInfo,
        arr: np.ndarray,
        sel: np.ndarray,
        mask: np.ndarray | None,
    ) -> list[Fact]:
        """Checks of the written weight ``arr`` beyond finiteness.

        ``sel`` holds the written columns of ``arr``; ``mask`` selects them (None for all).
        """
        return []


_S = TypeVar("_S", bound=type[Strategy])

_REGISTRY: dict[str, Strategy] = {}


def register(cls: _S) -> _S:
    """Class decorator: file one instance of ``cls`` under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"init strategy {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def registered() -> tuple[Strategy, ...]:
    """Every registered strategy, in the order of registration."""
    return tuple(_REGISTRY.values())


def _known_names() -> str:
    return ", ".join(_REGISTRY)


# Keras initializer class names whose snake_case form differs from the strategy's name.
_KERAS_NAMES = {"random_uniform": "uniform", "random_normal": "normal"}


def _key(name: str) -> str:
    """The registry key of a name as a user may write it: ``truncated_normal``,
    ``truncated-normal``, or Keras' class name ``TruncatedNormal`` (``RandomUniform`` is
    ``uniform``)."""
    text = name.strip()
    if text[1:] != text[1:].lower():  # CamelCase: a Keras class name
        text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    key = canonical_name(text)
    return _KERAS_NAMES.get(key, key)


def lookup(name: str) -> Strategy:
    """The strategy called ``name`` (any case, ``-`` for ``_``, or its Keras class name);
    :class:`UsageError` if none."""
    strategy = _REGISTRY.get(_key(name))
    if strategy is None:
        raise UsageError(f"unknown init strategy {name.strip()!r}; known: {_known_names()}")
    return strategy


def parse_spec(text: str) -> Spec:
    """Parse ``NAME`` or ``NAME:ARGS`` into a :class:`Spec` with every argument resolved.

    Raises :class:`UsageError` listing the known names on an unknown one, and on bad, unknown,
    repeated or missing arguments.
    """
    raw = text.strip()
    if not raw:
        raise UsageError(
            f"empty init spec; expected NAME or NAME:ARGS with NAME one of {_known_names()}"
        )
    head, _, rest = raw.partition(":")
    strategy = lookup(head)
    return Spec(name=strategy.name, args=strategy.parse(rest), text=raw)


def parse_init_option(text: str) -> tuple[Target, Spec]:
    """Parse one ``--init [TARGET=]SPEC`` value.

    The text before the first ``=`` is a target only when it holds no ``:`` (a SPEC's own
    arguments come after its ``:``), so ``uniform:minval=-0.05`` is a bare spec while
    ``bias=chrono:tmax=200`` is a target and a spec.
    """
    left, eq, right = text.partition("=")
    head = re.match(r"\s*(kernel|recurrent_kernel|bias)\s*(\[|$)", text if not eq else "")
    if head:
        raise UsageError(
            f"--init {text.strip()!r}: a target needs a strategy after '=', "
            f"e.g. {head.group(1)}=zeros or {head.group(1)}[GATES]=ones"
        )
    if eq and ":" not in left:
        strategy = _REGISTRY.get(canonical_name(left))
        if strategy is not None:
            raise UsageError(
                f"{text.strip()!r}: strategy arguments follow a ':', e.g. {strategy.usage}"
            )
        return parse_target(left), parse_spec(right)
    return Target(role=None, gates=None), parse_spec(text)
