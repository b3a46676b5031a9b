"""The first request of a large file: where the parts come from, and is one stream enough?"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from builder.fetch import httpclient
from builder.fetch.outcomes import parse_content_range
from builder.fetch.parts import BadAnswer, NoRanges, PartFailed, Target

#: a first chunk slower than FetchPolicy.one_stream_above after this many bytes decides
#: for parts at once (the rest of it becomes a part like the others)
PROBE_DECIDES = 1 << 20


def strong(etag: str | None) -> str:
    return etag if etag and not etag.startswith("W/") else ""



@dataclass
class Handover:
    """A first request still open: it becomes part 0 and a worker reads the rest of it."""

    response: Any
    slot: threading.BoundedSemaphore  # held until the response is done with
    end: int  # the end of the range asked for (exclusive)


@dataclass
class Probe:
    """What the probe learned: where the parts come from, and how fast one connection is."""

    target: Target
    got: int  # bytes of the file it wrote at its start offset
    seconds: float
    handover: Handover | None = None  # set when it stopped early to decide for parts

    @property
    def rate(self) -> float:
        return self.got / max(self.seconds, 1e-6)


def probe(url: str, headers: Mapping[str, str], *, size: int, policy: Any,
          check: Callable[[str], None], start: int = 0, length: int = 1,
          validator: str = "", fd: int | None = None, slow_below: float = 0.0) -> Probe:
    """Ask for bytes ``start`` to ``start + length - 1``: the final URL after redirects,
    whether parts will work, and (written at their offset in ``fd``) the first bytes.

    With ``slow_below``, reading stops once a MiB has come at less than half that
    rate: the decision for parts is made, and waiting for the rest of the chunk
    would only keep the other connections idle. The open response is handed over
    (``Probe.handover``) to go on as part 0.

    Raises:
        NoRanges: not a 206 of the expected size with a strong ETag (or the file
            changed since ``validator``: the server sent it whole).
        PartFailed: the server answered with an error status.
        BadAnswer: a 206 for other bytes than asked for.
        urllib3 / OS errors of the connection, unchanged (builder.fetch retries them).
    """
    request = dict(headers)
    request.update({"Range": f"bytes={start}-{start + length - 1}", "Accept-Encoding": "identity"})
    if validator:
        request["If-Range"] = validator
    got = 0
    handover = None
    slot = policy.connection_slots()
    slot.acquire()
    try:
        response = httpclient.client().get(
            url, request, connect_timeout=policy.connect_timeout,
            read_timeout=policy.stall_timeout, check=check)
    except BaseException:
        slot.release()
        raise
    # The body's own time: the connection, redirects and first byte say little about
    # what one stream sustains.
    began = time.monotonic()
    body_read = False
    try:
        status = response.status
        first, _end, total = parse_content_range(response.headers.get("Content-Range"))
        etag = strong(response.headers.get("ETag"))
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if status == 206 and total == size and etag and encoding == "identity":
            if first != start:
                raise BadAnswer(f"asked for bytes {start}-, got Content-Range "
                                f"{response.headers.get('Content-Range')}")
            readinto = response._fp.readinto
            buf = bytearray(min(length, 256 << 10))
            while got < length:
                n = readinto(buf)
                if not n:
                    break
                if fd is not None:
                    os.pwrite(fd, memoryview(buf)[:n], start + got)
                got += n
                rate = got / max(time.monotonic() - began, 1e-6)
                # Clearly slow (below half the bar) after a MiB: no need to wait for more.
                if slow_below and got < length and got >= PROBE_DECIDES and rate < slow_below / 2:
                    # Parts it is: this request goes on as part 0, in a worker.
                    handover = Handover(response, slot, start + length)
                    break
            body_read = handover is None
    finally:
        if handover is None:
            httpclient.release(response, body_read=body_read and got >= length)
            slot.release()
    seconds = time.monotonic() - began
    if status in (408, 429) or status >= 500:
        raise PartFailed(f"HTTP {status}", status=status)
    if status >= 400:
        raise PartFailed(f"HTTP {status}", permanent=True, status=status)
    if status != 206 or total != size or not etag or encoding != "identity":
        raise NoRanges(f"HTTP {status}, size {total}, validator {etag or 'none'}")
    target = Target(getattr(response, "final_url", url),
                    dict(getattr(response, "final_headers", headers)), size, etag)
    return Probe(target, got, seconds, handover)

