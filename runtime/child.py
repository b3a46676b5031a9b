"""The environment of child processes that must be watched from their first line.

``bundle capture -- COMMAND`` and ``bundle run --strict -- COMMAND`` start COMMAND
with ``runtime/_site`` first on PYTHONPATH: its ``sitecustomize`` runs in every
Python process of the command (and their Python children, which inherit the
variable) before any of their code, and then runs the interpreter's own
sitecustomize. It needs ``runtime`` importable there (the same environment as
``bundle``; it says so on stderr otherwise). Python started with ``-S`` or ``-I``
skips it; non-Python programs are out of its reach (``bundle run --no-network``
covers those).
"""

from __future__ import annotations

import os
from pathlib import Path

SITE_DIR = Path(__file__).resolve().parent / "_site"


def with_startup_hook(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``runtime/_site`` first on PYTHONPATH."""
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SITE_DIR)]
    return {**env, "PYTHONPATH": os.pathsep.join([str(SITE_DIR), *old])}
