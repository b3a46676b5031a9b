"""Where a one-stream body goes: written and hashed, on a helper thread for large files."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from builder.fetch.policy import WRITEBACK_STEP
from builder.store import start_writeback, write_all


class Sink:
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
                if end - self._flushed >= WRITEBACK_STEP:
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


class InlineSink:
    """What :class:`Sink` does, in the caller's thread: for small bodies.

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


def raw_reader(response: Any) -> Callable[[bytearray], int] | None:
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
