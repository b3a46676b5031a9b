"""The steps in order: ``build()`` and ``build_bundle()``."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from builder.artifact import Spec
from builder.errors import BuildError
from builder.fetch import FetchPolicy, parse_mirror
from builder.kaggle_rules import publish_warnings
from builder.pipeline.download import fetch_all
from builder.pipeline.materialise import materialise
from builder.pipeline.plan import (
    check_headers,
    check_paths,
    check_urls,
    plan_urls,
    resolve_all,
    spec_urls,
)
from builder.pipeline.report import BuildReport
from builder.pipeline.resolved import lock_path, mutex_path, read_lock, write_lock
from builder.sources import ResolveContext
from builder.spec import load_spec
from builder.store import Store
from builder.store.gc import building, record_root


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
    errors = check_urls(spec, spec_urls(spec), policy)
    errors.update(check_headers(spec))
    if errors:
        raise_failed(spec, errors)

    out.mkdir(parents=True, exist_ok=True)

    from filelock import FileLock

    # One build of a given bundle folder at a time; different bundles (and their
    # fetches into the shared store) run concurrently.
    with FileLock(str(mutex_path(out, spec.name))):
        lock_file = lock_path(out, spec.name)
        lock = read_lock(lock_file)
        ctx = ResolveContext(trust_on_first_use=trust_on_first_use, spec_path=str(spec.path))
        plans, prints, errors = resolve_all(
            spec, lock, ctx=ctx, jobs=jobs, refresh=refresh, report=report
        )
        for plan in plans.values():
            for w in plan.warnings:
                report.warn(w)
        errors.update(check_urls(spec, plan_urls(plans), policy))
        if errors:
            raise_failed(spec, errors)
        check_paths(spec, plans)
        # Only now is the store made (or opened): a spec whose artifacts do not resolve
        # leaves no store skeleton behind.
        store = Store(Path(store_dir) if store_dir is not None else None)
        # `bundle store prune` waits while this build downloads and links (gc.building).
        with building(store.root):
            errors = fetch_all(
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
                write_lock(lock_file, {**lock, **new_lock})
                record_root(store.root, bundle_dir, lock_file, spec.path)
                raise_failed(spec, errors)

            manifest = materialise(spec, plans, store, out, bundle_dir, report, lock, new_lock)
            write_lock(lock_file, new_lock)
            record_root(store.root, bundle_dir, lock_file, spec.path)
    # What `bundle publish` would refuse, said at build time (after a build that worked:
    # a failed build's own error comes alone).
    for warning in publish_warnings(name=spec.name, kaggle=spec.kaggle, title=spec.title):
        report.warn(f"{spec.path}: {warning}")
    report.digest = manifest.digest
    report.artifacts = len(manifest.artifacts)
    report.files = len(manifest.all_files())
    report.size = manifest.size
    report.seconds = time.monotonic() - started
    return report


def raise_failed(spec: Spec, errors: dict[str, str]) -> NoReturn:
    ordered = [a.id for a in spec.artifacts if a.id in errors]
    where = f"{spec.path}: "
    errors = {k: v if v.startswith(where) else where + v for k, v in errors.items()}
    if len(ordered) == 1:
        raise BuildError(errors[ordered[0]], artifact=ordered[0])
    # One line per artifact, the spec named once: a list a reader can scan.
    lines = "\n".join(f"- {errors[i].removeprefix(where)}" for i in ordered)
    raise BuildError(f"{spec.path}: {len(ordered)} artifacts failed:\n{lines}", artifact=ordered[0])


def build_bundle(spec_path: str | os.PathLike, **options: Any) -> Path:
    """Build the bundle a spec describes into ``out_dir/NAME/``; the bundle folder.

    Takes the keyword options of :func:`build`: ``out_dir`` (the parent of the bundle
    folder; the CLI's default is ``./bundles-dist``), ``store_dir`` (default
    ``$OFFLINE_BUNDLE_STORE`` or the user cache dir), ``jobs``, ``mirrors`` (``(FROM,
    TO)`` pairs or ``"FROM=TO"`` strings), ``allow_http``, ``trust_on_first_use`` (url
    artifacts without sha256 record the hash of the first download, with a loud
    warning), ``progress``, ``refresh`` (re-resolve every artifact instead of reusing
    the resolved plan).

    Raises:
        SpecError: the spec is invalid (names file, artifact, field).
        BuildError: an artifact could not be resolved or fetched (names it); the
            previous bundle folder, if any, is left untouched.
    """
    return build(spec_path, **options).bundle_dir
