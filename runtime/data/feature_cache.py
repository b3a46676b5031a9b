"""Features computed once per (file content, parameters), kept on disk as .npy.

The key is the sha256 of the audio file's bytes plus a digest of the feature
parameters, so a renamed file still hits the cache and a changed file or a
changed parameter never does. Content hashes are remembered per process
(checked against size and mtime), so later epochs read only the .npy files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.atomic import atomic_write

if TYPE_CHECKING:
    import numpy as np


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """A folder of ``<content-sha256>.npy`` files for one set of feature parameters.

    Args:
        root: the cache folder; features go to ``root/<params digest>/``.
        params: plain values that determine the features (written next to them
            as ``params.json`` so that a human can tell caches apart).
        compute: ``audio path -> array``, called only on a miss.
    """

    def __init__(
        self, root: str | os.PathLike, *, params: dict, compute: Callable[[Path], np.ndarray]
    ) -> None:
        blob = json.dumps(params, sort_keys=True, default=str).encode()
        self.params = params
        self.folder = Path(root) / hashlib.sha256(blob).hexdigest()[:16]
        self.compute = compute
        self.hits = 0
        self.misses = 0
        self._digests: dict[str, tuple[int, int, str]] = {}

    def key(self, path: Path) -> str:
        """The content digest of ``path`` (remembered while size and mtime are unchanged)."""
        st = path.stat()
        known = self._digests.get(str(path))
        if known and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        digest = file_digest(path)
        self._digests[str(path)] = (st.st_size, st.st_mtime_ns, digest)
        return digest

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """The features of ``path``: from disk when cached, else computed and stored."""
        import numpy as np

        path = Path(path)
        target = self.folder / f"{self.key(path)}.npy"
        if target.exists():
            self.hits += 1
            return np.load(target)
        self.misses += 1
        features = np.ascontiguousarray(self.compute(path))
        self._store(target, features)
        return features

    def warm(
        self, paths: list[Path], *, progress: bool = True, desc: str = "features",
        unreadable: tuple[type[BaseException], ...] = (),
    ) -> list[tuple[Path, str]]:
        """Compute every missing feature now (before DDP workers start, for instance).

        Returns:
            (path, reason) of every file whose features raised one of ``unreadable``
            (the others are cached); any other error stops the pass.
        """
        from tqdm.auto import tqdm

        bad: list[tuple[Path, str]] = []
        for path in tqdm(paths, desc=desc, disable=not progress, leave=False):
            try:
                self.get(path)
            except unreadable as exc:
                bad.append((Path(path), _reason(exc, path)))
        return bad

    def cached(self, path: str | os.PathLike) -> bool:
        """True when the features of ``path`` are on disk (after warm(): the file was readable)."""
        try:
            return (self.folder / f"{self.key(Path(path))}.npy").exists()
        except OSError:
            return False

    def _store(self, target: Path, features: np.ndarray) -> None:
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        params_file = self.folder / "params.json"
        if not params_file.exists():
            params_file.write_text(json.dumps(self.params, sort_keys=True, default=str, indent=1))
        # Written under a temporary name and renamed: concurrent ranks or an
        # interrupted run never leave a half-written .npy under the final name.
        with atomic_write(target, suffix=".npy.tmp") as fh:
            np.save(fh, features)


def _reason(exc: BaseException, path: str | os.PathLike) -> str:
    """The error's text without the file name it starts with (the summary names the file)."""
    text = str(exc).split(". Replace or remove the file", 1)[0]
    for prefix in (f"cannot decode audio file {path}: ", f"audio file {path} "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text
