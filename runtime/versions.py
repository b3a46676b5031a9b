"""Library versions against the oldest ones the runtime supports (constants.MIN_LIBRARY_VERSIONS).

activate() checks the libraries already imported (their ``__version__``: no metadata
lookup on the notebook's first line); `bundle doctor` checks every installed one.
"""

from __future__ import annotations

import re
import sys

from runtime.constants import MIN_LIBRARY_VERSIONS

_LEADING_NUMBERS = re.compile(r"\d+(?:\.\d+)*")


def parse(version: str) -> tuple[int, ...]:
    """The leading numbers of a version: "4.44.2.dev0" -> (4, 44, 2); "" -> ()."""
    m = _LEADING_NUMBERS.match(version.strip())
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


def below_minimum(name: str, version: str | None) -> bool:
    minimum = MIN_LIBRARY_VERSIONS.get(name)
    return bool(minimum and version and parse(version) and parse(version) < parse(minimum))


def message(name: str, version: str) -> str:
    minimum = MIN_LIBRARY_VERSIONS[name]
    return (
        f"{name} {version} is older than {minimum}, the oldest version offline-bundle's runtime "
        f"supports (docs/runtime.md, 'Library versions'); loading from bundles may fail. "
        f"Upgrade it: pip install '{name}>={minimum}' (offline: from a wheelhouse that holds it)"
    )


def imported_too_old() -> list[str]:
    """A message for every library already imported whose version is below the minimum."""
    found = []
    for name in MIN_LIBRARY_VERSIONS:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if isinstance(version, str) and below_minimum(name, version):
            found.append(message(name, version))
    return found
