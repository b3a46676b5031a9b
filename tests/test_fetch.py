"""The HTTP fetch engine against a real local server that misbehaves on purpose."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from builder.errors import FetchError, IntegrityError, StoreError
from builder.fetch import FetchPolicy, check_url_allowed, fetch, parse_mirror, rewrite_url
from builder.store import Store
from tests.fixtures.fileserver import FileServer
from tests.test_store import tmpfs_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
# Fast but real: the same code paths as production, with short waits.
FAST = FetchPolicy(retries=4, backoff=0.01, backoff_max=0.05, stall_timeout=0.5, connect_timeout=2)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_is_clean(store: Store) -> bool:
    """No blob, no partial, no scratch file."""
    leftovers = [
        p
        for sub in ("blobs", "partial", "tmp")
        for p in (store.root / sub).rglob("*")
        if p.is_file()
    ]
    return leftovers == []


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def server(fresh_file_server: FileServer) -> FileServer:
    return fresh_file_server


def test_fetch_stores_the_verified_file_and_a_second_fetch_sends_no_request(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(300_000)
    url = server.add("/models/w.pth", data)

    first = fetch([url], store, sha256=sha(data), size=len(data), policy=FAST, label="w")
    second = fetch([url], store, sha256=sha(data), size=len(data), policy=FAST, label="w")

    assert first.path.read_bytes() == data and first.path == store.blob_path(sha(data))
    assert (first.sha256, first.size, first.fetched_bytes) == (sha(data), len(data), len(data))
    assert second.fetched_bytes == 0 and second.path == first.path
    assert len(server.gets("/models/w.pth")) == 1
    assert list((store.root / "partial").iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("500", {}),
        ("500", {"status": 503}),
        ("429", {"retry_after": 0}),
        ("reset", {"after": 600_000}),
        ("truncate", {"after": 600_000}),
        ("corrupt", {}),
        ("stall", {"after": 600_000, "seconds": 3}),
    ],
)
def test_transient_fault_ends_in_the_right_bytes(
    server: FileServer, store: Store, kind: str, kw: dict
) -> None:
    data = os.urandom(2_000_000)
    url = server.add("/f.bin", data)
    server.fault("/f.bin", kind, **kw)
    seen: list[int] = []

    result = fetch([url], store, sha256=sha(data), policy=FAST, progress=seen.append, label="f")

    assert result.path.read_bytes() == data
    assert sum(seen) == len(data)  # the progress bar ends at the true size
    assert len(server.gets("/f.bin")) == 2


@pytest.mark.parametrize("kind", ["reset", "truncate", "stall"])
def test_broken_body_is_resumed_from_the_bytes_already_on_disk(
    server: FileServer, store: Store, kind: str
) -> None:
    data = os.urandom(1_000_000)
    url = server.add("/r.bin", data)
    server.fault("/r.bin", kind, after=300_000, seconds=3)
    policy = replace(FAST, chunk_size=100_000)

    result = fetch([url], store, sha256=sha(data), policy=policy, label="r")

    first, second = server.gets("/r.bin")
    assert first.range is None
    if kind == "reset":
        # A TCP reset makes the kernel drop bytes the client had not read yet, so
        # the resume point is wherever the bytes on disk end (at most the 300 000 sent).
        assert second.range is None or second.range.startswith("bytes=")
        start = int(second.range[len("bytes="):-1]) if second.range else 0
        assert start <= 300_000
    else:
        assert second.range == "bytes=300000-"
    assert result.fetched_bytes == len(data)  # nothing downloaded twice
    assert result.path.read_bytes() == data


def test_permanent_corruption_raises_integrity_error_naming_the_artifact_and_stores_nothing(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(100_000)
    bad = bytearray(data)
    bad[50_000] ^= 0xFF
    url = server.add("/ckpt.pt", data)
    server.fault("/ckpt.pt", "corrupt", times=100, offset=50_000)

    with pytest.raises(IntegrityError) as info:
        fetch([url], store, sha256=sha(data), policy=FAST, label="adm-256-uncond")

    message = str(info.value)
    assert "adm-256-uncond" in message
    assert sha(data) in message and sha(bytes(bad)) in message
    assert info.value.permanent and info.value.expected == sha(data)
    assert store_is_clean(store)


def test_wrong_size_announced_by_the_server_is_an_integrity_error(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(10_000)
    url = server.add("/s.bin", data)
    with pytest.raises(IntegrityError, match="expected 20000"):
        fetch([url], store, sha256=sha(data), size=20_000, policy=FAST, label="s")
    assert store_is_clean(store)


def test_http_404_is_permanent_not_retried_and_names_status_and_url(
    server: FileServer, store: Store
) -> None:
    url = server.url_for("/missing.bin")
    with pytest.raises(FetchError) as info:
        fetch([url], store, sha256=sha(b"x"), policy=FAST, label="missing")
    assert info.value.permanent
    assert "404" in str(info.value) and url in str(info.value) and "missing" in str(info.value)
    assert len(server.gets("/missing.bin")) == 1


def test_persistent_5xx_gives_up_after_the_retries_and_keeps_the_partial(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(50_000)
    url = server.add("/busy.bin", data)
    server.fault("/busy.bin", "reset", times=1, after=20_000)
    server.fault("/busy.bin", "500", times=100)
    policy = replace(FAST, chunk_size=10_000)

    with pytest.raises(FetchError) as info:
        fetch([url], store, sha256=sha(data), policy=policy, label="busy")

    assert not info.value.permanent and "HTTP 500" in str(info.value)
    assert len(server.gets("/busy.bin")) == 1 + 1 + FAST.retries
    assert store.partial_path(sha(data)).stat().st_size == 20_000  # kept for the next run


def test_429_waits_for_retry_after_seconds(server: FileServer, store: Store) -> None:
    data = os.urandom(1000)
    url = server.add("/rl.bin", data)
    server.fault("/rl.bin", "429", retry_after=1)

    start = time.monotonic()
    fetch([url], store, sha256=sha(data), policy=FAST, label="rl")

    assert time.monotonic() - start >= 0.95  # not the 0.01 s backoff
    assert len(server.gets("/rl.bin")) == 2


def test_429_retry_after_as_http_date(server: FileServer, store: Store) -> None:
    data = os.urandom(1000)
    url = server.add("/rl2.bin", data)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # 1–2 s away (1 s resolution)
    server.fault("/rl2.bin", "429", retry_after=when)

    start = time.monotonic()
    fetch([url], store, sha256=sha(data), policy=FAST, label="rl2")

    assert 0.8 <= time.monotonic() - start < 4


def test_stall_timeout_drops_a_silent_connection_and_retries(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(10_000)
    url = server.add("/stall.bin", data)
    server.fault("/stall.bin", "stall", after=0, seconds=5)
    policy = replace(FAST, stall_timeout=0.3)

    start = time.monotonic()
    result = fetch([url], store, sha256=sha(data), policy=policy, label="stall")

    assert time.monotonic() - start < 2.5  # did not wait out the 5 s silence
    assert result.path.read_bytes() == data
    assert len(server.gets("/stall.bin")) == 2


def test_slow_server_within_the_stall_timeout_is_not_retried(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(10_000)
    url = server.add("/slow.bin", data)
    server.fault("/slow.bin", "stall", after=5000, seconds=0.3)
    policy = replace(FAST, stall_timeout=2)

    fetch([url], store, sha256=sha(data), policy=policy, label="slow")

    assert len(server.gets("/slow.bin")) == 1


def test_total_timeout_ends_the_fetch_even_while_bytes_trickle(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(10_000)
    url = server.add("/tt.bin", data)
    server.fault("/tt.bin", "stall", after=100, seconds=5)
    policy = replace(FAST, stall_timeout=10, total_timeout=0.5)

    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch([url], store, sha256=sha(data), policy=policy, label="tt")

    assert time.monotonic() - start < 2
    assert info.value.reason == "timeout" and "tt" in str(info.value)


def test_mirrors_are_tried_in_order(server: FileServer, store: Store) -> None:
    data = os.urandom(5000)
    server.add("/c/x.bin", data)
    server.add("/b/x.bin", data)
    server.fault("/b/x.bin", "500", times=100)
    urls = [server.url_for("/a/x.bin"), server.url_for("/b/x.bin"), server.url_for("/c/x.bin")]

    result = fetch(urls, store, sha256=sha(data), policy=FAST, label="x")

    assert result.url == urls[2] and result.path.read_bytes() == data
    paths = [r.path for r in server.requests if r.method == "GET"]
    assert paths == ["/a/x.bin"] + ["/b/x.bin"] * (1 + FAST.retries) + ["/c/x.bin"]


def test_a_mirror_with_wrong_bytes_is_skipped_for_the_next(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(5000)
    server.add("/bad/y.bin", b"something else entirely")
    server.add("/good/y.bin", data)
    urls = [server.url_for("/bad/y.bin"), server.url_for("/good/y.bin")]

    result = fetch(urls, store, sha256=sha(data), policy=FAST, label="y")

    assert result.url == urls[1] and result.path.read_bytes() == data
    assert store.has(sha(data)) and not store.has(sha(b"something else entirely"))


def test_mirror_option_rewrites_url_prefixes(server: FileServer, store: Store) -> None:
    data = os.urandom(5000)
    server.add("/pytorch/models/vit_b_16-c867db91.pth", data)
    mirror = parse_mirror(f"https://download.pytorch.org/={server.url}/pytorch/")
    policy = replace(FAST, mirrors=[mirror])

    result = fetch(
        ["https://download.pytorch.org/models/vit_b_16-c867db91.pth"],
        store,
        sha256=sha(data),
        policy=policy,
        label="vit",
    )

    assert result.path.read_bytes() == data
    assert result.url == server.url + "/pytorch/models/vit_b_16-c867db91.pth"
    assert rewrite_url("https://elsewhere.org/a", [mirror]) == "https://elsewhere.org/a"
    with pytest.raises(ValueError, match="FROM=TO"):
        parse_mirror("https://no-equals-sign/")


def test_plain_http_to_a_non_loopback_host_is_refused_without_connecting(store: Store) -> None:
    url = "http://192.0.2.1/model.bin"  # TEST-NET-1: nothing answers there
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch([url], store, sha256=sha(b"x"), policy=FAST, label="m")
    assert time.monotonic() - start < 0.5
    assert info.value.permanent and url in str(info.value) and "--allow-http" in str(info.value)

    check_url_allowed(url, allow_http=True)
    check_url_allowed("https://192.0.2.1/model.bin", allow_http=False)
    for loopback in ("http://127.0.0.1:1/a", "http://localhost/a", "http://[::1]:8/a"):
        check_url_allowed(loopback, allow_http=False)
    with pytest.raises(FetchError, match="unsupported"):
        check_url_allowed("file:///etc/passwd", allow_http=True)


def test_redirect_to_a_plain_http_host_is_refused_before_following_it(
    server: FileServer, store: Store
) -> None:
    server.add("/r", b"x")
    server.fault("/r", "redirect", to="http://192.0.2.1/evil.bin")
    start = time.monotonic()
    with pytest.raises(FetchError, match="192.0.2.1"):
        fetch([server.url_for("/r")], store, sha256=sha(b"x"), policy=FAST, label="r")
    assert time.monotonic() - start < 1


def test_authorization_is_not_sent_to_another_host_after_a_redirect_nor_logged(
    server: FileServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(1000)
    server.add("/real.bin", data)
    server.add("/start.bin", data)
    other_host = f"http://localhost:{server.port}/real.bin"  # same server, another host name
    server.fault("/start.bin", "redirect", to=other_host)
    secret = "Bearer hf_SECRET_token_123"
    caplog.set_level(logging.DEBUG)

    fetch(
        [server.url_for("/start.bin")],
        store,
        sha256=sha(data),
        policy=FAST,
        headers={"Authorization": secret},
        label="a",
    )
    with pytest.raises(FetchError) as info:
        fetch(
            [server.url_for("/nothing")],
            store,
            sha256=sha(b"q"),
            policy=FAST,
            headers={"Authorization": secret},
            label="b",
        )

    start, real = [r for r in server.requests if r.method == "GET"][:2]
    assert start.headers.get("Authorization") == secret
    assert real.path == "/real.bin" and "Authorization" not in real.headers
    assert "SECRET" not in str(info.value) and "SECRET" not in caplog.text


def test_reply_200_to_a_range_request_restarts_from_zero_and_progress_stays_true(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(50_000)
    url = server.add("/ir.bin", data)
    server.fault("/ir.bin", "ignore-range")
    store.partial_path(sha(data)).write_bytes(b"stale bytes from some earlier run")
    seen: list[int] = []

    result = fetch([url], store, sha256=sha(data), policy=FAST, progress=seen.append, label="ir")

    assert result.path.read_bytes() == data
    assert server.gets("/ir.bin")[0].range == "bytes=33-"
    assert any(n < 0 for n in seen) and sum(seen) == len(data)


def test_complete_partial_is_finished_from_a_416_without_downloading_again(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(20_000)
    url = server.add("/done.bin", data)
    store.partial_path(sha(data)).write_bytes(data)  # killed right after the last byte

    result = fetch([url], store, sha256=sha(data), policy=FAST, label="done")

    assert result.fetched_bytes == 0 and result.path.read_bytes() == data
    assert [r.range for r in server.gets("/done.bin")] == ["bytes=20000-"]


def test_verify_callback_can_reject_the_bytes_before_they_enter_the_store(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(1000)
    url = server.add("/v.bin", data)

    def git_sha1_check(path: Path) -> None:
        raise IntegrityError(f"{path.name}: git sha1 differs from the Hub's")

    with pytest.raises(IntegrityError, match="git sha1"):
        fetch([url], store, sha256=None, policy=FAST, verify=git_sha1_check, label="config.json")
    assert store_is_clean(store)


def test_without_sha256_the_hash_is_computed_and_returned(server: FileServer, store: Store) -> None:
    data = os.urandom(1000)
    url = server.add("/tofu.bin", data)
    result = fetch([url], store, sha256=None, policy=FAST, label="tofu")
    assert result.sha256 == sha(data) and store.has(sha(data), len(data))


def test_disk_full_during_download_ends_in_store_error_and_a_clean_store(
    server: FileServer,
    tmpfs_dir: Path,  # noqa: F811
) -> None:
    store = Store(tmpfs_dir / "store")
    data = os.urandom(2 << 20)
    url = server.add("/huge.bin", data)

    with pytest.raises(StoreError, match="disk full") as info:
        fetch([url], store, sha256=sha(data), policy=FAST, label="huge")

    assert "huge" in str(info.value)
    assert store_is_clean(store)


def _fetch_script(store_root: Path, url: str, digest: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from builder.fetch import FetchPolicy, fetch
        from builder.store import Store
        {extra}
        r = fetch([{url!r}], Store(Path({str(store_root)!r})), sha256={digest!r},
                  policy=FetchPolicy(chunk_size=65536, stall_timeout=20), label="big")
        print("fetched", r.fetched_bytes, flush=True)
        """
    )


def test_resume_after_sigkill_fetches_only_the_missing_bytes(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(4 << 20)
    cut = 24 * 65536  # the server goes silent here, mid-download
    url = server.add("/big.bin", data)
    server.fault("/big.bin", "stall", after=cut, seconds=10)
    child = subprocess.Popen([sys.executable, "-c", _fetch_script(store.root, url, sha(data))])
    partial = store.partial_path(sha(data))
    try:
        deadline = time.monotonic() + 15
        while not (partial.exists() and partial.stat().st_size >= cut):
            assert time.monotonic() < deadline, "the child never got its first bytes"
            assert child.poll() is None
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert partial.stat().st_size == cut and not store.has(sha(data))

    result = fetch([url], store, sha256=sha(data), policy=FAST, label="big")

    assert result.path.read_bytes() == data
    assert result.fetched_bytes == len(data) - cut
    assert [r.range for r in server.gets("/big.bin")] == [None, f"bytes={cut}-"]


def test_three_processes_fetching_one_blob_download_it_once(
    server: FileServer, store: Store, tmp_path: Path
) -> None:
    data = os.urandom(2 << 20)
    url = server.add("/shared.bin", data)
    server.fault("/shared.bin", "stall", after=1 << 20, seconds=0.5)  # hold the lock a while
    go = tmp_path / "go"
    wait_for_go = textwrap.dedent(
        f"""
        import time, os
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}): time.sleep(0.01)
        """
    ).replace("\n", "\n        ")
    script = _fetch_script(store.root, url, sha(data), extra=wait_for_go)
    children = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [child.communicate(timeout=30)[0] for child in children]

    assert [c.returncode for c in children] == [0, 0, 0]
    fetched = sorted(int(out.split()[-1]) for out in outputs)
    assert fetched == [0, 0, len(data)]
    assert len(server.gets("/shared.bin")) == 1
    assert store.blob_path(sha(data)).read_bytes() == data
    assert [p for p in (store.root / "blobs").rglob("*") if p.is_file()] == [
        store.blob_path(sha(data))
    ]
    assert list((store.root / "partial").iterdir()) == []


def test_threads_fetching_one_blob_download_it_once(server: FileServer, store: Store) -> None:
    data = os.urandom(300_000)
    url = server.add("/same.bin", data)
    server.fault("/same.bin", "stall", after=100_000, seconds=0.2)  # keep the first one busy
    results: list = []

    def one() -> None:
        results.append(fetch([url], store, sha256=sha(data), policy=FAST, label="same"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(r.fetched_bytes for r in results) == [0, 0, 0, len(data)]
    assert len(server.gets("/same.bin")) == 1
    assert store.blob_path(sha(data)).read_bytes() == data


def test_server_that_is_down_fails_after_the_retries_naming_the_cause(store: Store) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.bin"

    with pytest.raises(FetchError) as info:
        fetch([url], store, sha256=sha(b"w"), policy=FAST, label="w")

    assert not info.value.permanent
    assert "connection refused" in str(info.value) and url in str(info.value)


# --- small files: no lock, no shared partial -----------------------------------


def test_small_file_that_keeps_failing_leaves_no_scratch_or_partial_file(
    server: FileServer, store: Store
) -> None:
    # Files up to 256 KiB of known size download into a scratch file of their own
    # (no resume record: a few kilobytes are cheaper to fetch again). A failure must
    # not leave that scratch file behind in the store.
    data = os.urandom(20_000)
    url = server.add("/config.json", data)
    server.fault("/config.json", "reset", times=1, after=5_000)
    server.fault("/config.json", "500", times=100)

    with pytest.raises(FetchError, match="HTTP 500"):
        fetch([url], store, sha256=None, size=len(data), policy=FAST, label="config.json")

    assert store_is_clean(store)
    assert not any((store.root / "locks").iterdir())  # no lock file was needed


def test_small_file_fetched_by_threads_at_once_ends_as_one_verified_blob(
    server: FileServer, store: Store
) -> None:
    data = os.urandom(4_000)
    url = server.add("/tokenizer.json", data)
    results: list = []

    def one() -> None:
        results.append(
            fetch([url], store, sha256=sha(data), size=len(data), policy=FAST, label="tok")
        )

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 4 and {r.path for r in results} == {store.blob_path(sha(data))}
    assert store.blob_path(sha(data)).read_bytes() == data
    assert [p.name for p in (store.root / "tmp").iterdir()] == []


def test_large_file_reset_twice_resumes_to_the_right_bytes_across_writeback_windows(
    server: FileServer, store: Store
) -> None:
    # Larger than several writeback windows (the writer starts disk writes every
    # 8 MiB while it downloads): resumed twice mid-window, the blob is still exact.
    data = os.urandom(20 << 20)
    url = server.add("/big.safetensors", data)
    server.fault("/big.safetensors", "reset", times=1, after=5 << 20)
    policy = replace(FAST, chunk_size=1 << 20)

    first = fetch([url], store, sha256=sha(data), policy=policy, label="big")

    assert first.path.read_bytes() == data
    assert first.fetched_bytes <= len(data) + (1 << 20)  # resumed, not restarted


def test_downloads_go_through_the_proxy_the_environment_names(
    server: FileServer, store: Store, monkeypatch
) -> None:
    # A build behind a corporate proxy: HTTP_PROXY is honoured (the file server
    # here plays the proxy, answering the absolute-form request for another host),
    # NO_PROXY hosts are fetched directly, and a proxy set between two builds of
    # one process is used by the second.
    policy = replace(FAST, allow_http=True)
    data = os.urandom(30_000)
    server.add("/weights.bin", data)
    direct_url = server.add("/direct.bin", b"direct bytes")
    proxy = server.url_for("/").rstrip("/")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", urlsplit(direct_url).hostname)

    # The host does not exist: only the proxy can answer for it.
    via_proxy = fetch(
        ["http://models.corp.invalid/weights.bin"], store, sha256=sha(data), policy=policy, label="w"
    )
    direct = fetch([direct_url], store, sha256=sha(b"direct bytes"), policy=policy, label="d")

    assert via_proxy.path.read_bytes() == data
    assert direct.path.read_bytes() == b"direct bytes"
    assert len(server.gets("/weights.bin")) == 1 and len(server.gets("/direct.bin")) == 1

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # now a proxy that is down
    monkeypatch.delenv("NO_PROXY")
    with pytest.raises(FetchError, match="refused"):
        fetch(["http://models.corp.invalid/other.bin"], store, sha256=sha(b"x"), policy=policy,
              label="o")


def test_a_redirect_loop_is_a_clear_permanent_error(server: FileServer, store: Store) -> None:
    url = server.add("/loop", b"x")
    server.fault("/loop", "redirect", times=100, to=url)  # redirects to itself

    with pytest.raises(FetchError, match="redirects") as info:
        fetch([url], store, sha256=sha(b"x"), policy=FAST, label="loop")

    assert info.value.permanent and url in str(info.value)
    assert 10 <= len(server.gets("/loop")) <= 11


def test_small_files_fetched_uncommitted_are_named_only_by_store_commit(
    server: FileServer, store: Store
) -> None:
    """fetch(commit=False) of small files: verified, but no blob name until Store.commit()
    has flushed the whole group; a wrong byte in one leaves no scratch file behind."""
    files = {f"/small/{i}.json": os.urandom(1000 + i) for i in range(3)}
    urls = {path: server.add(path, data) for path, data in files.items()}
    bad = os.urandom(900)
    bad_url = server.add("/small/bad.json", bad)
    server.fault("/small/bad.json", "corrupt", times=1000)

    results = [
        fetch([urls[p]], store, sha256=sha(d), size=len(d), policy=FAST, label=p, commit=False)
        for p, d in files.items()
    ]
    with pytest.raises(FetchError, match="bad.json"):
        fetch([bad_url], store, sha256=sha(bad), size=len(bad), policy=FAST, label="bad.json",
              commit=False)

    assert all(r.pending and r.path.read_bytes() == d for r, d in zip(results, files.values(), strict=True))
    assert not any(store.has(sha(d)) for d in files.values())  # not named before the flush
    named = store.commit([(r.path, r.sha256) for r in results])

    assert [p.read_bytes() for p in named] == list(files.values())
    assert all(store.has(sha(d), len(d)) for d in files.values())
    assert not any((store.root / "tmp").iterdir())  # scratch files became the blobs
    assert not store.has(sha(bad))
