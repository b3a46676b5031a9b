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
import stat
from pathlib import Path

from runtime import constants


def _manifest_stat(folder: str) -> os.stat_result | None:
    try:
        st = os.stat(os.path.join(folder, constants.MANIFEST_NAME))
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _bundles_in(folder: str) -> list[tuple[str, os.stat_result]]:
    """`folder` itself when it is a bundle, else its direct sub-folders that are bundles."""
    st = _manifest_stat(folder)
    if st is not None:
        return [(folder, st)]
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for e in entries:
        if e.is_dir():
            st = _manifest_stat(e.path)
            if st is not None:
                found.append((e.path, st))
    return found


def locate_with_stats() -> list[tuple[Path, os.stat_result]]:
    """locate(), with the stat of each bundle.json (activate() uses it to see changes)."""
    candidates: list[tuple[str, os.stat_result]] = []
    for entry in constants.bundle_path_entries():
        candidates.extend(_bundles_in(os.path.abspath(entry)))
    for pattern in constants.search_roots():
        # sorted: glob order is file-system order, and the first bundle wins a name clash.
        for match in sorted(glob.glob(os.path.expanduser(pattern))):
            candidates.extend(_bundles_in(os.path.abspath(match)))

    found: list[tuple[Path, os.stat_result]] = []
    seen: set[tuple[int, int]] = set()
    for folder, st in candidates:
        # The same bundle.json reached twice (symlink, overlapping roots) is one bundle.
        identity = (st.st_dev, st.st_ino)
        if identity not in seen:
            seen.add(identity)
            found.append((Path(folder), st))
    return found


def locate() -> list[Path]:
    """Bundle folders found on this machine, in search order, de-duplicated.

    Returns:
        Absolute paths of folders that hold a ``bundle.json``: first those named by
        ``$BUNDLE_PATH`` (each entry a bundle or a folder of bundles), then those
        matched by the search roots (``$OFFLINE_BUNDLE_SEARCH_ROOTS`` or the defaults
        in ``runtime.constants.DEFAULT_SEARCH_ROOTS``). A bundle reached twice (by a
        symlink or overlapping roots) is listed once, where it was first found.
    """
    return [folder for folder, _ in locate_with_stats()]
