"""The retry loop of one file: URLs in order, attempts with backoff, then verify and store.

Each attempt is one stream (:mod:`builder.fetch.stream`) or, for a large file on a
link one connection cannot fill, parts over several connections
(:mod:`builder.fetch.segmented`). A failure that brought new bytes starts the retry
count afresh; wrong bytes are fetched once more, then the next URL is tried.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from typing import NoReturn

from builder.credentials import redact_url
from builder.errors import BuildError, FetchError, IntegrityError, StoreError
from builder.fetch import segmented, stream
from builder.fetch.outcomes import Mismatch, OneStream, Sized, Transient
from builder.fetch.policy import FetchResult
from builder.fetch.state import DownloadState

log = logging.getLogger(__name__)


class Download(DownloadState):
    """One fetch() call: the retry loop over its URLs, and the verified result."""

    def run(self, urls: Sequence[str]) -> FetchResult:
        self.report(self.bytes_on_disk())  # bytes from an earlier run count
        failures: list[tuple[str, BuildError]] = []
        for i, url in enumerate(urls):
            try:
                return self._fetch_from(url)
            except FetchError as exc:
                if exc.reason == "timeout":
                    raise
                failures.append((url, exc))
                if i + 1 < len(urls):
                    log.warning("%s: %s; trying the next url", self.label, exc)
        self._raise_all_failed(failures)

    def _raise_all_failed(self, failures: list[tuple[str, BuildError]]) -> NoReturn:
        # Each inner message names its url; the label is said once, here.
        summary = "; ".join(str(e) for _, e in failures)
        last_url = redact_url(failures[-1][0])
        bad_bytes = [e for _, e in failures if isinstance(e, IntegrityError)]
        if bad_bytes:
            raise IntegrityError(
                f"{self.label}: downloaded bytes are wrong ({summary}); nothing was stored. "
                "Check the sha256 in the spec, or add a mirror that serves the right file",
                url=last_url,
                artifact=self.label,
                expected=self.sha256,
                actual=bad_bytes[-1].actual,
            )
        permanent = all(getattr(e, "permanent", False) for _, e in failures)
        mirror = self.mirror_hint or "add a mirror with --mirror FROM=TO"
        hint = (
            f"check the url in the spec, or {mirror}"
            if permanent
            else f"rerun to resume, or {mirror}"
        )
        raise FetchError(
            f"{self.label}: download failed: {summary}; {hint}",
            url=last_url,
            reason=getattr(failures[-1][1], "reason", "failed"),
            permanent=permanent,
            artifact=self.label,
        )

    def _fetch_from(self, url: str) -> FetchResult:
        shown = redact_url(url)
        attempts = 0
        mismatches = 0
        if self.sha256 is None and self.partial_size() and self.read_meta().get("url") != url:
            # Without a hash to check at the end, only bytes from this very URL may be resumed.
            self.discard_partial()
        if self.size is None and isinstance(self.read_meta().get("size"), int):
            # Parts of an earlier run of a file whose size its first answer gave: the
            # partial is full size with holes, and only its record says which.
            self.size = self.read_meta()["size"]
        while True:
            remaining = self.remaining()
            if remaining is not None and remaining <= 0:
                raise self.timeout_error(url)
            try:
                if self._segmentable():
                    complete = segmented.attempt(self, url)
                else:
                    with self.policy.connection_slots():
                        complete = stream.attempt(self, url)
                if complete:
                    return self._finish(url)
            except OneStream:
                continue  # the server cannot do parts: the next attempt is one stream
            except Sized:
                continue  # the first answer gave the size of a large file: parts next
            except Transient as exc:
                # A failure after new bytes (beyond the furthest point reached) starts
                # the count afresh: a 2 GB file over a link that drops every few
                # minutes still finishes; bytes received again do not count.
                attempts = 0 if exc.progressed else attempts + 1
                if attempts > self.policy.retries:
                    raise FetchError(
                        f"{exc.reason} from {shown}; {self.policy.retries} retries brought no "
                        f"new bytes (furthest: {self.furthest} bytes)",
                        url=shown,
                        reason=exc.reason,
                        permanent=False,
                        artifact=self.label,
                    ) from None
                delay = exc.retry_after
                if delay is None:
                    delay = min(
                        self.policy.backoff_max, self.policy.backoff * 2 ** max(0, attempts - 1)
                    )
                    delay *= 0.5 + random.random() / 2  # jitter: builds sharing a server spread out
                remaining = self.remaining()
                if remaining is not None and delay >= remaining:
                    raise self.timeout_error(url) from None
                # One line per retry, shown by default (bundle build -q hides it).
                self.retries += 1
                log.warning(
                    "retry: %s: %s from %s; attempt %d/%d in %.1fs",
                    self.label,
                    exc.reason,
                    shown,
                    attempts + 1,
                    self.policy.retries + 1,
                    delay,
                )
                time.sleep(delay)
            except Mismatch as exc:
                self.discard_partial()
                mismatches += 1
                if mismatches > self.policy.integrity_retries:
                    raise IntegrityError(
                        f"{exc.reason} from {shown}",
                        url=shown,
                        reason=exc.reason,
                        artifact=self.label,
                        expected=self.sha256,
                        actual=exc.actual,
                    ) from None
                log.warning("%s: %s from %s; downloading it again", self.label, exc.reason, shown)

    def _segmentable(self) -> bool:
        return self.size is not None and self.may_segment(self.size)

    def _finish(self, url: str) -> FetchResult:
        """Check the complete partial and move it into the store."""
        self.hash_partial()
        length = self.partial_size()
        if self.size is not None and length != self.size:
            raise Mismatch(f"got {length} bytes, expected {self.size}")
        actual = self.hash.hexdigest()
        if self.sha256 is not None and actual != self.sha256:
            raise Mismatch(f"sha256 {actual} != expected {self.sha256}", actual=actual)
        if self.verify is not None:
            try:
                self.verify(self.part)
            except IntegrityError as exc:
                raise Mismatch(f"verification failed: {exc}", actual=actual) from None
        if self.defer:
            # Verified, not yet durable nor named: Store.commit() makes a whole group
            # durable at once (one syncfs) and then names it.
            self.hash, self.hashed = None, 0
            return FetchResult(
                sha256=actual, size=length, url=url, path=self.part, fetched_bytes=self.fetched,
                retries=self.retries, resumed_bytes=self.resumed_bytes, pending=True,
            )
        # The blob will be trusted by name from now on (has() never re-hashes), so
        # its bytes must be on disk before the rename that names it.
        try:
            fd = os.open(self.part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"{self.label}: cannot flush {self.part}: {exc}") from None
        path = self.store.add_verified(self.part, actual)
        if not self.private:
            self.meta.unlink(missing_ok=True)
        self.hash, self.hashed = None, 0
        return FetchResult(
            sha256=actual, size=length, url=url, path=path, fetched_bytes=self.fetched,
            retries=self.retries, resumed_bytes=self.resumed_bytes,
        )

