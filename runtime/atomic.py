"""Files written whole or not at all: a temporary name in the same folder, then a rename.

A reader (another rank, a resumed run) sees either the old file or the new one,
never half of one, and an interrupted writer leaves no file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, prefix: str = ".", suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for binary writing; on success rename it to ``path``.

    Args:
        path: the final file; its folder must exist.
        prefix, suffix: of the temporary name (a leading dot keeps it out of globs).

    Raises:
        Whatever the writer raised; the temporary file is removed first.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
