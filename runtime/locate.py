"""Find bundle folders on this machine, without a deep walk.

A folder is a bundle when it holds ``bundle.json``. Search order (DESIGN.md):
``$BUNDLE_PATH`` entries, then the glob patterns of
``runtime.constants.search_roots()`` (Kaggle's two mount styles, /opt/bundles,
Colab Drive, ./bundles-dist). Each place is looked at one level down and, when
it is not a bundle itself, one more level (a Kaggle dataset whose files sit in
a sub-folder).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from runtime import constants


def _is_bundle(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, constants.MANIFEST_NAME))


def _bundles_in(folder: str) -> list[str]:
    """`folder` itself when it is a bundle, else its direct sub-folders that are bundles."""
    if _is_bundle(folder):
        return [folder]
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []
    return [e.path for e in entries if e.is_dir() and _is_bundle(e.path)]


def locate() -> list[Path]:
    """Bundle folders found on this machine, in search order, de-duplicated by real path.

    Returns:
        Absolute paths of folders that hold a ``bundle.json``: first those named by
        ``$BUNDLE_PATH`` (each entry a bundle or a folder of bundles), then those
        matched by the search roots (``$OFFLINE_BUNDLE_SEARCH_ROOTS`` or the defaults
        in ``runtime.constants.DEFAULT_SEARCH_ROOTS``).
    """
    candidates: list[str] = []
    for entry in constants.bundle_path_entries():
        candidates.extend(_bundles_in(os.path.abspath(entry)))
    for pattern in constants.search_roots():
        # sorted: glob order is file-system order, and the first bundle wins a name clash.
        for match in sorted(glob.glob(os.path.expanduser(pattern))):
            if os.path.isdir(match):
                candidates.extend(_bundles_in(os.path.abspath(match)))

    found: list[Path] = []
    seen: set[str] = set()
    for folder in candidates:
        real = os.path.realpath(folder)
        if real not in seen:
            seen.add(real)
            found.append(Path(folder))
    return found
