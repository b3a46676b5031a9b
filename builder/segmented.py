"""Segmented download: one large file over several connections, each part resumable.

CDN edges and long paths cap a single TCP stream (40 MB/s is common), so one
connection leaves most of a fast link idle. builder.fetch hands a file of known
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

urllib3 (through builder.httpclient) does the HTTP; what is written here is
what it does not: the parts, their bookkeeping and the record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import httpclient
from builder.store import start_writeback

log = logging.getLogger(__name__)

_READ_BUFFER = 1 << 20
_WRITE_PIECE = 64 << 10  # large writes into new files are slow here (FIELD-NOTES, store)
_RECORD_SECONDS = 0.5  # the resume record is rewritten at most this often (per file)
_WRITEBACK_EVERY = 8 << 20
_MIN_STEAL = 16 << 20  # a running part is split for an idle worker only above 2x this
_ROUNDS = 8  # parts per connection: the sha256 trails the download by at most one round
_MIB = 1 << 20
_MIN_PART = _MIB
#: the first chunk, fetched alone and timed: it decides between one stream and parts
_PROBE_BYTES = 4 << 20
#: a first chunk slower than FetchPolicy.one_stream_above after this many bytes decides
#: for parts at once (the rest of it becomes a part like the others)
_PROBE_DECIDES = 1 << 20


class NoRanges(Exception):
    """The server cannot do parts (no 206, no total size, no strong validator): one stream."""


class Changed(Exception):
    """The file changed on the server between parts (another validator): start over."""


class PartFailed(Exception):
    """A part failed more times in a row than the policy allows, or for good."""

    def __init__(self, reason: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status


class BadAnswer(Exception):
    """The server answered a range with other bytes than asked for (a mismatch, not a retry)."""


@dataclass
class Part:
    start: int
    end: int  # exclusive; lowered when an idle worker takes the back half
    done: int = 0  # bytes written from start
    taken: bool = False

    @property
    def next(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.next >= self.end

    def to_json(self) -> list[int]:
        return [self.start, self.end, self.done]


@dataclass
class Target:
    """Where the parts come from: the final URL after redirects, and its validator."""

    url: str
    headers: dict[str, str]
    size: int
    validator: str


class _Plan:
    """The parts of one file and their progress, shared by the workers (one lock)."""

    def __init__(self, parts: list[Part]) -> None:
        self.parts = sorted(parts, key=lambda p: p.start)
        self.lock = threading.Lock()
        self.progressed = threading.Condition(self.lock)
        self.failure: BaseException | None = None

    def record(self, path: Path, state: dict[str, Any]) -> None:
        with self.lock:
            parts = [p.to_json() for p in self.parts]
        write_record(path, {**state, "parts": parts})


    def done_bytes(self) -> int:
        return sum(p.done for p in self.parts)

    def contiguous_end(self) -> int:
        """End of the prefix of the file that is complete (what the hasher may read)."""
        end = 0
        for p in self.parts:
            if p.start > end:
                break
            end = max(end, p.next)
            if not p.complete:
                break
        return end

    def take(self) -> Part | None:
        """A part for an idle worker: an untaken one, else the back half of the biggest."""
        with self.lock:
            if self.failure is not None:
                return None
            for p in self.parts:
                if not p.taken and not p.complete:
                    p.taken = True
                    return p
            running = [p for p in self.parts if p.taken and not p.complete]
            if not running:
                return None
            big = max(running, key=lambda p: p.end - p.next)
            remaining = big.end - big.next
            if remaining < 2 * _MIN_STEAL:
                return None
            middle = big.next + remaining // 2
            back = Part(middle, big.end, taken=True)
            big.end = middle
            self.parts.append(back)
            self.parts.sort(key=lambda p: p.start)
            return back

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = error
            self.progressed.notify_all()


class _Recorder(threading.Thread):
    """Rewrites the resume record every _RECORD_SECONDS while the parts make progress
    (also when they then stall: what came before the stall is on record)."""

    def __init__(self, plan: _Plan, path: Path, state: dict[str, Any]) -> None:
        super().__init__(name="segmented-record", daemon=True)
        self.plan, self.path, self.state = plan, path, state
        self.done = threading.Event()

    def run(self) -> None:
        written = self.plan.done_bytes()
        while not self.done.wait(_RECORD_SECONDS):
            now = self.plan.done_bytes()
            if now != written:
                self.plan.record(self.path, self.state)
                written = now


def plan_parts(size: int, connections: int, done_prefix: int = 0) -> list[Part]:
    """Parts of [done_prefix, size), after a done prefix: eight per connection, equal, of
    at least 1 MiB. The workers take them in file order, so the complete prefix, and
    with it the sha256, keeps up with the download instead of waiting for
    ``connections`` parts to end together."""
    parts = [Part(0, done_prefix, done_prefix)] if done_prefix else []
    rest = size - done_prefix
    # A multiple of the connections, equal in size: over capped connections all of a
    # round end together, and no last round runs with idle workers.
    count = max(1, connections) * _ROUNDS
    while count > 1 and rest / count < _MIN_PART:
        count -= max(1, connections)
    count = max(1, count)
    step = math.ceil(rest / count)
    for start in range(done_prefix, size, step):
        parts.append(Part(start, min(size, start + step)))
    return parts


def _strong(etag: str | None) -> str:
    return etag if etag and not etag.startswith("W/") else ""


class OneStreamIsEnough(Exception):
    """The first chunk came faster than ``FetchPolicy.one_stream_above``: parts would
    only cost CPU (loopback, a LAN, a fast mirror). The partial holds that chunk as a
    one-stream prefix; builder.fetch goes on in one stream from there."""

    def __init__(self, message: str, *, received: int) -> None:
        super().__init__(message)
        self.received = received  # bytes of the first chunk (fetched over the network)


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
        first, _end, total = _content_range(response.headers.get("Content-Range"))
        etag = _strong(response.headers.get("ETag"))
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
                if slow_below and got < length and got >= _PROBE_DECIDES and rate < slow_below / 2:
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


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    from builder.fetch import _parse_content_range

    return _parse_content_range(value)


def read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path: Path, data: dict[str, Any]) -> None:
    """The resume record, replaced whole (never half-written)."""
    tmp = path.with_name(f"{path.name}.tmp-{threading.get_ident()}")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # only an optimisation for resuming


def parts_from_record(record: dict[str, Any], *, url: str, target: Target, partial: Path,
                      connections: int) -> list[Part] | None:
    """The parts a previous run left, if the record is for this URL, size and validator."""
    raw = record.get("parts")
    if (not isinstance(raw, list) or record.get("url") != url
            or record.get("validator") != target.validator or record.get("size") != target.size):
        return None
    try:
        if partial.stat().st_size != target.size:
            return None
        parts = [Part(int(s), int(e), int(d)) for s, e, d in raw]
    except (OSError, TypeError, ValueError):
        return None
    covered = sorted((p.start, p.end) for p in parts)
    if covered[0][0] != 0 or covered[-1][1] != target.size or any(
            a[1] != b[0] for a, b in zip(covered, covered[1:], strict=False)):
        return None
    if any(p.done < 0 or p.next > p.end for p in parts):
        return None
    return parts


class _Hasher(threading.Thread):
    """sha256 of the partial, following the contiguous prefix as the parts complete."""

    def __init__(self, fd: int, plan: _Plan, size: int, digest: Any) -> None:
        import mmap

        super().__init__(name="segmented-hash", daemon=True)
        self.fd, self.plan, self.size, self.digest = fd, plan, size, digest
        self.map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        self.view = memoryview(self.map)
        self.hashed = 0
        self.stop = False
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            while self.hashed < self.size:
                with self.plan.lock:
                    while (not self.stop and self.plan.failure is None
                           and self.plan.contiguous_end() <= self.hashed):
                        self.plan.progressed.wait(0.5)
                    if self.stop or self.plan.failure is not None:
                        return
                    end = self.plan.contiguous_end()
                # Straight from the page cache into sha256 (no copy), a MiB at a time.
                while self.hashed < end:
                    step = min(_READ_BUFFER, end - self.hashed)
                    self.digest.update(self.view[self.hashed:self.hashed + step])
                    self.hashed += step
        except OSError as exc:
            self.error = exc
            self.plan.fail(exc)
        finally:
            self.view.release()
            self.map.close()


@dataclass
class Outcome:
    """What fetch_parts hands back to builder.fetch."""

    digest: Any
    hashed: int
    received: int  # bytes received over the network
    resumed: int  # bytes the record said were done before this run
    retries: int


def _first_chunk(url: str, fd: int, partial: Path, record_path: Path, record: dict[str, Any],
                 start: int, *, size: int, policy: Any,
                 headers_for: Callable[[str], Mapping[str, str]], check: Callable[[str], None],
                 progress: Callable[[int], None], label: str,
                 ) -> tuple[list[Part], Target, int, Handover | None]:
    """Fetch the first chunk (after a one-stream prefix of ``start`` bytes), timed, and
    decide: one stream (:class:`OneStreamIsEnough`) or parts (returned, with the first
    request handed over as part 0 when it was cut short to decide)."""
    length = min(_PROBE_BYTES, size - start) or 1
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
    plan = _Plan(parts)
    resumed = plan.done_bytes() - first_bytes
    if resumed:
        log.warning("resume: %s: %d of %d bytes on disk, %d parts", label, resumed, size,
                    sum(not p.complete for p in parts))
    state = {"url": url, "validator": target.validator, "size": size}
    plan.record(record_path, state)
    hasher = _Hasher(fd, plan, size, new_digest())
    hasher.start()
    recorder = _Recorder(plan, record_path, state)
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


def _worker(plan: _Plan, fd: int, shared: dict, url: str, size: int, policy: Any,
            headers_for: Callable[[str], Mapping[str, str]], check: Callable[[str], None],
            progress: Callable[[int], None], label: str, counters: dict, record_path: Path,
            state: dict, deadline: float | None,
            handed: tuple[Part, Handover] | None = None) -> None:
    buf = bytearray(_READ_BUFFER)
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


def _read_handover(plan: _Plan, part: Part, fd: int, buf: bytearray, handover: Handover,
                   progress: Callable[[int], None], counters: dict) -> None:
    """Read the rest of the first request into part 0; a failure leaves the rest to retries."""
    import http.client

    import urllib3

    body_read = False
    try:
        readinto = handover.response._fp.readinto
        while not part.complete and plan.failure is None:
            try:
                n = readinto(memoryview(buf)[:part.end - part.next])
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError):
                return
            if not n:
                return
            if os.pwrite(fd, memoryview(buf)[:n], part.next) != n:
                raise OSError(f"short write at byte {part.next}")
            with plan.lock:
                part.done += n
                counters["received"] += n
                plan.progressed.notify_all()
            progress(n)
        body_read = part.complete
    finally:
        httpclient.release(handover.response, body_read=body_read)
        handover.slot.release()


def _download_part(plan: _Plan, part: Part, fd: int, buf: bytearray, shared: dict, url: str,
                   size: int, policy: Any, headers_for: Callable[[str], Mapping[str, str]],
                   check: Callable[[str], None], progress: Callable[[int], None], label: str,
                   counters: dict, record_path: Path, state: dict, deadline: float | None) -> None:
    import http.client

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
            from builder.fetch import _describe_network_error

            status, reason = None, _describe_network_error(exc, policy.stall_timeout)
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


def _fetch_range(plan: _Plan, part: Part, fd: int, buf: bytearray, target: Target, policy: Any,
                 check: Callable[[str], None], progress: Callable[[int], None], counters: dict,
                 record_path: Path, state: dict) -> tuple[int, float | None] | None:
    """One request for the rest of ``part``; None when its bytes were written, else
    (error status, Retry-After) to retry."""
    from builder.fetch import _parse_retry_after

    headers = dict(target.headers)
    headers.update({"Range": f"bytes={part.next}-{part.end - 1}",
                    "If-Range": target.validator, "Accept-Encoding": "identity"})
    with policy.connection_slots():
        response = httpclient.client().get(
            target.url, headers, connect_timeout=policy.connect_timeout,
            read_timeout=policy.stall_timeout, check=check)
        body_read = False
        try:
            status = response.status
            if status in (408, 429) or status >= 400:
                return status, _parse_retry_after(response.headers.get("Retry-After"),
                                                  policy.retry_after_max)
            if status == 200:
                raise Changed("the server sent the whole file to a ranged request "
                              "(it changed, or stopped serving ranges)")
            if status != 206:
                raise PartFailed(f"HTTP {status} to a ranged request", permanent=True, status=status)
            etag = _strong(response.headers.get("ETag"))
            if etag and etag != target.validator:
                raise Changed(f"ETag {etag} differs from {target.validator}: the file changed")
            start, _end, total = _content_range(response.headers.get("Content-Range"))
            if start != part.next or (total is not None and total != target.size):
                raise BadAnswer(f"asked for bytes {part.next}-, got Content-Range "
                                f"{response.headers.get('Content-Range')}")
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise NoRanges(f"the server compresses ranges ({encoding})")
            readinto = response._fp.readinto  # http.client's: no decoding, stops at the length
            requested_end = part.end
            since_writeback = 0
            while True:
                n = readinto(buf)
                if not n:
                    body_read = True
                    if not part.complete:  # the server closed before the end of the range
                        import http.client

                        raise http.client.IncompleteRead(b"", part.end - part.next)
                    break
                with plan.lock:
                    allowed = min(n, part.end - part.next)
                    offset = part.next
                    split = part.end < requested_end
                if allowed < n and not split:
                    raise BadAnswer(f"the server sent more than bytes {part.start}-{requested_end - 1}")
                if allowed > 0:
                    view = memoryview(buf)[:allowed]
                    for i in range(0, allowed, _WRITE_PIECE):
                        piece = view[i:i + _WRITE_PIECE]
                        if os.pwrite(fd, piece, offset + i) != len(piece):
                            raise OSError(f"short write at byte {offset + i}")
                    with plan.lock:
                        part.done += allowed
                        counters["received"] += allowed
                        plan.progressed.notify_all()
                    progress(allowed)
                    since_writeback += allowed
                    if since_writeback >= _WRITEBACK_EVERY:
                        start_writeback(fd, offset + allowed - since_writeback, since_writeback)
                        since_writeback = 0
                if (part.complete and split) or plan.failure is not None:
                    break  # the back half went to another worker, or the download failed
        finally:
            httpclient.release(response, body_read=body_read)
    return None
