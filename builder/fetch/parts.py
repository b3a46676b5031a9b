"""A large file's parts: the plan the workers share, its resume record, the hasher.

See :mod:`builder.fetch.segmented` for how they are used.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_BUFFER = 1 << 20
RECORD_SECONDS = 0.5  # the resume record is rewritten at most this often (per file)
MIN_STEAL = 16 << 20  # a running part is split for an idle worker only above 2x this
ROUNDS = 8  # parts per connection: the sha256 trails the download by at most one round
MIN_PART = 1 << 20


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


class Plan:
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
            if remaining < 2 * MIN_STEAL:
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


class Recorder(threading.Thread):
    """Rewrites the resume record every RECORD_SECONDS while the parts make progress
    (also when they then stall: what came before the stall is on record)."""

    def __init__(self, plan: Plan, path: Path, state: dict[str, Any]) -> None:
        super().__init__(name="segmented-record", daemon=True)
        self.plan, self.path, self.state = plan, path, state
        self.done = threading.Event()

    def run(self) -> None:
        written = self.plan.done_bytes()
        while not self.done.wait(RECORD_SECONDS):
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
    count = max(1, connections) * ROUNDS
    while count > 1 and rest / count < MIN_PART:
        count -= max(1, connections)
    count = max(1, count)
    step = math.ceil(rest / count)
    for start in range(done_prefix, size, step):
        parts.append(Part(start, min(size, start + step)))
    return parts



class OneStreamIsEnough(Exception):
    """The first chunk came faster than ``FetchPolicy.one_stream_above``: parts would
    only cost CPU (loopback, a LAN, a fast mirror). The partial holds that chunk as a
    one-stream prefix; builder.fetch goes on in one stream from there."""

    def __init__(self, message: str, *, received: int) -> None:
        super().__init__(message)
        self.received = received  # bytes of the first chunk (fetched over the network)



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



class Hasher(threading.Thread):
    """sha256 of the partial, following the contiguous prefix as the parts complete."""

    def __init__(self, fd: int, plan: Plan, size: int, digest: Any) -> None:
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
                    step = min(READ_BUFFER, end - self.hashed)
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
