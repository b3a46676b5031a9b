"""Step 3: every planned file fetched into the store, in parallel, verified, with progress."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from builder import layout
from builder.artifact import ArtifactSpec, Spec
from builder.credentials import resolve_headers
from builder.errors import FetchError, IntegrityError, StoreError
from builder.fetch import FetchPolicy, fetch
from builder.pipeline.report import BuildReport
from builder.sources import (
    PlannedFile,
    ResolvedArtifact,
    get_source,
)
from builder.store import HASH_CHUNK, Store, sha256_file

# --- verification callbacks ---------------------------------------------------


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: sha1 of ``b"blob SIZE\\0"`` + bytes (the Hub's oid)."""
    size = path.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verifier(pf: PlannedFile, label: str) -> Callable[[Path], None] | None:
    """Checks beyond the sha256 fetch() already does: git blob id, torch.hub hash prefix."""
    if pf.sha256 is not None:
        return None
    if pf.git_sha1 is not None:
        expected = pf.git_sha1

        def check_git(path: Path) -> None:
            actual = git_blob_sha1(path)
            if actual != expected:
                raise IntegrityError(
                    f"{label}: git blob id {actual} != {expected} reported by the Hub",
                    expected=expected,
                    actual=actual,
                )

        return check_git
    if pf.sha256_prefix:
        prefix = pf.sha256_prefix

        def check_prefix(path: Path) -> None:
            actual = sha256_file(path, chunk_size=HASH_CHUNK)
            if not actual.startswith(prefix):
                raise IntegrityError(
                    f"{label}: sha256 {actual} does not start with {prefix} (the hash prefix "
                    "in the file name, as torch.hub checks it)",
                    expected=prefix,
                    actual=actual,
                )

        return check_prefix
    return None


def copy_local(pf: PlannedFile, store: Store, label: str) -> tuple[str, int]:
    """Copy a ``local`` artifact's file into the store, checked against its pin.

    Returns:
        (sha256, size) of what was stored.

    Raises:
        StoreError: the file went missing or is no longer a regular file.
        IntegrityError: its bytes differ from the pin (changed since it was pinned).
    """
    import stat

    from builder.sources.local import local_path

    src = local_path(pf.urls[0])
    if src is None:
        raise StoreError(f"{label}: {pf.urls[0]} is not a file of this machine")
    try:
        st = os.stat(src)
    except OSError as e:
        raise StoreError(f"{label}: cannot read {src}: {e.strerror}; it was there when the "
                         "build started") from None
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{label}: {src} is no longer a regular file")
    if pf.size is not None and st.st_size != pf.size:
        raise IntegrityError(f"{label}: {src} is {st.st_size} bytes, the spec says {pf.size}; "
                             "pin the file you mean (sha256 and size)",
                             expected=str(pf.size), actual=str(st.st_size))
    try:
        sha256 = store.add_file(src, expected_sha256=pf.sha256, move=False)
    except IntegrityError as e:
        raise IntegrityError(f"{label}: {src} changed since it was pinned (sha256 {e.actual}, "
                             f"the spec pins {e.expected}); if the new file is the one you mean, "
                             f"pin sha256 {e.actual}", expected=e.expected, actual=e.actual) from None
    return sha256, st.st_size


# --- progress -----------------------------------------------------------------


class Progress:
    """tqdm bars on stderr: one overall (bytes), one per file in flight."""

    def __init__(self, enabled: bool, total: int, files: int) -> None:
        self.enabled = enabled and files > 0
        # Per-file bars stack with cursor moves: right in a terminal or a notebook,
        # escape-code litter in a CI log. Elsewhere the overall bar alone.
        self.per_file = sys.stderr.isatty() or "ipykernel" in sys.modules
        self._lock = threading.Lock()
        self.overall = None
        if self.enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.overall = tqdm(
                total=total or None, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"fetching {files} file(s)", file=sys.stderr, position=0, dynamic_ncols=True,
            )

    def file_callback(self, label: str, size: int | None) -> tuple[Callable[[int], None] | None, Any]:
        if not self.enabled:
            return None, None
        if not self.per_file:
            def update_overall(n: int) -> None:
                with self._lock:
                    self.overall.update(n)

            return update_overall, None
        bar = self._tqdm(
            total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label[-40:],
            file=sys.stderr, leave=False, dynamic_ncols=True,
        )

        def update(n: int) -> None:
            with self._lock:
                bar.update(n)
                self.overall.update(n)

        return update, bar

    def close(self) -> None:
        if self.overall is not None:
            self.overall.close()


def fetch_all(
    spec: Spec,
    plans: dict[str, ResolvedArtifact],
    store: Store,
    *,
    policy: FetchPolicy,
    jobs: int,
    progress: bool,
    report: BuildReport,
) -> dict[str, str]:
    """Fetch every planned file into the store; fills in sha256/size. Returns errors by artifact."""
    todo: list[tuple[ArtifactSpec, PlannedFile]] = []
    blob_path = layout.fast_blob_path(store)
    for art in spec.artifacts:
        for pf in plans[art.id].files:
            if pf.sha256 is None and pf.git_sha1 is not None:
                # A Hub file kept in git has only its git id until downloaded; the
                # store remembers which verified blob had that id (fresh --out,
                # --refresh), so an unchanged file is not fetched again.
                pf.sha256 = store.recall_alias("git-sha1", pf.git_sha1, pf.size)
            if pf.sha256 is not None:
                # What Store.has() does (never re-hash), without pathlib per file.
                try:
                    size = os.stat(blob_path(pf.sha256)).st_size
                except OSError:
                    size = None
                if size is not None and (pf.size is None or pf.size == size):
                    pf.size = size
                    continue
            todo.append((art, pf))
    errors: dict[str, str] = {}
    if not todo:
        return errors
    bars = Progress(progress, sum(pf.size or 0 for _, pf in todo), len(todo))
    # Request headers depend on the source and the host only (huggingface_hub builds
    # them from the token files and environment: ~0.5 ms a file). Ask once per build.
    # A spec's own headers go only to the host of the artifact's `url`: never to a
    # mirror, a --mirror rewrite or another host.
    header_cache: dict[tuple[str, str], dict[str, str]] = {}
    spec_headers = {
        art.id: (urlsplit(art.get("url")).netloc, resolve_headers(art.get("headers"))[0])
        for art in spec.artifacts
        if art.get("headers") and art.get("url")
    }

    def headers_for(art: ArtifactSpec) -> Callable[[str], dict[str, str]]:
        def headers(url: str) -> dict[str, str]:
            host = urlsplit(url).netloc
            key = (art.source, host)
            if key not in header_cache:
                header_cache[key] = get_source(art.source).headers(url)
            own = spec_headers.get(art.id)
            if own is not None and own[0] == host:
                return {**header_cache[key], **own[1]}
            return header_cache[key]

        return headers

    counts_lock = threading.Lock()  # the workers add to the report's counters
    pending: list[tuple[Path, str, PlannedFile]] = []  # verified, not yet durable nor named

    def settle(pf: PlannedFile, sha256: str, size: int | None) -> None:
        pf.sha256, pf.size = sha256, size if size is not None else pf.size
        if pf.git_sha1 is not None:
            store.remember_alias("git-sha1", pf.git_sha1, sha256)

    def one(art: ArtifactSpec, pf: PlannedFile) -> None:
        label = f"artifact '{art.id}': {pf.path.rsplit('/', 1)[-1]}"
        callback, bar = bars.file_callback(label, pf.size)
        if get_source(art.source).local_files:
            try:
                sha256, size = copy_local(pf, store, label)
            finally:
                if bar is not None:
                    bar.close()
            if callback is not None:
                callback(size)
            settle(pf, sha256, size)
            with counts_lock:
                report.copied_files += 1
                report.copied_bytes += size
            return
        try:
            result = fetch(
                pf.urls,
                store,
                sha256=pf.sha256,
                size=pf.size,
                policy=policy,
                headers=headers_for(art),
                progress=callback,
                verify=verifier(pf, label),
                label=label,
                mirror_hint=get_source(art.source).mirror_hint(pf.urls[0]),
                commit=False,  # small files are made durable together, below
            )
        finally:
            if bar is not None:
                bar.close()
        if result.pending:
            with counts_lock:
                pending.append((result.path, result.sha256, pf))
        else:
            settle(pf, result.sha256, result.size)
        with counts_lock:
            report.fetched_files += 1 if result.fetched_bytes else 0
            report.fetched_bytes += result.fetched_bytes
            report.retries += result.retries
            report.resumed_bytes += result.resumed_bytes

    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            # Largest first: the long downloads start at once and the small files
            # fill the other workers around them. In spec order, a repo's hundred
            # small files could queue behind a few workers busy for minutes.
            todo.sort(key=lambda item: -(item[1].size or 0))
            futures = {pool.submit(one, art, pf): art for art, pf in todo}
            for fut in cf.as_completed(futures):
                art = futures[fut]
                try:
                    fut.result()
                except (FetchError, StoreError) as e:
                    msg = str(e)
                    if f"'{art.id}'" not in msg:
                        msg = f"artifact '{art.id}': {msg}"
                    errors.setdefault(art.id, msg)
        # The small files, verified: durable in one go (syncfs), then named. Also when
        # another artifact failed: the rerun then finds them in the store.
        if pending:
            store.commit([(path, sha256) for path, sha256, _ in pending])
            for _path, sha256, pf in pending:
                settle(pf, sha256, None)
    finally:
        bars.close()
    return errors
