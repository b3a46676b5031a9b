"""Step 2: every artifact resolved by its source (or taken from the lock), and every URL
and path of the plan checked before anything is downloaded."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from builder.artifact import ArtifactSpec, Spec
from builder.credentials import resolve_headers, restore_urls
from builder.errors import BuildError, FetchError
from builder.fetch import FetchPolicy, check_url_allowed, rewrite_url
from builder.pipeline.report import BuildReport
from builder.pipeline.resolved import fingerprint
from builder.sources import (
    ResolveContext,
    ResolvedArtifact,
    get_source,
)
from runtime.manifest import (
    ManifestError,
    check_relative_path,
)


def resolve_all(
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
        prints[art.id] = fingerprint(art, source)
        entry = lock.get(art.id)
        if not refresh and source.reuse_plan and isinstance(entry, dict) and entry.get("fingerprint") == prints[art.id]:
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


def spec_urls(spec: Spec) -> dict[str, list[str]]:
    """The URLs a spec names itself (url, mirrors), by artifact: checkable before any server."""
    found = {}
    for art in spec.artifacts:
        urls = [u for u in [art.get("url"), *art.mirrors] if isinstance(u, str)]
        if urls:
            found[art.id] = urls
    return found


def check_headers(spec: Spec) -> dict[str, str]:
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


def plan_urls(plans: dict[str, ResolvedArtifact]) -> dict[str, list[str]]:
    return {art_id: [u for pf in plan.files for u in pf.urls] for art_id, plan in plans.items()}


def check_urls(spec: Spec, urls: dict[str, list[str]], policy: FetchPolicy) -> dict[str, str]:
    """Refuse plain-http URLs (after --mirror rewrites) before anything is fetched; only a
    ``local`` artifact's plan names files of this machine (``file://``), copied, not fetched."""
    errors: dict[str, str] = {}
    for art in spec.artifacts:
        if get_source(art.source).local_files:
            continue
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


def check_paths(spec: Spec, plans: dict[str, ResolvedArtifact]) -> None:
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
