"""Training and inference stacks: one module per stack, each registering one record.

A stack module imports nothing heavy at import time beyond ``click``; torch and friends
are imported inside the commands. It decorates its click group with
:func:`~runtime.stacks.record.register_stack`, giving the stack's name, a summary and
its needs (what each command loads from a bundle, as data: see
:class:`~runtime.stacks.record.Need`). ``bundle run``, ``python -m runtime.stacks.NAME``,
``bundle doctor`` and the starter notebooks all read that record.

Adding a stack is adding a module here: ``runtime/stacks/NAME.py`` (``-`` in the stack's
name is ``_`` in the module's) is found by :func:`get_stack` and :func:`list_stacks`.
"""

from __future__ import annotations

import importlib
import pkgutil

from runtime.errors import UnknownStackError
from runtime.stacks.record import Need, Stack, Use, plain_help, register_stack, registered

__all__ = ["Need", "Stack", "Use", "UnknownStackError", "get_stack", "list_stacks",
           "register_stack"]

#: modules of this package that are not stacks
_NOT_STACKS = frozenset({"main", "record", "launch"})


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_STACKS)


def get_stack(name: str) -> Stack:
    """The record of stack ``name``, importing its module when needed.

    Raises:
        UnknownStackError: no module registers that name.
        ImportError: the stack's module exists but cannot be imported (a missing extra).
    """
    if name not in registered():
        module = name.replace("-", "_")
        if module in _module_names():
            importlib.import_module(f"{__name__}.{module}")
    try:
        stack = registered()[name]
    except KeyError:
        raise UnknownStackError(
            f"unknown stack {name!r}; known stacks: {', '.join(sorted(list_stacks()))}"
        ) from None
    plain_help(stack.cli)
    return stack


def list_stacks() -> dict[str, Stack]:
    """Every stack this runtime has, by name (imports each stack module: click only)."""
    for module in _module_names():
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ImportError:
            continue  # listed by name only where it is asked for (get_stack says why)
    return dict(sorted(registered().items()))
