"""How patient and strict a download is (FetchPolicy), and what it gives back (FetchResult)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Bodies up to this size are read with urllib3's stream() and written inline (no helper
#: thread), and get no resume record: resuming a few kilobytes saves nothing.
INLINE_MAX = 256 << 10
#: Start writing a large download to disk every this many bytes (see start_writeback).
WRITEBACK_STEP = 8 << 20
#: Buffers in a large download's pool (queue depth + one being read + one being written).
POOL_BUFFERS = 6


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
            1: one stream always); see builder.fetch.segmented.
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

