"""HTTP engine: download one file into the store, verified, resumable, patient.

Used by the ``url`` source directly and by the ``hf`` / ``torchvision`` sources
for each file. What it does that a plain HTTP client does not:

* resume from ``store.partial_path(key)`` with ``Range: bytes=N-`` (and
  ``If-Range`` when the server gave a validator), so a killed build or a
  connection reset costs only the missing bytes;
* retry connection errors, resets, stalls, truncated bodies, 408, 429 and 5xx
  with exponential backoff and jitter, honouring ``Retry-After``;
* a stall timeout (no bytes for N seconds) distinct from the total timeout;
* sha256 computed while streaming, size checked, then ``verify(path)``; only then
  does the file get its name in the store;
* mirrors tried in order; ``--mirror FROM=TO`` prefix rewrites;
* plain ``http://`` refused except to loopback hosts or with ``allow_http``, also
  for redirect targets (checked before the redirect is followed).

Credentials: ``headers`` (e.g. ``Authorization``) are never logged and never put
in error messages, and are dropped when a redirect leaves the host
(``builder.httpclient``, urllib3 with the parts of requests we need).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import ipaddress
import json
import logging
import os
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from builder import httpclient
from builder.credentials import redact_url
from builder.errors import BuildError, FetchError, IntegrityError, StoreError
from builder.store import Store, start_writeback, write_all

log = logging.getLogger(__name__)

#: Bodies up to this size are read with urllib3's stream() and written inline (no helper
#: thread), and get no resume record: resuming a few kilobytes saves nothing.
_INLINE_MAX = 256 << 10
#: Start writing a large download to disk every this many bytes (see start_writeback).
_WRITEBACK_STEP = 8 << 20
#: Buffers in a large download's pool (queue depth + one being read + one being written).
_POOL_BUFFERS = 6
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.I)


@dataclass
class FetchPolicy:
    """How patient and how strict a download is.

    Attributes:
        retries: attempts per URL that may fail in a row without new bytes.
        backoff: first delay between attempts, seconds (doubles each time, with jitter).
        backoff_max: longest delay between attempts.
        stall_timeout: seconds without a single byte before the connection is
            dropped and the download resumed (not a limit on the whole download).
        total_timeout: limit on the whole fetch call, all URLs and retries; None: none.
        connect_timeout: seconds to establish a connection.
        allow_http: allow plain http to non-loopback hosts (``--allow-http``).
        mirrors: URL prefix rewrites ``(FROM, TO)``, first match wins (``--mirror FROM=TO``).
        chunk_size: bytes read and written per step.
        retry_after_max: cap on a server's ``Retry-After``.
        integrity_retries: full re-downloads of one URL after a hash mismatch
            before moving to the next URL (a flaky proxy can mangle bytes once).
        connections: parts a large file is fetched in at once (``--connections``;
            1: one stream always); see builder.segmented.
        segment_threshold: files of this size or more are fetched in parts (when
            the server can: ranges, size, a strong ETag).
        max_connections: open connections of the whole build at once, one per
            request, single stream or part (so ``--jobs`` x parts stays bounded).
        one_stream_above: bytes/s of one connection (the first 4 MiB, timed) above
            which a large file stays one stream: parts only pay where one
            connection cannot fill the link (loopback, a LAN or a fast mirror
            would only pay their CPU).
    """

    retries: int = 6
    backoff: float = 0.5
    backoff_max: float = 30.0
    stall_timeout: float = 30.0
    total_timeout: float | None = None
    connect_timeout: float = 15.0
    allow_http: bool = False
    mirrors: Sequence[tuple[str, str]] = ()
    chunk_size: int = 1 << 20
    retry_after_max: float = 300.0
    integrity_retries: int = 1
    connections: int = 8
    segment_threshold: int = 64 << 20
    max_connections: int = 16
    one_stream_above: float = 150e6
    _slots: threading.BoundedSemaphore | None = field(default=None, init=False, repr=False,
                                                      compare=False)

    def __post_init__(self) -> None:
        # One per policy object: a build copies its policy (dataclasses.replace), so
        # every build has its own cap, shared by all of its downloads.
        self._slots = threading.BoundedSemaphore(max(1, self.max_connections))

    def connection_slots(self) -> threading.BoundedSemaphore:
        """Use as ``with policy.connection_slots():`` around one request (a slot of the cap)."""
        return self._slots


@dataclass
class FetchResult:
    """One verified file in the store."""

    sha256: str
    size: int
    url: str  # the URL (after mirror rewrite) that served the bytes; "" if already stored
    path: Path  # the store blob
    fetched_bytes: int  # bytes received over the network by this call
    retries: int = 0  # attempts that failed and were tried again
    resumed_bytes: int = 0  # bytes kept from a partial download instead of fetched again
    #: fetch(commit=False) of a small file: ``path`` is a verified scratch file, neither
    #: durable nor named yet; pass it to Store.commit()
    pending: bool = False


# --- URLs ----------------------------------------------------------------


def parse_mirror(spec: str) -> tuple[str, str]:
    """Parse a ``--mirror FROM=TO`` value into ``(FROM, TO)``.

    Raises:
        ValueError: not of the form FROM=TO with both sides non-empty.
    """
    src, sep, dst = spec.partition("=")
    if not sep or not src.strip() or not dst.strip():
        raise ValueError(
            f"--mirror {spec!r}: expected FROM=TO, e.g. "
            "--mirror https://download.pytorch.org/=https://mirror.example.com/pytorch/"
        )
    return src.strip(), dst.strip()


def rewrite_url(url: str, mirrors: Sequence[tuple[str, str]]) -> str:
    """Apply the first mirror whose FROM prefix starts ``url``; unchanged if none does."""
    for src, dst in mirrors:
        if url.startswith(src):
            return dst + url[len(src) :]
    return url


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url_allowed(url: str, *, allow_http: bool) -> None:
    """Refuse URLs we must not connect to, before any connection is made.

    https is always allowed; plain http only to loopback hosts (127.0.0.0/8,
    ::1, localhost) unless ``allow_http``.

    Raises:
        FetchError: (permanent) naming the URL and the way out.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise FetchError(
            f"invalid url {shown}: {exc}", url=shown, reason="bad url", permanent=True
        ) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise FetchError(
            f"unsupported url {shown}: only http(s)://HOST/... urls can be fetched",
            url=shown,
            reason="bad url",
            permanent=True,
        )
    if scheme == "http" and not allow_http and not _is_loopback(host):
        raise FetchError(
            f"refusing plain http to {host} ({shown}): use an https url, or pass "
            "--allow-http if you trust this network (bytes are still checked against sha256)",
            url=shown,
            reason="http refused",
            permanent=True,
        )


# --- one download ----------------------------------------------------------


class _Transient(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, *, progressed: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed
        self.retry_after = retry_after


class _OneStream(Exception):
    """The server cannot serve parts: fetch this file in one stream."""


class _Mismatch(Exception):
    """The bytes from this URL are wrong (hash, size or verify callback)."""

    def __init__(self, reason: str, *, actual: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.actual = actual


def _parse_retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes A-B/T`` -> (A, B, T); ``bytes */T`` -> (None, None, T); unknowns None."""
    m = _CONTENT_RANGE_RE.match(value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total not in (None, "*") else None,
    )


class _Sink:
    """Writes and hashes chunks on a helper thread while the caller reads the socket.

    Receiving, hashing and writing each run near 1 GB/s on one core; overlapping
    them roughly doubles the throughput of a fast link. Both ``write`` and
    ``sha256.update`` release the GIL on large buffers.

    With ``buffers``, the sink also owns a small pool of reusable buffers: the
    reader fills one with ``readinto`` (``buffer()``), queues it (``put``) and the
    sink returns it to the pool once written and hashed. That saves the copies
    and allocations of reading through urllib3 (~0.2 CPU s per GB here).
    """

    def __init__(
        self,
        file: Any,
        digest: Any,
        *,
        buffers: int = 0,
        buffer_size: int = 0,
        offset: int = 0,
    ) -> None:
        self._file = file
        self._digest = digest
        self._start = offset  # file offset of the first byte this sink writes
        self._flushed = offset  # file offset up to which writeback was started
        self._queue: queue.Queue[tuple[Any, bytearray | None] | None] = queue.Queue(maxsize=4)
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self._free.put(bytearray(buffer_size))
        self._error: OSError | None = None
        self._written = 0
        self._thread = threading.Thread(target=self._run, name="fetch-writer", daemon=True)
        self._thread.start()

    def buffer(self) -> bytearray:
        """A free buffer of the pool (waits while the writer is behind)."""
        self.raise_error()
        return self._free.get()

    def put(self, chunk: Any, buf: bytearray | None = None) -> None:
        """Queue ``chunk`` (bytes, or a view of ``buf``, which returns to the pool after)."""
        self.raise_error()
        self._queue.put((chunk, buf))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            chunk, buf = item
            try:
                if self._error is not None:
                    continue  # drain after a failure
                try:
                    write_all(self._file, chunk)
                except OSError as exc:
                    self._error = exc
                    continue
                self._digest.update(chunk)
                self._written += len(chunk)
                end = self._start + self._written
                if end - self._flushed >= _WRITEBACK_STEP:
                    # Overlap the disk with the download: see start_writeback.
                    start_writeback(self._file.fileno(), self._flushed, end - self._flushed)
                    self._flushed = end
            finally:
                if buf is not None:
                    self._free.put(buf)

    def close(self) -> int:
        """Wait for every queued chunk; returns the bytes written (and hashed)."""
        self._queue.put(None)
        self._thread.join()
        return self._written

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error


class _InlineSink:
    """What :class:`_Sink` does, in the caller's thread: for small bodies.

    A thread per file costs more than hashing a few kilobytes (thread start and
    join under load: ~1-2 ms a file, which a repo of 200 JSON files feels).
    """

    def __init__(self, file: Any, digest: Any) -> None:
        self._file = file
        self._digest = digest
        self._written = 0

    def put(self, chunk: Any, buf: bytearray | None = None) -> None:
        write_all(self._file, chunk)  # a write error goes straight to the caller
        self._digest.update(chunk)
        self._written += len(chunk)

    def close(self) -> int:
        return self._written

    def raise_error(self) -> None:
        """Nothing is pending: put() raised any write error itself."""


def _raw_reader(response: Any) -> Callable[[bytearray], int] | None:
    """``readinto`` of the undecoded body stream, or None where it cannot be used.

    Only for identity-encoded bodies (we ask for ``Accept-Encoding: identity``; a
    server that compresses anyway goes through urllib3's ``stream()``, which decodes).
    ``http.client`` handles chunked bodies and stops at ``Content-Length``.
    """
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        return None
    fp = getattr(response, "_fp", None)  # urllib3's response -> http.client's
    readinto = getattr(fp, "readinto", None)
    return readinto if callable(readinto) else None


class _Download:
    """State of one fetch() call: the partial file, its running hash, progress."""

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
        self._hash: Any = None  # running sha256 of the first _hashed bytes of the partial
        self._hashed = 0
        #: the furthest byte any attempt of this call reached (or an earlier run left):
        #: only bytes beyond it are progress, so a server that restarts every
        #: response from 0 and drops it early cannot keep the retries going forever
        self.furthest = self._bytes_on_disk()

    # -- bookkeeping --

    def _report(self, n: int) -> None:
        if n and self.progress is not None:
            self.progress(n)
        self.reported += n

    def _bytes_on_disk(self) -> int:
        """Bytes an earlier run left: the partial's length, or, for a parts partial (made
        full size up front), the sum its resume record gives."""
        parts = None if self.private else self._read_meta().get("parts")
        if isinstance(parts, list):
            try:
                return sum(int(p[2]) for p in parts)
            except (TypeError, ValueError, IndexError):
                return 0
        return self._partial_size()

    def _partial_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def _discard_partial(self) -> None:
        for path in (self.part, self.meta):
            path.unlink(missing_ok=True)
        self._hash, self._hashed = None, 0
        self._report(-self.reported)

    def _read_meta(self) -> dict[str, str]:
        try:
            return json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}

    def _write_meta(self, url: str, response: Any) -> None:
        etag = response.headers.get("ETag", "")
        validator = etag if etag and not etag.startswith("W/") else ""
        validator = validator or response.headers.get("Last-Modified", "")
        try:
            self.meta.write_text(json.dumps({"url": url, "validator": validator}))
        except OSError:
            pass  # only an optimisation for resuming

    def _hash_partial(self) -> None:
        """Bring the running hash up to the partial's current length (resume)."""
        length = self._partial_size()
        if self._hash is None or self._hashed > length:
            self._hash, self._hashed = hashlib.sha256(), 0
        if self._hashed == length:
            return
        with open(self.part, "rb", buffering=0) as f:
            f.seek(self._hashed)
            while chunk := f.read(self.policy.chunk_size):
                self._hash.update(chunk)
                self._hashed += len(chunk)

    def _advanced(self, end: int) -> bool:
        """True when an attempt that reached byte ``end`` got further than any before it."""
        if end > self.furthest:
            self.furthest = end
            return True
        return False

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _timeout_error(self, url: str) -> FetchError:
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

    def run(self, urls: Sequence[str]) -> FetchResult:
        self._report(self._bytes_on_disk())  # bytes from an earlier run count
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
        if self.sha256 is None and self._partial_size() and self._read_meta().get("url") != url:
            # Without a hash to check at the end, only bytes from this very URL may be resumed.
            self._discard_partial()
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise self._timeout_error(url)
            try:
                if self._segmentable():
                    complete = self._attempt_segmented(url)
                else:
                    with self.policy.connection_slots():
                        complete = self._attempt(url)
                if complete:
                    return self._finish(url)
            except _OneStream:
                continue  # the server cannot do parts: the next attempt is one stream
            except _Transient as exc:
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
                remaining = self._remaining()
                if remaining is not None and delay >= remaining:
                    raise self._timeout_error(url) from None
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
            except _Mismatch as exc:
                self._discard_partial()
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
        return (not self.private and not self.one_stream and self.size is not None
                and self.size >= self.policy.segment_threshold and self.policy.connections > 1)

    def _attempt_segmented(self, url: str) -> bool:
        """The whole file in parts (builder.segmented); True when every byte is on disk."""
        import http.client

        import urllib3

        from builder import segmented

        shown = redact_url(url)
        allow_http = self.policy.allow_http
        try:
            outcome = segmented.fetch_parts(
                url=url, partial=self.part, record_path=self.meta, size=self.size,
                policy=self.policy, headers_for=self._headers_for, label=self.label,
                check=lambda target: check_url_allowed(target, allow_http=allow_http),
                progress=self._report, new_digest=hashlib.sha256, deadline=self.deadline,
            )
        except segmented.OneStreamIsEnough as exc:
            log.info("%s: %s: one stream (%s)", self.label, shown, exc)
            self.one_stream = True
            self.fetched += exc.received
            self._advanced(self._partial_size())
            raise _OneStream() from None
        except segmented.NoRanges as exc:
            log.info("%s: %s: one stream instead of parts (%s)", self.label, shown, exc)
            self.one_stream = True
            if segmented.read_record(self.meta).get("parts"):
                self._discard_partial()  # a parts layout cannot be resumed as one stream
            raise _OneStream() from None
        except segmented.Changed as exc:
            self._discard_partial()
            raise _Transient(f"{exc}; starting over") from None
        except segmented.BadAnswer as exc:
            raise _Mismatch(str(exc)) from None
        except segmented.PartFailed as exc:
            if exc.permanent:
                raise self._permanent(f"{exc.reason} from {shown}", shown, exc.reason) from None
            raise _Transient(exc.reason,
                             progressed=self._advanced(getattr(exc, "done", 0))) from None
        except FetchError as exc:  # a redirect to a refused url
            raise self._permanent(
                f"{shown} redirected to a refused url: {exc}", shown, "redirect refused"
            ) from None
        except httpclient.TooManyRedirects as exc:
            raise self._permanent(f"{shown}: {exc}", shown, "redirects") from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            raise _Transient(_describe_network_error(exc, self.policy.stall_timeout)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
                what = "disk full" if exc.errno == errno.ENOSPC else f"cannot write ({exc.strerror})"
                raise StoreError(
                    f"{self.label}: {what} while downloading into {self.part}; free space or "
                    "point the store elsewhere with --store DIR / $OFFLINE_BUNDLE_STORE",
                    artifact=self.label,
                ) from None
            raise _Transient(_describe_network_error(exc, self.policy.stall_timeout)) from None
        self._hash, self._hashed = outcome.digest, outcome.hashed
        self.fetched += outcome.received
        self.retries += outcome.retries
        self.resumed_bytes += outcome.resumed
        self._advanced(self.size)
        return True

    def _headers_for(self, url: str) -> Mapping[str, str]:
        return self.headers(url) if callable(self.headers) else self.headers

    def _permanent(self, message: str, shown_url: str, reason: str) -> FetchError:
        """A failure no retry of this url fixes (the next mirror may)."""
        return FetchError(
            message, url=shown_url, reason=reason, permanent=True, artifact=self.label
        )

    def _attempt(self, url: str) -> bool:
        """One HTTP request; returns True when the partial holds the whole file."""
        import http.client

        import urllib3

        shown = redact_url(url)
        offset = self._partial_size()
        if self.size is not None and offset > self.size:
            self._discard_partial()
            offset = 0
        headers = dict(self._headers_for(url))
        headers["Accept-Encoding"] = "identity"  # byte offsets must be file offsets
        if offset:
            headers["Range"] = f"bytes={offset}-"
            meta = self._read_meta()
            if meta.get("validator") and meta.get("url") == url:
                headers["If-Range"] = meta["validator"]
        read_timeout = self.policy.stall_timeout
        remaining = self._remaining()
        if remaining is not None:
            read_timeout = max(0.01, min(read_timeout, remaining))
        allow_http = self.policy.allow_http
        try:
            response = httpclient.client().get(
                url,
                headers,
                connect_timeout=self.policy.connect_timeout,
                read_timeout=read_timeout,
                check=lambda target: check_url_allowed(target, allow_http=allow_http),
            )
        except FetchError as exc:  # a redirect to a refused url
            raise self._permanent(
                f"{shown} redirected to a refused url: {exc}", shown, "redirect refused"
            ) from None
        except httpclient.TooManyRedirects as exc:
            raise self._permanent(f"{shown}: {exc}", shown, "redirects") from None
        except urllib3.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise self._permanent(
                    f"TLS certificate of {shown} not trusted; set REQUESTS_CA_BUNDLE "
                    "to your CA file if a corporate proxy re-signs traffic",
                    shown,
                    "tls",
                ) from None
            raise _Transient(f"TLS error ({type(exc).__name__})") from None
        except urllib3.exceptions.LocationValueError as exc:
            raise self._permanent(
                f"cannot request {shown}: {type(exc).__name__}", shown, "bad request"
            ) from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise _Transient(_describe_network_error(exc, read_timeout)) from None

        self._body_read = False
        try:
            status = response.status
            if status == 416 and offset:
                # The range starts at or past the end: the partial is complete, or bad.
                total = _parse_content_range(response.headers.get("Content-Range"))[2]
                expected = self.size if self.size is not None else total
                if expected is not None and offset == expected:
                    return True
                self._discard_partial()
                raise _Transient("range not satisfiable, starting over")
            if status in (408, 429) or status >= 500:
                retry_after = _parse_retry_after(
                    response.headers.get("Retry-After"), self.policy.retry_after_max
                )
                raise _Transient(f"HTTP {status}", retry_after=retry_after)
            if status not in (200, 206):
                raise self._permanent(
                    f"HTTP {status} {response.reason or ''} from {shown}".replace("  ", " "),
                    shown,
                    f"HTTP {status}",
                )
            if status == 206:
                start, _end, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != offset:
                    self._discard_partial()
                    raise _Transient("server resumed at the wrong offset, starting over")
                self.resumed_bytes += offset
                log.warning("resume: %s: resuming at byte %d%s", self.label, offset,
                            f" of {total}" if total else "")
            else:
                if offset:
                    # 200 to a Range request: the server restarts (no ranges, or the
                    # file changed behind If-Range), so do we.
                    self._discard_partial()
                    offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if not self.private and (total is None or total > _INLINE_MAX):
                    self._write_meta(url, response)
            if self.size is not None and total is not None and total != self.size:
                raise _Mismatch(f"server reports {total} bytes, expected {self.size}")
            expected_total = self.size if self.size is not None else total
            if offset:
                self._hash_partial()
            else:
                self._hash, self._hashed = hashlib.sha256(), 0
            received = self._stream(response, offset, expected_total, url, read_timeout)
        finally:
            httpclient.release(response, body_read=self._body_read)
        if expected_total is not None and offset + received < expected_total:
            raise _Transient(
                f"connection closed after {offset + received} of {expected_total} bytes",
                progressed=self._advanced(offset + received),
            )
        return True

    def _stream(
        self, response: Any, offset: int, expected_total: int | None, url: str, read_timeout: float
    ) -> int:
        """Append the body to the partial, hashing as it goes; returns bytes received."""
        import http.client

        import urllib3

        received = 0
        small = expected_total is not None and expected_total - offset <= _INLINE_MAX
        readinto = None if small else _raw_reader(response)
        chunks = None if readinto is not None else response.stream(self.policy.chunk_size)
        network_errors = (
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
            ValueError,  # reading a stream the server already closed
        )
        try:
            # Unbuffered: every chunk is in the kernel once write() returns, so a
            # SIGKILL leaves a partial that the next run resumes.
            with open(self.part, "ab" if offset else "wb", buffering=0) as f:
                if small:
                    sink: _Sink | _InlineSink = _InlineSink(f, self._hash)
                elif readinto is not None:
                    sink = _Sink(
                        f,
                        self._hash,
                        buffers=_POOL_BUFFERS,
                        buffer_size=self.policy.chunk_size,
                        offset=offset,
                    )
                else:
                    sink = _Sink(f, self._hash, offset=offset)
                try:
                    while True:
                        buf = None
                        try:
                            if readinto is not None:
                                buf = sink.buffer()
                                n = readinto(buf)
                                chunk: Any = memoryview(buf)[:n] if n else None
                            else:
                                chunk = next(chunks, None)
                        except network_errors as exc:
                            if isinstance(exc, OSError):
                                sink.raise_error()  # a write error of the helper thread wins
                            raise _Transient(
                                _describe_network_error(exc, read_timeout),
                                progressed=self._advanced(offset + received),
                            ) from None
                        if not chunk:
                            # The whole body was read: the connection goes back to the
                            # pool, or the next file pays a new one (and a cold TCP
                            # window, which also makes a reset lose more bytes).
                            self._body_read = expected_total is None or (
                                offset + received == expected_total
                            )
                            break
                        if (
                            expected_total is not None
                            and offset + received + len(chunk) > expected_total
                        ):
                            raise _Mismatch(
                                f"server sent more than the expected {expected_total} bytes"
                            )
                        sink.put(chunk, buf)
                        received += len(chunk)
                        self.fetched += len(chunk)
                        self._report(len(chunk))
                        remaining = self._remaining()
                        if remaining is not None and remaining <= 0:
                            raise self._timeout_error(url)
                finally:
                    # Whatever happened, the partial and the running hash must agree
                    # before anyone looks at them again.
                    self._hashed += sink.close()
                sink.raise_error()
        except OSError as exc:
            # Writing the partial failed (disk full, store unwritable): no retry helps.
            self._discard_partial()
            what = "disk full" if exc.errno == errno.ENOSPC else f"cannot write ({exc.strerror})"
            raise StoreError(
                f"{self.label}: {what} while downloading into {self.part}; free space or "
                "point the store elsewhere with --store DIR / $OFFLINE_BUNDLE_STORE",
                artifact=self.label,
            ) from None
        return received

    def _finish(self, url: str) -> FetchResult:
        """Check the complete partial and move it into the store."""
        self._hash_partial()
        length = self._partial_size()
        if self.size is not None and length != self.size:
            raise _Mismatch(f"got {length} bytes, expected {self.size}")
        actual = self._hash.hexdigest()
        if self.sha256 is not None and actual != self.sha256:
            raise _Mismatch(f"sha256 {actual} != expected {self.sha256}", actual=actual)
        if self.verify is not None:
            try:
                self.verify(self.part)
            except IntegrityError as exc:
                raise _Mismatch(f"verification failed: {exc}", actual=actual) from None
        if self.defer:
            # Verified, not yet durable nor named: Store.commit() makes a whole group
            # durable at once (one syncfs) and then names it.
            self._hash, self._hashed = None, 0
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
        self._hash, self._hashed = None, 0
        return FetchResult(
            sha256=actual, size=length, url=url, path=path, fetched_bytes=self.fetched,
            retries=self.retries, resumed_bytes=self.resumed_bytes,
        )


def _describe_network_error(exc: BaseException, read_timeout: float) -> str:
    text = str(exc).lower()
    if "read timed out" in text or ("timed out" in text and "connect" not in text):
        return f"stalled (no bytes for {read_timeout:g}s)"
    if "connecttimeout" in type(exc).__name__.lower() or "connect timeout" in text:
        return "connect timeout"
    if "reset" in text or "aborted" in text:
        return "connection reset"
    if "incompleteread" in text or "prematurely" in text or "incomplete" in text:
        return "body truncated"
    if "refused" in text:
        return "connection refused"
    if "resolve" in text or "name or service not known" in text:
        return "cannot resolve the host name (no network, or a typo in the url?)"
    return f"network error ({type(exc).__name__})"


# --- public entry point -----------------------------------------------------


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

    def download(private: bool, defer: bool = False) -> _Download:
        return _Download(
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

    if size is not None and size <= _INLINE_MAX:
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
