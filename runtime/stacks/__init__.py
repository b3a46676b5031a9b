"""Training and inference stacks, one module per stack, registered by name.

A stack module imports nothing heavy at import time beyond `click`; torch and
friends are imported inside the commands. Each module defines:

- ``cli``: a ``click.Group`` whose commands are what ``bundle run STACK COMMAND`` runs;
- ``NEEDS``: role -> names the stack's default run loads from the bundle (any one
  name of the tuple; refs such as a Hub repo id or a torchvision weights enum, so
  that any artifact id in a user's spec matches);
- ``OPTIONAL_NEEDS`` (optional): roles only other options need (``--arch``,
  ``--config``); with ``NEEDS_ANY_OPTIONAL = True`` at least one of them must be
  usable (a stack whose every run picks one, e.g. ddrm's ``--config``);
- ``ARTIFACTS``: the names of ``NEEDS`` and ``OPTIONAL_NEEDS`` in one list (what the
  starter notebooks resolve).

``bundle doctor`` reports every role: the artifact a run would use, a declared
fallback it would take instead (a warning), or nothing (an error only where a
run would fail).

Adding a stack is adding a module and one line to ``STACKS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: stack name -> module path (imported lazily)
STACKS: dict[str, str] = {
    "emotion-vit": "runtime.stacks.emotion_vit",
    "emotion-ast": "runtime.stacks.emotion_ast",
    "emotion-distill": "runtime.stacks.emotion_distill",
    "landcover": "runtime.stacks.landcover",
    "flood": "runtime.stacks.flood",
    "masked-ssl": "runtime.stacks.masked_ssl",
    "ddrm": "runtime.stacks.ddrm",
}


class UnknownStackError(KeyError):
    def __str__(self) -> str:
        return f"unknown stack {self.args[0]!r}; known stacks: {', '.join(sorted(STACKS))}"


def load_stack(name: str) -> ModuleType:
    """Import the module of stack `name`."""
    try:
        module_path = STACKS[name]
    except KeyError:
        raise UnknownStackError(name) from None
    return importlib.import_module(module_path)


def stack_needs(module: ModuleType) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], bool]:
    """(required roles, optional roles, whether one optional role must be usable) of a stack.

    A module with only the older ``ARTIFACTS`` list gets one required role per entry
    (a tuple entry: any one of its names).
    """
    required = getattr(module, "NEEDS", None)
    if required is None:
        required = {}
        for need in getattr(module, "ARTIFACTS", ()):
            names = tuple(str(n) for n in need) if isinstance(need, (tuple, list)) else (str(need),)
            required[" | ".join(names)] = names
    optional = dict(getattr(module, "OPTIONAL_NEEDS", {}))
    return dict(required), optional, bool(getattr(module, "NEEDS_ANY_OPTIONAL", False))
