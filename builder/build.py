"""``bundle build``: spec -> resolved plan -> verified blobs in the store -> bundle folder.

The steps, in the order they run:

1. load and validate the spec (:mod:`builder.spec`);
2. resolve every artifact with its source (revision -> commit, file list,
   expected hashes). A rerun reuses the plan recorded in the build lock
   (``OUT/.NAME.lock.json``) when the artifact's spec entry is unchanged, so it
   asks no server anything; ``refresh=True`` re-resolves (e.g. to move to the
   Hub's newest ``main``);
3. fetch every planned file into the content-addressed store, in parallel
   (``jobs`` threads), verified before it gets its name; files already in the
   store cost one ``stat``;
4. materialise the bundle in a staging folder by hard links from the store, add
   wheels/notebooks, write bundle.json, dataset-metadata.json and README.md, and
   swap it in under ``OUT/NAME`` (:mod:`builder.layout`).

A failing artifact stops the build before step 4: the previous bundle (if any)
stays as it was, and nothing of the failing artifact is in the bundle or the
store (files are added to the store only after verification).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from builder import layout
from builder.credentials import resolve_headers, restore_urls
from builder.errors import BuildError, FetchError, IntegrityError, StoreError
from builder.fetch import FetchPolicy, check_url_allowed, fetch, parse_mirror, rewrite_url
from builder.runtime_wheels import source_fingerprint
from builder.sources import (
    PlannedFile,
    ResolveContext,
    ResolvedArtifact,
    Source,
    get_source,
)
from builder.spec import ArtifactSpec, Spec, load_spec
from builder.store import HASH_CHUNK, Store, sha256_file
from runtime.manifest import (
    ArtifactEntry,
    FileEntry,
    Manifest,
    ManifestError,
    check_relative_path,
    read_manifest,
)

log = logging.getLogger(__name__)

LOCK_FORMAT = 1


@dataclass
class BuildReport:
    """What a build did (``bundle build --json`` prints it)."""

    bundle_dir: Path
    name: str = ""
    version: str = ""
    digest: str = ""
    artifacts: int = 0
    files: int = 0
    size: int = 0
    fetched_files: int = 0
    fetched_bytes: int = 0
    retries: int = 0  # failed download attempts that were tried again
    resumed_bytes: int = 0  # bytes kept from partial downloads instead of fetched again
    resolved_from_lock: int = 0
    unchanged: bool = False  # the existing bundle folder already was this build
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle_dir": str(self.bundle_dir),
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "artifacts": self.artifacts,
            "files": self.files,
            "size": self.size,
            "fetched_files": self.fetched_files,
            "fetched_bytes": self.fetched_bytes,
            "retries": self.retries,
            "resumed_bytes": self.resumed_bytes,
            "resolved_from_lock": self.resolved_from_lock,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


# --- the build lock ----------------------------------------------------------


def lock_path(out_dir: Path, name: str) -> Path:
    """The build lock of bundle ``name``: next to the bundle, not in it (not published)."""
    return out_dir / f".{name}.lock.json"


def _fingerprint(artifact: ArtifactSpec, source: Source) -> str:
    data = {"artifact": artifact.canonical(), "source": source.fingerprint_extra()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        return {}
    arts = data.get("artifacts")
    return arts if isinstance(arts, dict) else {}


def _write_lock(path: Path, entries: dict[str, Any]) -> None:
    text = json.dumps({"format": LOCK_FORMAT, "artifacts": entries}, sort_keys=True, separators=(",", ":"))
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return  # unchanged: a rerun writes nothing
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- verification callbacks ---------------------------------------------------


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: sha1 of ``b"blob SIZE\\0"`` + bytes (the Hub's oid)."""
    size = path.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verifier(pf: PlannedFile, label: str) -> Callable[[Path], None] | None:
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


# --- progress -----------------------------------------------------------------


class _Progress:
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


# --- the build ----------------------------------------------------------------


def _resolve_all(
    spec: Spec,
    lock: dict[str, Any],
    *,
    ctx: ResolveContext,
    jobs: int,
    refresh: bool,
    report: BuildReport,
) -> tuple[dict[str, ResolvedArtifact], dict[str, str], dict[str, str]]:
    """Resolve every artifact (from the lock when unchanged). Returns plans, fingerprints, errors."""
    plans: dict[str, ResolvedArtifact] = {}
    prints: dict[str, str] = {}
    errors: dict[str, str] = {}
    to_resolve: list[ArtifactSpec] = []
    for art in spec.artifacts:
        source = get_source(art.source)
        prints[art.id] = _fingerprint(art, source)
        entry = lock.get(art.id)
        if not refresh and isinstance(entry, dict) and entry.get("fingerprint") == prints[art.id]:
            try:
                plan = ResolvedArtifact.from_json(entry["resolved"])
            except (KeyError, TypeError, ValueError):
                plan = None
            if plan is not None:
                # The lock holds redacted URLs (no signatures or tokens on disk); the
                # spec, unchanged since the fingerprint matched, has the full ones.
                for pf in plan.files:
                    full = restore_urls(pf.urls, [art.get("url"), *art.mirrors])
                    if full is None:
                        plan = None
                        break
                    pf.urls = full
            if plan is not None and all(f.sha256 for f in plan.files):
                plans[art.id] = plan
                report.resolved_from_lock += 1
                continue
        to_resolve.append(art)

    def one(art: ArtifactSpec) -> ResolvedArtifact:
        return get_source(art.source).resolve(art, ctx)

    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, art): art for art in to_resolve}
        for fut in cf.as_completed(futures):
            art = futures[fut]
            try:
                plans[art.id] = fut.result()
            except BuildError as e:
                errors[art.id] = str(e)
            except ImportError as e:
                errors[art.id] = (
                    f"artifact '{art.id}': source '{art.source}' needs {e.name or e}: "
                    "pip install 'offline-bundle[stacks]'"
                )
    return plans, prints, errors


def _spec_urls(spec: Spec) -> dict[str, list[str]]:
    """The URLs a spec names itself (url, mirrors), by artifact: checkable before any server."""
    found = {}
    for art in spec.artifacts:
        urls = [u for u in [art.get("url"), *art.mirrors] if isinstance(u, str)]
        if urls:
            found[art.id] = urls
    return found


def _check_headers(spec: Spec) -> dict[str, str]:
    """Every variable a spec's headers name is set (its value is sent, never written)."""
    errors = {}
    for art in spec.artifacts:
        unset = resolve_headers(art.get("headers") or {})[1]
        if unset:
            errors[art.id] = (
                f"artifact '{art.id}': field 'headers': the environment variable(s) "
                f"{', '.join(unset)} are not set; export them before `bundle build`"
            )
    return errors


def _plan_urls(plans: dict[str, ResolvedArtifact]) -> dict[str, list[str]]:
    return {art_id: [u for pf in plan.files for u in pf.urls] for art_id, plan in plans.items()}


def _check_urls(spec: Spec, urls: dict[str, list[str]], policy: FetchPolicy) -> dict[str, str]:
    """Refuse plain-http URLs (after --mirror rewrites) before anything is fetched."""
    errors: dict[str, str] = {}
    for art in spec.artifacts:
        seen: set[str] = set()
        for url in urls.get(art.id, ()):
            rewritten = rewrite_url(url, policy.mirrors)
            origin = "/".join(rewritten.split("/", 3)[:3])  # scheme://host: what is checked
            if origin in seen:
                continue
            seen.add(origin)
            try:
                check_url_allowed(rewritten, allow_http=policy.allow_http)
            except FetchError as e:
                key = "mirrors" if url in art.mirrors else "url"
                errors.setdefault(art.id, f"artifact '{art.id}': field '{key}': {e}")
    return errors


def _check_paths(spec: Spec, plans: dict[str, ResolvedArtifact]) -> None:
    """Every path a plan writes is a safe bundle path, and each has one owner.

    Paths come from the spec, the sources and the servers they ask (Hub file
    names, revisions): each passes the runtime's own check_relative_path, so a
    path the runtime would refuse is never written. Two artifacts may share a
    generated file with equal bytes (e.g. refs/main); nothing else. No path may
    be both a file and a folder of another path.
    """
    owner: dict[str, tuple[str, Any]] = {}
    for art in spec.artifacts:
        plan = plans[art.id]
        for rel in [plan.path, *(f.path for f in plan.files), *(g.path for g in plan.generated)]:
            try:
                check_relative_path(rel, f"artifact '{art.id}'")
                if any(len(part.encode()) > 255 for part in rel.split("/")):
                    raise ManifestError(f"artifact '{art.id}': {rel!r} has a name over 255 bytes")
            except ManifestError as e:
                raise BuildError(f"{e}; nothing was written", artifact=art.id) from None
        kept_generated = []
        for g in plan.generated:
            prev = owner.get(g.path)
            if prev is not None:
                if prev[1] != g.data:
                    raise BuildError(
                        f"artifacts '{prev[0]}' and '{art.id}' both write {g.path} with different "
                        "contents (same repo at two revisions?); keep one artifact per repo",
                        artifact=art.id,
                    )
                continue
            owner[g.path] = (art.id, g.data)
            kept_generated.append(g)
        plan.generated = kept_generated
        for f in plan.files:
            if f.path in owner:
                raise BuildError(
                    f"artifacts '{owner[f.path][0]}' and '{art.id}' both write {f.path}; "
                    "an artifact can name the other in `fallbacks` instead of fetching it twice",
                    artifact=art.id,
                )
            owner[f.path] = (art.id, None)
    for path, (art_id, _) in owner.items():
        parent = path.rpartition("/")[0]
        while parent:
            if parent in owner:
                raise BuildError(
                    f"artifact '{art_id}' writes {path}, but artifact '{owner[parent][0]}' writes "
                    f"a file at {parent}: a path cannot be both a file and a folder",
                    artifact=art_id,
                )
            parent = parent.rpartition("/")[0]


def _fetch_all(
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
    bars = _Progress(progress, sum(pf.size or 0 for _, pf in todo), len(todo))
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
        try:
            result = fetch(
                pf.urls,
                store,
                sha256=pf.sha256,
                size=pf.size,
                policy=policy,
                headers=headers_for(art),
                progress=callback,
                verify=_verifier(pf, label),
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


WHEELS_LOCK_KEY = "[wheels]"  # cannot clash with an artifact id


def _import_optional(module_name: str, func_name: str) -> Callable[..., list[str]] | None:
    """builder.wheels / builder.notebooks (the Kaggle side); None if not installed."""
    try:
        module = __import__(module_name, fromlist=[func_name])
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        return None
    return getattr(module, func_name)


def _wheels_fingerprint(spec: Spec) -> str:
    data: dict[str, Any] = {"wheels": spec.wheels}
    if (spec.wheels or {}).get("include_self", True):
        # The wheel of offline-bundle itself is built from these sources.
        data["project"] = source_fingerprint(Path(__file__).resolve().parents[1])
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _wheelhouse(
    spec: Spec, staging: Path, store: Store, lock: dict[str, Any], new_lock: dict[str, Any],
    report: BuildReport,
) -> list[FileEntry]:
    """wheels/: from the store when [wheels] (and this project) are unchanged, else pip.

    The wheels go into the store like any other file, so a rerun of an unchanged
    build runs no pip and asks no index anything.
    """
    if spec.wheels is None:
        return []
    fingerprint = _wheels_fingerprint(spec)
    locked = lock.get(WHEELS_LOCK_KEY)
    if isinstance(locked, dict) and locked.get("fingerprint") == fingerprint:
        try:
            files = [FileEntry(f["path"], f["size"], f["sha256"]) for f in locked["files"]]
        except (KeyError, TypeError):
            files = []
        if files and all(store.has(f.sha256, f.size) for f in files):
            for f in files:
                store.materialise(f.sha256, staging / f.path)
            new_lock[WHEELS_LOCK_KEY] = locked
            return files
    build_wheelhouse = _import_optional("builder.wheels", "build_wheelhouse")
    if build_wheelhouse is None:
        report.warnings.append(f"{spec.path}: [wheels] skipped: builder.wheels is not installed")
        return []
    entries = []
    for rel in sorted(set(build_wheelhouse(spec, staging))):
        size = (staging / rel).stat().st_size
        sha256 = store.add_file(staging / rel)  # hashes and moves it into the store
        store.materialise(sha256, staging / rel)
        entries.append(FileEntry(rel, size, sha256))
    new_lock[WHEELS_LOCK_KEY] = {
        "fingerprint": fingerprint, "files": [e.to_json() for e in entries],
    }
    return entries


def _notebooks(spec: Spec, staging: Path, report: BuildReport) -> list[FileEntry]:
    """notebooks/STACK.ipynb for the stacks the spec declares (small, written each build)."""
    if not spec.stacks:
        return []
    write_notebooks = _import_optional("builder.notebooks", "write_notebooks")
    if write_notebooks is None:
        report.warnings.append(f"{spec.path}: notebooks skipped: builder.notebooks is not installed")
        return []
    return [layout.file_entry(staging, rel) for rel in sorted(set(write_notebooks(spec, staging)))]


def _created() -> str:
    # SOURCE_DATE_EPOCH makes even `created` reproducible for those who want it.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.fromtimestamp(int(epoch), timezone.utc)
        if epoch and epoch.isdigit()
        else datetime.now(timezone.utc)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    spec_path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    store_dir: str | os.PathLike | None = None,
    jobs: int = 4,
    mirrors: Sequence[tuple[str, str] | str] = (),
    allow_http: bool = False,
    trust_on_first_use: bool = False,
    progress: bool = True,
    refresh: bool = False,
    policy: FetchPolicy | None = None,
) -> BuildReport:
    """Like :func:`build_bundle`, returning a :class:`BuildReport` (the CLI's ``--json``)."""
    started = time.monotonic()
    # Everything that can be checked without a server is checked before anything
    # is created: a spec that fails validation leaves no store, --out or lock behind.
    spec = load_spec(spec_path)
    out = Path(out_dir)
    bundle_dir = out / spec.name
    report = BuildReport(bundle_dir=bundle_dir, name=spec.name, version=spec.version)
    mirror_pairs = tuple(parse_mirror(m) if isinstance(m, str) else tuple(m) for m in mirrors)
    # A copy: the caller's policy object is not changed by this build's options.
    policy = dataclasses.replace(policy or FetchPolicy(), mirrors=mirror_pairs, allow_http=allow_http)
    errors = _check_urls(spec, _spec_urls(spec), policy)
    errors.update(_check_headers(spec))
    if errors:
        _raise_failed(spec, errors)
    store = Store(Path(store_dir) if store_dir is not None else None)
    out.mkdir(parents=True, exist_ok=True)

    from filelock import FileLock

    # One build of a given bundle folder at a time; different bundles (and their
    # fetches into the shared store) run concurrently.
    with FileLock(str(out / f".{spec.name}.build.lock")):
        lock_file = lock_path(out, spec.name)
        lock = _read_lock(lock_file)
        ctx = ResolveContext(trust_on_first_use=trust_on_first_use, spec_path=str(spec.path))
        plans, prints, errors = _resolve_all(
            spec, lock, ctx=ctx, jobs=jobs, refresh=refresh, report=report
        )
        for plan in plans.values():
            for w in plan.warnings:
                report.warnings.append(w)
                print(f"WARNING: {w}", file=sys.stderr)
        errors.update(_check_urls(spec, _plan_urls(plans), policy))
        if errors:
            _raise_failed(spec, errors)
        _check_paths(spec, plans)
        errors = _fetch_all(
            spec, plans, store, policy=policy, jobs=jobs, progress=progress, report=report
        )
        # Keep what was resolved and fetched, even when another artifact failed:
        # the next run starts from there.
        new_lock = {
            a.id: {"fingerprint": prints[a.id], "resolved": plans[a.id].to_json()}
            for a in spec.artifacts
            if a.id not in errors and all(f.sha256 for f in plans[a.id].files)
        }
        if errors:
            _write_lock(lock_file, {**lock, **new_lock})
            _raise_failed(spec, errors)

        manifest = _materialise(spec, plans, store, out, bundle_dir, report, lock, new_lock)
        _write_lock(lock_file, new_lock)
    report.digest = manifest.digest
    report.artifacts = len(manifest.artifacts)
    report.files = len(manifest.all_files())
    report.size = manifest.size
    report.seconds = time.monotonic() - started
    return report


def _raise_failed(spec: Spec, errors: dict[str, str]) -> NoReturn:
    ordered = [a.id for a in spec.artifacts if a.id in errors]
    where = f"{spec.path}: "
    errors = {k: v if v.startswith(where) else where + v for k, v in errors.items()}
    if len(ordered) == 1:
        raise BuildError(errors[ordered[0]], artifact=ordered[0])
    raise BuildError(
        f"{len(ordered)} artifacts failed: " + " | ".join(errors[i] for i in ordered),
        artifact=ordered[0],
    )


def _artifact_entries(
    spec: Spec, plans: dict[str, ResolvedArtifact]
) -> tuple[list[ArtifactEntry], dict[str, bytes]]:
    """Manifest entries of every artifact, and the bytes of the generated files by path."""
    artifacts: list[ArtifactEntry] = []
    generated: dict[str, bytes] = {}
    for art in spec.artifacts:
        plan = plans[art.id]
        entries: list[FileEntry] = []
        for pf in plan.files:
            assert pf.sha256 is not None and pf.size is not None
            entries.append(FileEntry(pf.path, pf.size, pf.sha256))
        for g in plan.generated:
            generated[g.path] = g.data
            entries.append(FileEntry(g.path, len(g.data), hashlib.sha256(g.data).hexdigest()))
        artifacts.append(
            ArtifactEntry(
                id=art.id,
                source=plan.source,
                ref=plan.ref,
                revision=plan.revision,
                path=plan.path,
                files=entries,
                aliases=list(plan.aliases),
                fallbacks=list(art.fallbacks),
            )
        )
    return artifacts, generated


def _bundle_is_current(
    bundle_dir: Path,
    previous: Manifest,
    manifest: Manifest,
    generated: dict[str, bytes],
    staging: Path,
    store: Store,
    top_level: dict[str, bytes],
) -> bool:
    """True when the existing bundle already is what this build would write.

    Same manifest (apart from ``created``), every fetched file the very store blob
    (same inode: nothing to re-hash), generated files byte for byte. Then the
    build leaves the bundle folder alone.
    """
    old, new = previous.to_json(), manifest.to_json()
    old.pop("created"), new.pop("created")
    if old != new:
        return False
    blob_path = layout.fast_blob_path(store)
    root = str(bundle_dir)
    for f in manifest.all_files():
        here = f"{root}/{f.path}"
        if f.path in generated or f.path.startswith("notebooks/"):
            data = generated.get(f.path)
            if data is None:
                data = (staging / f.path).read_bytes()
            try:
                with open(here, "rb") as fh:
                    if fh.read(len(data) + 1) != data:
                        return False
            except OSError:
                return False
            continue
        try:
            st, blob = os.stat(here), os.stat(blob_path(f.sha256))
        except OSError:
            return False
        if (st.st_ino, st.st_dev) != (blob.st_ino, blob.st_dev) or os.path.islink(here):
            return False
    for name, data in top_level.items():
        try:
            if (bundle_dir / name).read_bytes() != data:
                return False
        except OSError:
            return False
    return True


def _previous_manifest(bundle_dir: Path) -> Manifest | None:
    if not (bundle_dir / "bundle.json").is_file():
        return None
    try:
        return read_manifest(bundle_dir)
    except ManifestError:
        return None


def _materialise(
    spec: Spec,
    plans: dict[str, ResolvedArtifact],
    store: Store,
    out: Path,
    bundle_dir: Path,
    report: BuildReport,
    lock: dict[str, Any],
    new_lock: dict[str, Any],
) -> Manifest:
    layout.clear_stale_staging(out, spec.name)
    previous = _previous_manifest(bundle_dir)
    old_files = {f.path: f for f in previous.all_files()} if previous else {}
    staging = layout.new_staging_dir(out, spec.name)
    try:
        artifacts, generated = _artifact_entries(spec, plans)
        # Wheels (linked from the store when cached) and notebooks first: their
        # entries are part of the manifest we compare with the existing bundle.
        extra = _wheelhouse(spec, staging, store, lock, new_lock, report)
        extra += _notebooks(spec, staging, report)
        manifest = Manifest(
            name=spec.name,
            version=spec.version,
            title=spec.title,
            stacks=list(spec.stacks),
            artifacts=artifacts,
            extra_files=extra,
            created=_created(),
        )
        manifest.digest = manifest.compute_digest()
        top_level = layout.generated_top_level(manifest, kaggle=spec.kaggle, license=spec.license)
        if previous is not None and _bundle_is_current(
            bundle_dir, previous, manifest, generated, staging, store, top_level
        ):
            layout.remove_tree(staging)
            report.unchanged = True
            return previous

        linker = layout.Linker(store, staging)
        for art in manifest.artifacts:
            for f in art.files:
                if f.path in generated:
                    layout.write_bytes(staging, f.path, generated[f.path])
                    continue
                old = old_files.get(f.path)
                reuse = bundle_dir / f.path if old is not None and old == f else None
                linker.link(f.sha256, f.path, reuse)
        layout.write_generated(staging, manifest, top_level)
        layout.check_tree(staging)
        layout.swap_in(staging, bundle_dir)
    except BaseException:
        layout.remove_tree(staging)
        raise
    return manifest


def build_bundle(
    spec_path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    store_dir: str | os.PathLike | None = None,
    jobs: int = 4,
    mirrors: Sequence[tuple[str, str] | str] = (),
    allow_http: bool = False,
    trust_on_first_use: bool = False,
    progress: bool = True,
    refresh: bool = False,
) -> Path:
    """Build the bundle a spec describes into ``out_dir/NAME/``.

    Args:
        spec_path: the spec, e.g. ``bundles/emotion-vit.toml``.
        out_dir: parent of the bundle folder (the CLI's default: ``./bundles-dist``).
        store_dir: content-addressed store; default ``$OFFLINE_BUNDLE_STORE`` or the
            user cache dir.
        jobs: files fetched in parallel.
        mirrors: URL prefix rewrites, ``(FROM, TO)`` pairs or ``"FROM=TO"`` strings.
        allow_http: allow plain http to non-loopback hosts.
        trust_on_first_use: allow url artifacts without sha256 (the hash of the
            first download is recorded, with a loud warning).
        progress: tqdm bars on stderr.
        refresh: re-resolve every artifact (e.g. a moved ``main``) instead of
            reusing the build lock.

    Returns:
        The bundle folder.

    Raises:
        SpecError: the spec is invalid (names file, artifact, field).
        BuildError: an artifact could not be resolved or fetched (names it); the
            previous bundle folder, if any, is left untouched.
    """
    return build(
        spec_path,
        out_dir=out_dir,
        store_dir=store_dir,
        jobs=jobs,
        mirrors=mirrors,
        allow_http=allow_http,
        trust_on_first_use=trust_on_first_use,
        progress=progress,
        refresh=refresh,
    ).bundle_dir
