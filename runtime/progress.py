"""One byte counter for long work (hashing, packing, verifying), on stderr.

tqdm when it is installed (the runtime does not depend on it) and stderr is a terminal;
otherwise an object that counts and prints nothing, so callers never test for None.
"""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    """The bar's interface, doing nothing: progress off, no terminal, or no tqdm."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def byte_bar(total: int, desc: str, *, enabled: bool = True) -> Any:
    """A bar counting ``total`` bytes (use as a context manager; ``.update(n)``).

    Hidden when ``enabled`` is False, when stderr is not a terminal (CI logs stay
    readable), or when tqdm is not installed.
    """
    if not enabled:
        return _Silent()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, disable=None,
                leave=False)
