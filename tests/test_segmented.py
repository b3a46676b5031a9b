"""Segmented downloads against a real server that counts bytes and connections.

A large file goes over several connections; each part retries and resumes on its own;
a kill followed by a rerun fetches only what is missing; a server that ignores ranges
or changes the file mid-way is handled; wrong bytes never get a name; the build's
connection cap holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from builder.errors import IntegrityError
from builder.fetch import FetchPolicy, fetch
from builder.fetch.parts import plan_parts
from builder.fetch.segmented import PROBE_BYTES
from builder.store import Store

MB = 1 << 20
SIZE = 64 * MB
#: where the requests of SIZE start with 4 connections: the first chunk (4 MiB; a slow
#: one decides for parts after 1 MiB and goes on as part 0), then equal parts of the rest
STARTS = [p.start for p in plan_parts(SIZE, 4, PROBE_BYTES)]
FIRST = f"bytes=0-{PROBE_BYTES - 1}"


def policy(**kw) -> FetchPolicy:
    # one_stream_above: loopback is faster than any real link; the parts are what is tested.
    base = {"segment_threshold": MB, "connections": 4, "backoff": 0.01, "backoff_max": 0.02,
            "stall_timeout": 5, "one_stream_above": float("inf")}
    return FetchPolicy(**(base | kw))


@pytest.fixture
def big(fresh_file_server):
    data = os.urandom(SIZE)
    url = fresh_file_server.add("/big.bin", data)
    return fresh_file_server, url, data


def part_starts(server, path="/big.bin") -> list[int]:
    return sorted(int(r.range[6:].split("-")[0]) for r in server.gets(path) if r.range)


def test_a_large_file_comes_in_parts_over_several_connections(big, tmp_path):
    server, url, data = big
    server.pace("/big.bin", 64e6)  # a capped connection: the parts must overlap to finish
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=SIZE, policy=policy(), label="artifact 'big': big.bin")
    assert result.path.read_bytes() == data
    gets = server.gets("/big.bin")
    assert gets[0].range == FIRST  # the first chunk, timed
    assert part_starts(server) == STARTS and len(STARTS) == 33
    assert all(r.headers.get("If-Range") for r in gets[1:])  # every part checks the validator
    assert server.bytes_sent["/big.bin"] == SIZE  # each byte once
    assert server.max_active >= 4  # really in parallel, as many as --connections
    assert not list((tmp_path / "s" / "partial").iterdir())  # no partial, no record left


def test_a_failing_part_refetches_only_its_own_missing_bytes(big, tmp_path):
    server, url, data = big
    server.fault("/big.bin", "500", times=2, range_from=STARTS[3])
    server.fault("/big.bin", "truncate", after=MB, range_from=STARTS[2])  # cut after 1 MiB
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=SIZE, policy=policy(), label="big")
    assert result.path.read_bytes() == data
    starts = part_starts(server)
    assert starts.count(STARTS[3]) == 3  # two 500s, then served
    assert STARTS[2] + MB in starts  # the cut part resumed where it stopped, not at its start
    assert all(starts.count(s) == 1 for s in STARTS if s != STARTS[3])  # the others once
    assert server.bytes_sent["/big.bin"] == SIZE  # not one byte fetched twice
    assert result.retries == 3


KILLED_CHILD = r'''
import sys
from pathlib import Path
from builder.fetch import FetchPolicy, fetch
from builder.store import Store
url, store, sha = sys.argv[1], sys.argv[2], sys.argv[3]
size = None if sys.argv[4] == "none" else int(sys.argv[4])
fetch([url], Store(Path(store)), sha256=sha, size=size, label="big",
      policy=FetchPolicy(segment_threshold=1 << 20, connections=4, stall_timeout=60,
                         one_stream_above=float("inf")))
'''


def test_kill_then_rerun_fetches_only_the_missing_ranges(big, tmp_path):
    server, url, data = big
    for start in STARTS[1:5]:  # the first four parts stop halfway for a long while
        server.fault("/big.bin", "stall", after=2 * MB, seconds=60, range_from=start)
    store = tmp_path / "s"
    sha = hashlib.sha256(data).hexdigest()
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, url, str(store), sha, str(SIZE)])
    record = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the record shows every part halfway
        records = list((store / "partial").glob("*.json")) if (store / "partial").exists() else []
        if records:
            try:
                record = json.loads(records[0].read_text())
            except ValueError:
                record = None
            if record and sum(done >= MB for _s, _e, done in record["parts"]) >= 4:
                break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert record is not None and sum(done >= MB for _s, _e, done in record["parts"]) >= 4
    server.reset()  # no faults; count the rerun's bytes alone
    server.add("/big.bin", data)

    result = fetch([url], Store(store), sha256=sha, size=SIZE, policy=policy(), label="big")

    assert result.path.read_bytes() == data
    on_disk = sum(done for _s, _e, done in record["parts"])
    missing = SIZE - on_disk
    # At most what the record had not yet caught up with (1 MiB per part) is fetched again.
    assert missing <= server.bytes_sent["/big.bin"] <= missing + 4 * MB
    assert result.resumed_bytes >= on_disk


def test_a_server_that_ignores_ranges_gets_one_stream(big, tmp_path):
    server, url, data = big
    server.fault("/big.bin", "ignore-range", times=1)  # the first chunk: 200, the whole file
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=SIZE, policy=policy(), label="big")
    assert result.path.read_bytes() == data
    gets = server.gets("/big.bin")
    assert [g.range for g in gets] == [FIRST, None]  # the ranged try, then one stream


def test_a_file_that_changes_between_parts_restarts_cleanly(big, tmp_path):
    server, url, data = big
    server.fault("/big.bin", "changed", times=1, range_from=STARTS[3])
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=SIZE, policy=policy(), label="big")
    assert result.path.read_bytes() == data
    firsts = [g for g in server.gets("/big.bin") if g.range == FIRST]
    assert len(firsts) == 2  # started over from the first chunk, nothing mixed in


def test_a_wrong_byte_in_one_part_never_gets_a_name(big, tmp_path):
    server, url, data = big
    server.fault("/big.bin", "corrupt", times=100, range_from=STARTS[2])
    store = tmp_path / "s"
    with pytest.raises(IntegrityError) as err:
        fetch([url], Store(store), sha256=hashlib.sha256(data).hexdigest(), size=SIZE,
              policy=policy(), label="artifact 'big': big.bin")
    assert "artifact 'big'" in str(err.value)
    assert [p for p in (store / "blobs").rglob("*") if p.is_file()] == []


class CountingSlots:
    """The policy's connection slots, counting how many are held at once (client side)."""

    def __init__(self, slots):
        self.slots, self.held, self.most = slots, 0, 0
        self.lock = threading.Lock()

    def acquire(self, *a, **k):
        got = self.slots.acquire(*a, **k)
        with self.lock:
            self.held += 1
            self.most = max(self.most, self.held)
        return got

    def release(self):
        with self.lock:
            self.held -= 1
        self.slots.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def test_the_build_wide_connection_cap_holds(fresh_file_server, tmp_path):
    server = fresh_file_server
    blobs = [os.urandom(8 * MB) for _ in range(3)]
    urls = [server.add(f"/f{i}.bin", b) for i, b in enumerate(blobs)]
    for i in range(3):
        server.pace(f"/f{i}.bin", 32e6)  # slow enough that the downloads overlap
    shared = policy(connections=8, max_connections=3)
    counting = CountingSlots(shared._slots)
    shared._slots = counting
    store = Store(tmp_path / "s")
    threads = [threading.Thread(target=fetch, args=([u],), kwargs={
        "store": store, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b),
        "policy": shared, "label": u}) for u, b in zip(urls, blobs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(store.has(hashlib.sha256(b).hexdigest()) for b in blobs)
    assert counting.most == 3  # the cap was reached, and never passed


def test_a_redirect_is_resolved_once_and_an_expired_url_is_resolved_again(
        fresh_file_server, tmp_path):
    server = fresh_file_server
    data = os.urandom(SIZE)
    cdn = server.add("/cdn/big.bin", data)
    server.add("/hub/big.bin", b"")
    server.fault("/hub/big.bin", "redirect", to=cdn, times=100)
    server.fault("/cdn/big.bin", "500", status=403, times=1, range_from=STARTS[2])  # expired
    result = fetch([f"{server.url}/hub/big.bin"], Store(tmp_path / "s"), size=SIZE,
                   sha256=hashlib.sha256(data).hexdigest(), policy=policy(), label="big")
    assert result.path.read_bytes() == data
    assert len(server.gets("/hub/big.bin")) == 2  # the first chunk, and a re-probe after the 403
    assert sorted(set(part_starts(server, "/cdn/big.bin"))) == STARTS


def test_the_progress_callback_counts_the_bytes_of_all_parts(big, tmp_path):
    server, url, data = big
    seen = []
    lock = threading.Lock()

    def progress(n):
        with lock:
            seen.append(n)

    fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(), size=SIZE,
          policy=policy(), label="big", progress=progress)
    assert sum(seen) == SIZE


def test_a_connection_that_fills_the_link_alone_stays_one_stream(big, tmp_path):
    """Parts only pay where one connection is slower than the link: the first chunk is
    timed, and above one_stream_above the rest comes in one stream after it."""
    server, url, data = big
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=SIZE, policy=policy(one_stream_above=1.0), label="big")
    assert result.path.read_bytes() == data
    assert [g.range for g in server.gets("/big.bin")] == [FIRST, f"bytes={PROBE_BYTES}-"]
    assert server.bytes_sent["/big.bin"] == SIZE


# --- a file of unknown size (a url artifact whose spec states none; torchvision weights) ------


def test_a_large_file_of_unknown_size_learns_it_from_the_first_answer_and_goes_to_parts(
        big, tmp_path):
    server, url, data = big
    server.pace("/big.bin", 64e6)
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=None, policy=policy(), label="artifact 'big': big.bin")
    assert result.path.read_bytes() == data and result.size == SIZE
    gets = server.gets("/big.bin")
    # The plain GET's headers tell the size (Content-Length, Accept-Ranges, ETag); its body
    # is left unread and the file comes in parts, as one of known size does.
    assert gets[0].range is None and gets[1].range == FIRST
    assert part_starts(server) == STARTS and server.max_active >= 4
    assert server.bytes_sent["/big.bin"] < SIZE + 8 * MB  # what the first answer had in flight


def test_a_small_file_of_unknown_size_takes_one_request(fresh_file_server, tmp_path):
    data = os.urandom(300_000)
    url = fresh_file_server.add("/small.bin", data)
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=None, policy=policy(segment_threshold=64 * MB), label="small")
    assert result.path.read_bytes() == data
    assert [g.range for g in fresh_file_server.gets("/small.bin")] == [None]


def test_a_server_that_does_not_offer_ranges_keeps_one_stream(big, tmp_path):
    server, url, data = big
    server.fault("/big.bin", "no-ranges", times=5)  # no Accept-Ranges: the first answer is it
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=None, policy=policy(), label="big")
    assert result.path.read_bytes() == data
    assert [g.range for g in server.gets("/big.bin")] == [None]
    assert server.bytes_sent["/big.bin"] == SIZE


def test_a_server_that_offers_ranges_and_ignores_them_gets_one_stream(big, tmp_path):
    server, url, data = big
    server.fault("/big.bin", "ignore-range", times=5)  # 200 to the ranged probe too
    result = fetch([url], Store(tmp_path / "s"), sha256=hashlib.sha256(data).hexdigest(),
                   size=None, policy=policy(), label="big")
    assert result.path.read_bytes() == data
    assert [g.range for g in server.gets("/big.bin")] == [None, FIRST, None]


def test_a_killed_download_of_unknown_size_resumes_its_parts(big, tmp_path):
    server, url, data = big
    for start in STARTS[1:5]:
        server.fault("/big.bin", "stall", after=2 * MB, seconds=60, range_from=start)
    store = tmp_path / "s"
    sha = hashlib.sha256(data).hexdigest()
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, url, str(store), sha, "none"])
    deadline = time.monotonic() + 60
    record = None
    while time.monotonic() < deadline:
        records = list((store / "partial").glob("*.json")) if (store / "partial").exists() else []
        try:
            record = json.loads(records[0].read_text()) if records else None
        except ValueError:
            record = None
        if record and record.get("parts") and sum(d >= MB for _s, _e, d in record["parts"]) >= 4:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert record is not None and record["size"] == SIZE
    server.reset()
    server.add("/big.bin", data)
    result = fetch([url], Store(store), sha256=sha, size=None, policy=policy(), label="big")
    assert result.path.read_bytes() == data
    on_disk = sum(d for _s, _e, d in record["parts"])
    assert result.resumed_bytes >= on_disk
    assert server.bytes_sent["/big.bin"] <= SIZE - on_disk + 4 * MB
