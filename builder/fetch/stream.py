"""One attempt over one connection: a request from the partial's end, the body appended.

Resumes with ``Range`` (and ``If-Range`` when the server gave a validator), reads
the body with ``readinto`` into pooled buffers that a helper thread writes and hashes
(:mod:`builder.fetch.sinks`), and tells the retry loop what happened through the
exceptions of :mod:`builder.fetch.outcomes`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from builder.credentials import redact_url
from builder.errors import FetchError
from builder.fetch import httpclient
from builder.fetch.outcomes import (
    Mismatch,
    Sized,
    Transient,
    describe_network_error,
    parse_content_range,
    parse_retry_after,
)
from builder.fetch.policy import INLINE_MAX, POOL_BUFFERS
from builder.fetch.sinks import InlineSink, Sink, raw_reader
from builder.fetch.state import DownloadState
from builder.fetch.urls import check_url_allowed

log = logging.getLogger(__name__)


def attempt(st: DownloadState, url: str) -> bool:
    """One HTTP request; returns True when the partial holds the whole file."""
    import http.client

    import urllib3

    shown = redact_url(url)
    offset = st.partial_size()
    if st.size is not None and offset > st.size:
        st.discard_partial()
        offset = 0
    headers = dict(st.headers_for(url))
    headers["Accept-Encoding"] = "identity"  # byte offsets must be file offsets
    if offset:
        headers["Range"] = f"bytes={offset}-"
        meta = st.read_meta()
        if meta.get("validator") and meta.get("url") == url:
            headers["If-Range"] = meta["validator"]
    read_timeout = st.policy.stall_timeout
    remaining = st.remaining()
    if remaining is not None:
        read_timeout = max(0.01, min(read_timeout, remaining))
    allow_http = st.policy.allow_http
    try:
        response = httpclient.client().get(
            url,
            headers,
            connect_timeout=st.policy.connect_timeout,
            read_timeout=read_timeout,
            check=lambda target: check_url_allowed(target, allow_http=allow_http),
        )
    except (FetchError, httpclient.TooManyRedirects) as exc:
        raise st.redirect_failed(exc, shown) from None
    except urllib3.exceptions.SSLError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise st.permanent(
                f"TLS certificate of {shown} not trusted; set REQUESTS_CA_BUNDLE "
                "to your CA file if a corporate proxy re-signs traffic",
                shown,
                "tls",
            ) from None
        raise Transient(f"TLS error ({type(exc).__name__})") from None
    except urllib3.exceptions.LocationValueError as exc:
        raise st.permanent(
            f"cannot request {shown}: {type(exc).__name__}", shown, "bad request"
        ) from None
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        raise Transient(describe_network_error(exc, read_timeout)) from None

    st.body_read = False
    try:
        status = response.status
        if status == 416 and offset:
            # The range starts at or past the end: the partial is complete, or bad.
            total = parse_content_range(response.headers.get("Content-Range"))[2]
            expected = st.size if st.size is not None else total
            if expected is not None and offset == expected:
                return True
            st.discard_partial()
            raise Transient("range not satisfiable, starting over")
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), st.policy.retry_after_max
            )
            raise Transient(f"HTTP {status}", retry_after=retry_after)
        if status not in (200, 206):
            raise st.permanent(
                f"HTTP {status} {response.reason or ''} from {shown}".replace("  ", " "),
                shown,
                f"HTTP {status}",
            )
        if status == 206:
            start, _end, total = parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                st.discard_partial()
                raise Transient("server resumed at the wrong offset, starting over")
            st.resumed_bytes += offset
            log.warning("resume: %s: resuming at byte %d%s", st.label, offset,
                        f" of {total}" if total else "")
        else:
            if offset:
                # 200 to a Range request: the server restarts (no ranges, or the
                # file changed behind If-Range), so do we.
                st.discard_partial()
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if st.size is None and total is not None and _rangeable(response) and st.may_segment(total):
                # A url artifact of no stated size is large, and the server does ranges:
                # nothing of this answer is read; parts may fill the link (a slow one).
                st.size = total
                raise Sized()
            if not st.private and (total is None or total > INLINE_MAX):
                st.write_meta(url, response)
        if st.size is not None and total is not None and total != st.size:
            raise Mismatch(f"server reports {total} bytes, expected {st.size}")
        expected_total = st.size if st.size is not None else total
        if offset:
            st.hash_partial()
        else:
            st.hash, st.hashed = hashlib.sha256(), 0
        received = _stream(st, response, offset, expected_total, url, read_timeout)
    finally:
        httpclient.release(response, body_read=st.body_read)
    if expected_total is not None and offset + received < expected_total:
        raise Transient(
            f"connection closed after {offset + received} of {expected_total} bytes",
            progressed=st.advanced(offset + received),
        )
    return True

def _rangeable(response: Any) -> bool:
    """The answer says ranges will work: ``Accept-Ranges: bytes``, a strong ETag, no
    content encoding (byte offsets are file offsets)."""
    etag = response.headers.get("ETag") or ""
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    return ("bytes" in (response.headers.get("Accept-Ranges") or "").lower()
            and bool(etag) and not etag.startswith("W/") and encoding == "identity")


def _stream(
    st: DownloadState, response: Any, offset: int, expected_total: int | None, url: str, read_timeout: float
) -> int:
    """Append the body to the partial, hashing as it goes; returns bytes received."""
    import http.client

    import urllib3

    received = 0
    small = expected_total is not None and expected_total - offset <= INLINE_MAX
    readinto = None if small else raw_reader(response)
    chunks = None if readinto is not None else response.stream(st.policy.chunk_size)
    network_errors = (
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
        ValueError,  # reading a stream the server already closed
    )
    try:
        # Unbuffered: every chunk is in the kernel once write() returns, so a
        # SIGKILL leaves a partial that the next run resumes.
        with open(st.part, "ab" if offset else "wb", buffering=0) as f:
            if small:
                sink: Sink | InlineSink = InlineSink(f, st.hash)
            elif readinto is not None:
                sink = Sink(
                    f,
                    st.hash,
                    buffers=POOL_BUFFERS,
                    buffer_size=st.policy.chunk_size,
                    offset=offset,
                )
            else:
                sink = Sink(f, st.hash, offset=offset)
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
                        raise Transient(
                            describe_network_error(exc, read_timeout),
                            progressed=st.advanced(offset + received),
                        ) from None
                    if not chunk:
                        # The whole body was read: the connection goes back to the
                        # pool, or the next file pays a new one (and a cold TCP
                        # window, which also makes a reset lose more bytes).
                        st.body_read = expected_total is None or (
                            offset + received == expected_total
                        )
                        break
                    if (
                        expected_total is not None
                        and offset + received + len(chunk) > expected_total
                    ):
                        raise Mismatch(
                            f"server sent more than the expected {expected_total} bytes"
                        )
                    sink.put(chunk, buf)
                    received += len(chunk)
                    st.fetched += len(chunk)
                    st.report(len(chunk))
                    remaining = st.remaining()
                    if remaining is not None and remaining <= 0:
                        raise st.timeout_error(url)
            finally:
                # Whatever happened, the partial and the running hash must agree
                # before anyone looks at them again.
                st.hashed += sink.close()
            sink.raise_error()
    except OSError as exc:
        # Writing the partial failed (disk full, store unwritable): no retry helps.
        st.discard_partial()
        raise st.write_failed(exc) from None
    return received
