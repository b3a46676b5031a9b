"""Find bundle folders on this machine, without a deep walk.

A folder is a bundle when it holds ``bundle.json``. Search order (DESIGN.md):
``$BUNDLE_PATH`` entries, then the glob patterns of
``runtime.constants.search_roots()`` (Kaggle's two mount styles, /opt/bundles,
Colab Drive, ./bundles-dist). Each place is looked at one level down and, when
it is not a bundle itself, one more level (a Kaggle dataset whose files sit in
a sub-folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime import constants


def find_bundles(
    bundle_path: str, search_roots: list[str] | tuple[str, ...], manifest_name: str = "bundle.json"
) -> list[tuple[str, os.stat_result]]:
    """Bundle folders, with the stat of each bundle.json: the search rules in one function.

    ``bundle_path`` is $BUNDLE_PATH's value (entries split on ``os.pathsep``; each a
    bundle or a folder of bundles), ``search_roots`` the glob patterns searched after it.
    Each place is a bundle when it holds ``manifest_name``, else its direct sub-folders
    that do are (a Kaggle dataset whose files sit in a sub-folder). A bundle reached
    twice (a symlink, overlapping roots) is listed once, where it was first found.

    Self-contained on purpose (the standard library, imported here; no name of this
    module): the starter notebooks carry this function's source, to find the bundle
    before offline-bundle is installed, by the same rules as ``runtime.locate()``.
    """
    import glob
    import os
    import stat

    def manifest_stat(folder):
        try:
            st = os.stat(os.path.join(folder, manifest_name))
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def bundles_in(folder):
        st = manifest_stat(folder)
        if st is not None:
            return [(folder, st)]
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return []
        inside = [(e.path, manifest_stat(e.path)) for e in entries if e.is_dir()]
        return [(path, st) for path, st in inside if st is not None]

    candidates = []
    for entry in bundle_path.split(os.pathsep):
        if entry.strip():
            candidates += bundles_in(os.path.abspath(os.path.expanduser(entry)))
    for pattern in search_roots:
        # sorted: glob order is file-system order, and the first bundle wins a name clash.
        for match in sorted(glob.glob(os.path.expanduser(pattern))):
            candidates += bundles_in(os.path.abspath(match))
    found, seen = [], set()
    for folder, st in candidates:
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            found.append((folder, st))
    return found


def locate_with_stats() -> list[tuple[Path, os.stat_result]]:
    """locate(), with the stat of each bundle.json (activate() uses it to see changes)."""
    found = find_bundles(
        os.environ.get(constants.ENV_BUNDLE_PATH, ""), constants.search_roots(), constants.MANIFEST_NAME
    )
    return [(Path(folder), st) for folder, st in found]


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
