"""Training and inference stacks, one module per stack, registered by name.

A stack module imports nothing heavy at import time beyond `click`; torch and
friends are imported inside the commands. Each module defines:

- ``cli``: a ``click.Group`` whose commands are what ``bundle run STACK COMMAND`` runs;
- ``ARTIFACTS``: the artifact ids (or refs) the stack needs from the bundle, so
  that ``bundle doctor`` can say what is missing.

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
