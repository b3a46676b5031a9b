"""The state of one download: partial file, resume record, running hash, counters."""

from __future__ import annotations

import errno
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from builder.credentials import redact_url
from builder.errors import FetchError, StoreError
from builder.fetch.policy import FetchPolicy
from builder.store import Store


class DownloadState:
    """State of one fetch() call: the partial file, its running hash, counters, progress.

    What every kind of attempt (one stream: builder.fetch.stream; parts:
    builder.fetch.segmented) reads and updates; the retry loop around them is
    builder.fetch.download.Download."""

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        sha256: str | None,
        size: int | None,
        policy: FetchPolicy,
        headers: Mapping[str, str] | Callable[[str], Mapping[str, str]] | None,
        progress: Callable[[int], None] | None,
        verify: Callable[[Path], None] | None,
        label: str,
        private: bool = False,
        mirror_hint: str | None = None,
        defer: bool = False,
    ) -> None:
        self.store = store
        self.mirror_hint = mirror_hint
        self.defer = defer
        self.private = private
        self.sha256 = sha256
        self.size = size
        self.policy = policy
        #: request headers, or a function of the URL (after --mirror rewrites) giving them
        self.headers = headers if callable(headers) else dict(headers or {})
        self.progress = progress
        self.verify = verify
        self.label = label
        if private:
            # A small file: a scratch file of this call's own, no lock, no resume
            # record (resuming a few kilobytes saves nothing; see fetch()).
            self.part = store.root / "tmp" / f"{uuid.uuid4().hex}.part"
        else:
            self.part = store.partial_path(key)
        self.meta = self.part.with_name(self.part.name + ".json")
        self.deadline = (
            time.monotonic() + policy.total_timeout if policy.total_timeout is not None else None
        )
        self.fetched = 0  # bytes received over the network
        self.retries = 0  # failed attempts tried again (the build's summary counts them)
        self.one_stream = False  # the server cannot do parts: never try them again here
        self.resumed_bytes = 0  # bytes a Range request did not have to fetch again
        self.reported = 0  # bytes currently counted in the caller's progress
        self.hash: Any = None  # running sha256 of the first `hashed` bytes of the partial
        self.hashed = 0
        #: the furthest byte any attempt of this call reached (or an earlier run left):
        #: only bytes beyond it are progress, so a server that restarts every
        #: response from 0 and drops it early cannot keep the retries going forever
        self.furthest = self.bytes_on_disk()
        #: the last one-stream body was read to its end (its connection can be reused)
        self.body_read = False

    # -- bookkeeping --

    def report(self, n: int) -> None:
        if n and self.progress is not None:
            self.progress(n)
        self.reported += n

    def bytes_on_disk(self) -> int:
        """Bytes an earlier run left: the partial's length, or, for a parts partial (made
        full size up front), the sum its resume record gives."""
        parts = None if self.private else self.read_meta().get("parts")
        if isinstance(parts, list):
            try:
                return sum(int(p[2]) for p in parts)
            except (TypeError, ValueError, IndexError):
                return 0
        return self.partial_size()

    def partial_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def discard_partial(self) -> None:
        for path in (self.part, self.meta):
            path.unlink(missing_ok=True)
        self.hash, self.hashed = None, 0
        self.report(-self.reported)

    def may_segment(self, size: int) -> bool:
        """Whether a file of ``size`` bytes may be fetched in parts here."""
        return (not self.private and not self.one_stream and self.policy.connections > 1
                and size >= self.policy.segment_threshold)

    def read_meta(self) -> dict[str, str]:
        try:
            return json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}

    def write_meta(self, url: str, response: Any) -> None:
        etag = response.headers.get("ETag", "")
        validator = etag if etag and not etag.startswith("W/") else ""
        validator = validator or response.headers.get("Last-Modified", "")
        try:
            self.meta.write_text(json.dumps({"url": url, "validator": validator}))
        except OSError:
            pass  # only an optimisation for resuming

    def hash_partial(self) -> None:
        """Bring the running hash up to the partial's current length (resume)."""
        length = self.partial_size()
        if self.hash is None or self.hashed > length:
            self.hash, self.hashed = hashlib.sha256(), 0
        if self.hashed == length:
            return
        with open(self.part, "rb", buffering=0) as f:
            f.seek(self.hashed)
            while chunk := f.read(self.policy.chunk_size):
                self.hash.update(chunk)
                self.hashed += len(chunk)

    def advanced(self, end: int) -> bool:
        """True when an attempt that reached byte ``end`` got further than any before it."""
        if end > self.furthest:
            self.furthest = end
            return True
        return False

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def timeout_error(self, url: str) -> FetchError:
        return FetchError(
            f"{self.label}: gave up after the total timeout of {self.policy.total_timeout:g}s "
            f"({redact_url(url)}); "
            + (
                "rerun to try again"
                if self.private
                else "the partial download is kept and the next run resumes it"
            ),
            url=redact_url(url),
            reason="timeout",
            permanent=False,
            artifact=self.label,
        )

    # -- the loop --

    def headers_for(self, url: str) -> Mapping[str, str]:
        return self.headers(url) if callable(self.headers) else self.headers

    def permanent(self, message: str, shown_url: str, reason: str) -> FetchError:
        """A failure no retry of this url fixes (the next mirror may)."""
        return FetchError(
            message, url=shown_url, reason=reason, permanent=True, artifact=self.label
        )

    def write_failed(self, exc: OSError) -> StoreError:
        """The error for a partial that cannot be written (disk full, store unwritable):
        no retry helps, the user frees space or moves the store."""
        what = "disk full" if exc.errno == errno.ENOSPC else f"cannot write ({exc.strerror})"
        return StoreError(
            f"{self.label}: {what} while downloading into {self.part}; free space or "
            "point the store elsewhere with --store DIR / $OFFLINE_BUNDLE_STORE",
            artifact=self.label,
        )

    def redirect_failed(self, exc: Exception, shown_url: str) -> FetchError:
        """The permanent error for a redirect to a refused URL (a FetchError of the check)
        or one redirect too many (httpclient.TooManyRedirects)."""
        if isinstance(exc, FetchError):
            return self.permanent(f"{shown_url} redirected to a refused url: {exc}", shown_url,
                                  "redirect refused")
        return self.permanent(f"{shown_url}: {exc}", shown_url, "redirects")
