"""``fetch()``: one file into the store, verified; what the sources and the build call."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from builder.credentials import redact_url
from builder.errors import FetchError
from builder.fetch.download import Download
from builder.fetch.policy import INLINE_MAX, FetchPolicy, FetchResult
from builder.fetch.urls import check_url_allowed, rewrite_url
from builder.store import Store


def fetch(
    urls: Sequence[str],
    store: Store,
    *,
    sha256: str | None,
    size: int | None = None,
    policy: FetchPolicy,
    headers: Mapping[str, str] | Callable[[str], Mapping[str, str]] | None = None,
    progress: Callable[[int], None] | None = None,
    key: str | None = None,
    verify: Callable[[Path], None] | None = None,
    label: str = "",
    mirror_hint: str | None = None,
    commit: bool = True,
) -> FetchResult:
    """Download one file into the store and return the verified blob.

    Returns at once, with no request, when ``sha256`` is given and the store has it.

    Args:
        urls: where the file can be found, in order of preference (primary, then mirrors).
        store: the content-addressed store to put the file in.
        sha256: expected hex sha256; None only for trust-on-first-use (the hash is
            then computed and returned).
        size: expected size in bytes, if known (checked before and after).
        policy: retries, timeouts, mirrors and http rules.
        headers: extra request headers (e.g. Authorization), or a function of each URL
            tried (after --mirror rewrites) that gives them, so that a secret for one
            host is not sent to a mirror; never logged.
        progress: called with byte increments (negative when a partial is thrown away).
        key: download key for the lock and partial file; default the sha256, or the
            sha256 of the first url.
        verify: called with the completed partial before it enters the store; raise
            IntegrityError to reject the bytes (e.g. a git-sha1 check).
        label: what to call the file in messages (artifact id / file name).
        mirror_hint: what a failure message suggests instead of --mirror (the Hub
            sources say HF_ENDPOINT: --mirror does not apply to Hub models).
        commit: False lets a small file (up to 256 KiB, known size) come back verified
            but neither durable nor named (``FetchResult.pending``): the caller
            passes a group of them to Store.commit(), which costs one syncfs instead
            of an fsync each. Larger files are committed here either way.

    Returns:
        FetchResult with the blob path (and the retries and resumed bytes it took).

    Raises:
        IntegrityError: every URL served wrong bytes (permanent); nothing stored.
        FetchError: refused URL, HTTP 4xx (permanent), or transient failures that
            outlasted the retries / total timeout (the partial is kept for resuming).
        StoreError: the store could not be written (e.g. disk full).
    """
    if isinstance(urls, str):
        urls = [urls]
    if not urls:
        raise FetchError(f"{label or 'file'}: no url to fetch from", permanent=True, artifact=label)
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise FetchError(
                f"{label or urls[0]}: {sha256!r} is not a sha256 (64 hex digits)",
                reason="bad sha256",
                permanent=True,
                artifact=label,
            )
    label = label or os.path.basename(urlsplit(urls[0]).path) or redact_url(urls[0])

    def stored() -> FetchResult | None:
        if sha256 is not None and store.has(sha256, size):
            path = store.blob_path(sha256)
            return FetchResult(sha256, path.stat().st_size, "", path, 0)
        return None

    if (hit := stored()) is not None:
        return hit
    candidates: list[str] = []
    for url in urls:
        url = rewrite_url(url, policy.mirrors)
        if url not in candidates:
            candidates.append(url)
    # Every url is checked before any connection is made.
    for url in candidates:
        try:
            check_url_allowed(url, allow_http=policy.allow_http)
        except FetchError as exc:
            exc.args = (f"{label}: {exc}",)
            exc.artifact = label
            raise
    key = key or sha256 or hashlib.sha256(urls[0].encode()).hexdigest()

    def download(private: bool, defer: bool = False) -> Download:
        return Download(
            store,
            key,
            sha256=sha256,
            size=size,
            policy=policy,
            headers=headers,
            progress=progress,
            verify=verify,
            label=label,
            private=private,
            mirror_hint=mirror_hint,
            defer=defer,
        )

    if size is not None and size <= INLINE_MAX:
        # Small files skip the lock and the shared partial: two builds that want
        # the same small file at once both download it (a few kilobytes) and the
        # store keeps the first copy. The lock costs 3 system calls and the
        # resumable partial 5 more per file; a repo of 200 JSON files felt them.
        small = download(private=True, defer=not commit)
        try:
            return small.run(candidates)
        except BaseException:
            with contextlib.suppress(OSError):
                small.part.unlink(missing_ok=True)  # a failed download leaves nothing
            raise
    with store.lock(key):
        # Another thread or process may have finished it while we waited.
        if (hit := stored()) is not None:
            return hit
        return download(private=False).run(candidates)
