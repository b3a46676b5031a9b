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
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if os.path.basename(pattern) != "[0-9]*":
            for match in matches:
                candidates += bundles_in(os.path.abspath(match))
            continue
        # Version folders (Kaggle Models: .../VARIATION/VERSION/): under each parent, the
        # highest version that holds a bundle (a notebook may attach more than one).
        best = {}
        for match in matches:
            name = os.path.basename(match)
            parent = os.path.dirname(os.path.abspath(match))
            if name.isdigit() and (parent not in best or int(name) > best[parent][0]):
                here = bundles_in(os.path.abspath(match))
                if here:
                    best[parent] = (int(name), here)
        for parent in sorted(best):
            candidates += best[parent][1]
    found, seen = [], set()
    for folder, st in candidates:
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            found.append((folder, st))
    return found


def locate_with_stats() -> list[tuple[Path, os.stat_result]]:
    """locate(), with the stat of each bundle.json (activate() uses it to see changes)."""
    found = find_bundles(
        constants.bundle_path(), constants.search_roots(), constants.MANIFEST_NAME
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


def kaggle_model_of(folder: str | os.PathLike) -> dict[str, object] | None:
    """Which Kaggle Model version ``folder`` is mounted as, and the versions attached.

    ``{"handle": "[OWNER/]MODEL/FRAMEWORK/VARIATION", "version": 3, "attached": [2, 3]}``
    for ``.../kaggle/input/MODEL/FRAMEWORK/VARIATION/3[/SUB]`` or
    ``.../kaggle/input/models/OWNER/MODEL/FRAMEWORK/VARIATION/3[/SUB]``; None otherwise.
    """
    parts = Path(folder).parts
    anchors = [k for k in range(1, len(parts)) if parts[k] == "input" and parts[k - 1] == "kaggle"]
    if not anchors:
        return None
    k = anchors[-1]
    rest = parts[k + 1:]
    frameworks = constants.KAGGLE_MODEL_FRAMEWORKS
    if len(rest) >= 6 and rest[0] == "models" and rest[3] in frameworks and rest[5].isdigit():
        names, depth = rest[1:5], 6
    elif len(rest) >= 4 and rest[1] in frameworks and rest[3].isdigit():
        names, depth = rest[0:3], 4
    else:
        return None
    version_dir = Path(*parts[: k + 1 + depth])
    try:
        attached = sorted(int(p.name) for p in version_dir.parent.iterdir() if p.name.isdigit() and p.is_dir())
    except OSError:
        attached = []
    return {"handle": "/".join(names), "version": int(version_dir.name), "attached": attached}
