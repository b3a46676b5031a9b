"""Segmented download: one large file over several connections, each part resumable.

CDN edges and long paths cap a single TCP stream (40 MB/s is common), so one
connection leaves most of a fast link idle. builder.fetch.download hands a file of known
size above ``FetchPolicy.segment_threshold`` to :func:`fetch_parts` when the
server answers a ranged request with 206, the file's size and a strong
validator (an ETag that is not ``W/``):

* the first 4 MiB come in one request, which follows the redirects once (the
  Hub's resolve URL -> a signed CDN URL) and is timed: when that one connection
  is faster than ``FetchPolicy.one_stream_above`` (loopback, a LAN, a fast
  mirror), parts would only cost CPU, and :class:`OneStreamIsEnough` sends the
  rest to the one-stream path, resuming after those bytes; otherwise every part
  ranges the final URL;
* the partial file is made full size up front; it is cut into eight equal parts
  per connection (at least 1 MiB each) that ``connections`` workers take in file order,
  each written at its own offset (``pwrite``) with its own retries: a 500, a
  reset or a stall in one part re-fetches only that part's missing bytes;
* a worker that finishes early takes the back half of the largest part still
  running, so one slow connection does not hold up the end;
* a resume record (the partial's ``.json`` sidecar) keeps every part's progress,
  rewritten at most twice a second: after a kill the rerun fetches only what is
  missing, give or take the last half second;
* the sha256 is computed by a thread that follows the contiguous prefix as it
  completes, reading back from the page cache (no second read from disk);
  builder.fetch verifies it and fsyncs the file before it gets its name;
* every part sends ``If-Range`` with the validator and checks the answer's: a
  file that changed on the server between parts raises :class:`Changed` (start
  over); a server that ignores ranges (200), gives no size or only a weak
  validator raises :class:`NoRanges` (download in one stream instead);
* a 403 or 410 in the middle (an expired signed URL) probes the original URL
  again for a fresh one;
* every request holds one of the build's connection slots
  (``FetchPolicy.connection_slots``), so ``--jobs`` x parts never exceeds the cap.

urllib3 (through builder.fetch.httpclient) does the HTTP; what is written here is
what it does not: the parts, their bookkeeping and the record.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from builder.credentials import redact_url
from builder.errors import FetchError
from builder.fetch import httpclient
from builder.fetch.outcomes import (
    Mismatch,
    OneStream,
    Transient,
    describe_network_error,
    parse_content_range,
    parse_retry_after,
)
from builder.fetch.parts import (
    READ_BUFFER,
    BadAnswer,
    Changed,
    Hasher,
    NoRanges,
    OneStreamIsEnough,
    Outcome,
    Part,
    PartFailed,
    Plan,
    Recorder,
    Target,
    parts_from_record,
    plan_parts,
    read_record,
    write_record,
)
from builder.fetch.probe import Handover, probe, strong
from builder.fetch.state import DownloadState
from builder.fetch.urls import check_url_allowed
from builder.store import start_writeback

log = logging.getLogger(__name__)

WRITE_PIECE = 64 << 10  # large writes into new files are slow here (FIELD-NOTES, store)
WRITEBACK_EVERY = 8 << 20
#: the first chunk, fetched alone and timed: it decides between one stream and parts
PROBE_BYTES = 4 << 20


def attempt(st: DownloadState, url: str) -> bool:
    """The whole file in parts; True when every byte is on disk. Turns what went wrong
    into what the retry loop understands (builder.fetch.outcomes, FetchError, StoreError)."""
    import urllib3


    shown = redact_url(url)
    allow_http = st.policy.allow_http
    try:
        outcome = fetch_parts(
            url=url, partial=st.part, record_path=st.meta, size=st.size,
            policy=st.policy, headers_for=st.headers_for, label=st.label,
            check=lambda target: check_url_allowed(target, allow_http=allow_http),
            progress=st.report, new_digest=hashlib.sha256, deadline=st.deadline,
        )
    except OneStreamIsEnough as exc:
        log.info("%s: %s: one stream (%s)", st.label, shown, exc)
        st.one_stream = True
        st.fetched += exc.received
        st.advanced(st.partial_size())
        raise OneStream() from None
    except NoRanges as exc:
        log.info("%s: %s: one stream instead of parts (%s)", st.label, shown, exc)
        st.one_stream = True
        if read_record(st.meta).get("parts"):
            st.discard_partial()  # a parts layout cannot be resumed as one stream
        raise OneStream() from None
    except Changed as exc:
        st.discard_partial()
        raise Transient(f"{exc}; starting over") from None
    except BadAnswer as exc:
        raise Mismatch(str(exc)) from None
    except PartFailed as exc:
        if exc.permanent:
            raise st.permanent(f"{exc.reason} from {shown}", shown, exc.reason) from None
        raise Transient(exc.reason,
                         progressed=st.advanced(getattr(exc, "done", 0))) from None
    except (FetchError, httpclient.TooManyRedirects) as exc:
        raise st.redirect_failed(exc, shown) from None
    except (urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
        raise Transient(describe_network_error(exc, st.policy.stall_timeout)) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise st.write_failed(exc) from None
        raise Transient(describe_network_error(exc, st.policy.stall_timeout)) from None
    st.hash, st.hashed = outcome.digest, outcome.hashed
    st.fetched += outcome.received
    st.retries += outcome.retries
    st.resumed_bytes += outcome.resumed
    st.advanced(st.size)
    return True


def _first_chunk(url: str, fd: int, partial: Path, record_path: Path, record: dict[str, Any],
                 start: int, *, size: int, policy: Any,
                 headers_for: Callable[[str], Mapping[str, str]], check: Callable[[str], None],
                 progress: Callable[[int], None], label: str,
                 ) -> tuple[list[Part], Target, int, Handover | None]:
    """Fetch the first chunk (after a one-stream prefix of ``start`` bytes), timed, and
    decide: one stream (:class:`OneStreamIsEnough`) or parts (returned, with the first
    request handed over as part 0 when it was cut short to decide)."""
    length = min(PROBE_BYTES, size - start) or 1
    try:
        first = probe(url, headers_for(url), size=size, policy=policy, check=check,
                      start=start, length=length,
                      validator=record.get("validator", "") if start else "", fd=fd,
                      slow_below=policy.one_stream_above)
    except NoRanges:
        if start:  # the file changed (or ranges stopped): the prefix is no good
            os.ftruncate(fd, 0)
        raise
    progress(first.got)
    if first.handover is None and (first.rate >= policy.one_stream_above or start + first.got >= size):
        # As builder.fetch's one stream keeps it: a prefix and its validator.
        os.ftruncate(fd, start + first.got)
        write_record(record_path, {"url": url, "validator": first.target.validator})
        raise OneStreamIsEnough(f"one connection gave {first.rate / 1e6:.0f} MB/s",
                                received=first.got)
    os.ftruncate(fd, size)
    end = start + length
    parts = [Part(0, start, start)] if start else []
    parts.append(Part(start, end, first.got, taken=first.handover is not None))
    parts += plan_parts(size, policy.connections, end)[1:]
    log.info("%s: one connection gave %.0f MB/s: %d parts over %d connections", label,
             first.rate / 1e6, len(parts), policy.connections)
    return parts, first.target, first.got, first.handover


def fetch_parts(
    *,
    url: str,
    partial: Path,
    record_path: Path,
    size: int,
    policy: Any,
    headers_for: Callable[[str], Mapping[str, str]],
    check: Callable[[str], None],
    progress: Callable[[int], None],
    label: str,
    new_digest: Callable[[], Any],
    deadline: float | None = None,
) -> Outcome:
    """Download the whole file at ``url`` into ``partial`` in parts; return its sha256.

    Raises:
        OneStreamIsEnough, NoRanges, Changed: see the module doc (builder.fetch
            handles them).
        PartFailed: a part gave up (its reason; ``permanent`` for a 4xx).
        BadAnswer: the server sent other bytes than the range asked for.
        OSError: the partial could not be written (disk full).
    """
    record = read_record(record_path)
    parts = handover = None
    first_bytes = 0
    if isinstance(record.get("parts"), list) and record.get("url") == url:
        # A parts download of an earlier run: refresh the final URL, then resume its parts.
        target = probe(url, headers_for(url), size=size, policy=policy, check=check).target
        parts = parts_from_record(record, url=url, target=target, partial=partial,
                                  connections=policy.connections)
    if parts is None:
        start = 0  # a one-stream partial of this URL is kept: the first chunk follows it
        if record.get("url") == url and not record.get("parts") and record.get("validator"):
            with contextlib.suppress(OSError):
                start = min(partial.stat().st_size, size)
        with open(partial, "r+b" if start else "wb"):
            pass
        fd = os.open(partial, os.O_RDWR)
        try:
            parts, target, first_bytes, handover = _first_chunk(
                url, fd, partial, record_path, record, start, size=size, policy=policy,
                headers_for=headers_for, check=check, progress=progress, label=label)
        except BaseException:
            os.close(fd)
            raise
    else:
        fd = os.open(partial, os.O_RDWR)
    plan = Plan(parts)
    resumed = plan.done_bytes() - first_bytes
    if resumed:
        log.warning("resume: %s: %d of %d bytes on disk, %d parts", label, resumed, size,
                    sum(not p.complete for p in parts))
    state = {"url": url, "validator": target.validator, "size": size}
    plan.record(record_path, state)
    hasher = Hasher(fd, plan, size, new_digest())
    hasher.start()
    recorder = Recorder(plan, record_path, state)
    recorder.start()
    counters = {"received": first_bytes, "retries": 0}
    shared = {"target": target}
    first_part = next((p for p in plan.parts if p.taken), None)
    try:
        workers = [
            threading.Thread(target=_worker, name=f"part-{i}", daemon=True, args=(
                plan, fd, shared, url, size, policy, headers_for, check, progress, label,
                counters, record_path, state, deadline,
                (first_part, handover) if i == 0 and handover is not None else None))
            for i in range(max(1, policy.connections))
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        with plan.lock:
            plan.progressed.notify_all()
        if plan.failure is not None:
            hasher.stop = True
            failure = plan.failure
            failure.done = plan.done_bytes()  # for the caller's "new bytes?" judgement
            raise failure
        hasher.join()
        if hasher.error is not None:
            raise hasher.error
        if hasher.hashed != size:
            raise PartFailed(f"parts covered {hasher.hashed} of {size} bytes")
    finally:
        hasher.stop = True
        recorder.done.set()
        with plan.lock:
            plan.progressed.notify_all()
        hasher.join(timeout=5)
        recorder.join()
        plan.record(record_path, state)
        os.close(fd)
    return Outcome(hasher.digest, hasher.hashed, counters["received"], resumed, counters["retries"])


def _worker(plan: Plan, fd: int, shared: dict, url: str, size: int, policy: Any,
            headers_for: Callable[[str], Mapping[str, str]], check: Callable[[str], None],
            progress: Callable[[int], None], label: str, counters: dict, record_path: Path,
            state: dict, deadline: float | None,
            handed: tuple[Part, Handover] | None = None) -> None:
    buf = bytearray(READ_BUFFER)
    if handed is not None:
        part, handover = handed
        try:
            _read_handover(plan, part, fd, buf, handover, progress, counters)
            if not part.complete:  # cut short: the usual retries take the rest
                _download_part(plan, part, fd, buf, shared, url, size, policy, headers_for,
                               check, progress, label, counters, record_path, state, deadline)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the plan
            plan.fail(exc)
            return
    while (part := plan.take()) is not None:
        try:
            _download_part(plan, part, fd, buf, shared, url, size, policy, headers_for, check,
                           progress, label, counters, record_path, state, deadline)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the plan
            plan.fail(exc)
            return


def _store(plan: Plan, part: Part, fd: int, data: memoryview, offset: int,
           progress: Callable[[int], None], counters: dict) -> None:
    """Write ``data`` at ``offset`` of the partial (in WRITE_PIECE pieces) and count it as
    done in ``part``, waking whoever waits on the plan's progress."""
    for i in range(0, len(data), WRITE_PIECE):
        piece = data[i:i + WRITE_PIECE]
        if os.pwrite(fd, piece, offset + i) != len(piece):
            raise OSError(f"short write at byte {offset + i}")
    with plan.lock:
        part.done += len(data)
        counters["received"] += len(data)
        plan.progressed.notify_all()
    progress(len(data))


def _read_handover(plan: Plan, part: Part, fd: int, buf: bytearray, handover: Handover,
                   progress: Callable[[int], None], counters: dict) -> None:
    """Read the rest of the first request into part 0; a failure leaves the rest to retries."""
    import urllib3

    body_read = False
    first = part.next
    try:
        readinto = handover.response._fp.readinto
        while not part.complete and plan.failure is None:
            try:
                n = readinto(memoryview(buf)[:part.end - part.next])
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError):
                return
            if not n:
                return
            _store(plan, part, fd, memoryview(buf)[:n], part.next, progress, counters)
        body_read = part.complete
    finally:
        httpclient.release(handover.response, body_read=body_read)
        handover.slot.release()
        if part.next > first:
            start_writeback(fd, first, part.next - first)


def _download_part(plan: Plan, part: Part, fd: int, buf: bytearray, shared: dict, url: str,
                   size: int, policy: Any, headers_for: Callable[[str], Mapping[str, str]],
                   check: Callable[[str], None], progress: Callable[[int], None], label: str,
                   counters: dict, record_path: Path, state: dict, deadline: float | None) -> None:
    import urllib3

    failures = 0
    network_errors = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError)
    while not part.complete:
        if plan.failure is not None:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise PartFailed(f"the total timeout of {policy.total_timeout:g}s passed")
        target: Target = shared["target"]
        start_done = part.done
        retry_after = None
        try:
            status = _fetch_range(plan, part, fd, buf, target, policy, check, progress, counters,
                                  record_path, state)
        except (BadAnswer, Changed, PartFailed):
            raise
        except network_errors as exc:
            status, reason = None, describe_network_error(exc, policy.stall_timeout)
        else:
            if status is None:
                continue  # the range was served (or cut short by a split): go on
            reason = f"HTTP {status[0]}"
            retry_after = status[1]
            if status[0] in (403, 410):
                # An expired signed URL: ask the original URL for a fresh one.
                try:
                    shared["target"] = probe(url, headers_for(url), size=size, policy=policy,
                                             check=check).target
                except NoRanges as e:
                    raise Changed(f"the server stopped serving parts ({e})") from None
            elif 400 <= status[0] < 500 and status[0] not in (408, 429):
                raise PartFailed(f"HTTP {status[0]} for bytes {part.next}-{part.end - 1}",
                                 permanent=True, status=status[0])
        failures = 0 if part.done > start_done else failures + 1
        if failures > policy.retries:
            raise PartFailed(f"{reason} for bytes {part.next}-{part.end - 1}; "
                             f"{policy.retries} retries brought no new bytes")
        with plan.lock:
            counters["retries"] += 1
        delay = retry_after if retry_after is not None else min(
            policy.backoff_max, policy.backoff * 2 ** max(0, failures - 1))
        delay *= 1 if retry_after is not None else 0.5 + random.random() / 2
        log.warning("retry: %s: %s in bytes %d-%d; part attempt %d/%d in %.1fs", label, reason,
                    part.next, part.end - 1, failures + 1, policy.retries + 1, delay)
        time.sleep(delay)


def _fetch_range(plan: Plan, part: Part, fd: int, buf: bytearray, target: Target, policy: Any,
                 check: Callable[[str], None], progress: Callable[[int], None], counters: dict,
                 record_path: Path, state: dict) -> tuple[int, float | None] | None:
    """One request for the rest of ``part``; None when its bytes were written, else
    (error status, Retry-After) to retry."""
    headers = dict(target.headers)
    headers.update({"Range": f"bytes={part.next}-{part.end - 1}",
                    "If-Range": target.validator, "Accept-Encoding": "identity"})
    with policy.connection_slots():
        response = httpclient.client().get(
            target.url, headers, connect_timeout=policy.connect_timeout,
            read_timeout=policy.stall_timeout, check=check)
        body_read = False
        since_writeback = 0
        try:
            status = response.status
            if status in (408, 429) or status >= 400:
                return status, parse_retry_after(response.headers.get("Retry-After"),
                                                  policy.retry_after_max)
            if status == 200:
                raise Changed("the server sent the whole file to a ranged request "
                              "(it changed, or stopped serving ranges)")
            if status != 206:
                raise PartFailed(f"HTTP {status} to a ranged request", permanent=True, status=status)
            etag = strong(response.headers.get("ETag"))
            if etag and etag != target.validator:
                raise Changed(f"ETag {etag} differs from {target.validator}: the file changed")
            start, _end, total = parse_content_range(response.headers.get("Content-Range"))
            if start != part.next or (total is not None and total != target.size):
                raise BadAnswer(f"asked for bytes {part.next}-, got Content-Range "
                                f"{response.headers.get('Content-Range')}")
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise NoRanges(f"the server compresses ranges ({encoding})")
            readinto = response._fp.readinto  # http.client's: no decoding, stops at the length
            requested_end = part.end
            while True:
                n = readinto(buf)
                if not n:
                    body_read = True
                    if not part.complete:  # the server closed before the end of the range
                        raise http.client.IncompleteRead(b"", part.end - part.next)
                    break
                with plan.lock:
                    allowed = min(n, part.end - part.next)
                    offset = part.next
                    split = part.end < requested_end
                if allowed < n and not split:
                    raise BadAnswer(f"the server sent more than bytes {part.start}-{requested_end - 1}")
                if allowed > 0:
                    _store(plan, part, fd, memoryview(buf)[:allowed], offset, progress, counters)
                    since_writeback += allowed
                    if since_writeback >= WRITEBACK_EVERY:
                        start_writeback(fd, offset + allowed - since_writeback, since_writeback)
                        since_writeback = 0
                if (part.complete and split) or plan.failure is not None:
                    break  # the back half went to another worker, or the download failed
        finally:
            httpclient.release(response, body_read=body_read)
            if since_writeback:
                # A part is a few MiB, often less than WRITEBACK_EVERY: what this request
                # wrote goes to disk now too, or the final fsync would write the whole file.
                start_writeback(fd, part.next - since_writeback, since_writeback)
    return None
