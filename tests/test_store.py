"""The content-addressed store: verified blobs only, shared safely, linked into bundles."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.errors import IntegrityError, StoreError
from builder.store import Store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tmpfs_dir(tmp_path: Path):
    """A 1 MiB tmpfs (another file system, and one that fills up); skipped if not mountable."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def blob_files(store: Store) -> list[Path]:
    return [p for p in (store.root / "blobs").rglob("*") if p.is_file()]


def test_add_file_puts_verified_read_only_blob_under_its_sha256(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    data = os.urandom(3000)
    src = tmp_path / "model.bin"
    src.write_bytes(data)

    digest = store.add_file(src, expected_sha256=sha(data))

    blob = store.blob_path(digest)
    assert digest == sha(data)
    assert blob == store.root / "blobs" / "sha256" / digest  # a new store is flat
    assert blob.read_bytes() == data
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert not src.exists()  # moved in, not copied
    assert store.has(digest) and store.has(digest, len(data))


def test_add_file_with_wrong_hash_adds_nothing_and_keeps_the_source(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "model.bin"
    src.write_bytes(b"the real bytes")

    with pytest.raises(IntegrityError) as info:
        store.add_file(src, expected_sha256=sha(b"other bytes"))

    assert "model.bin" in str(info.value) and sha(b"other bytes") in str(info.value)
    assert blob_files(store) == []
    assert src.read_bytes() == b"the real bytes"


def test_add_file_without_move_copies_and_keeps_the_source(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "wheel.whl"
    src.write_bytes(b"wheel")
    digest = store.add_file(src, move=False)
    assert src.read_bytes() == b"wheel"
    assert store.blob_path(digest).read_bytes() == b"wheel"
    assert src.stat().st_ino != store.blob_path(digest).stat().st_ino
    assert list((store.root / "tmp").iterdir()) == []


def test_has_trusts_name_and_size_without_rehashing_large_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    digest = "ab" * 32
    blob = store.blob_path(digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with open(blob, "wb") as f:  # 8 GiB sparse file: hashing it would take seconds
        f.truncate(8 << 30)

    start = time.perf_counter()
    for _ in range(100):
        assert store.has(digest, 8 << 30)
    assert time.perf_counter() - start < 0.5
    assert not store.has(digest, 1234)  # a size mismatch is not a hit
    assert not store.has("cd" * 32)


def test_bad_sha256_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="not a sha256"):
        store.blob_path("../../etc/passwd")


def test_add_verified_from_many_threads_leaves_one_intact_blob(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    data = os.urandom(200_000)
    digest = sha(data)
    srcs = []
    for i in range(8):
        src = store.root / "tmp" / f"src{i}"
        src.write_bytes(data)
        srcs.append(src)
    errors: list[BaseException] = []

    def add(src: Path) -> None:
        try:
            store.add_verified(src, digest)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(s,)) for s in srcs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert blob_files(store) == [store.blob_path(digest)]
    assert store.blob_path(digest).read_bytes() == data
    assert not any(s.exists() for s in srcs)


def test_a_blob_named_by_one_build_keeps_its_inode_when_another_names_the_same_bytes(tmp_path: Path) -> None:
    """Two builds verify the same file at once (their commits run outside the download
    lock); whichever names it second must not replace the first's inode, which a bundle
    may already link to: every bundle then shares one copy on disk."""
    store = Store(tmp_path / "store")
    data = os.urandom(100_000)
    digest = sha(data)
    for round_ in range(20):
        srcs = []
        for i in range(4):
            src = store.root / "tmp" / f"r{round_}-{i}"
            src.write_bytes(data)
            srcs.append(src)
        barrier = threading.Barrier(len(srcs))
        linked: list[int] = []

        def build(src: Path, n: int, barrier: threading.Barrier = barrier, linked: list[int] = linked) -> None:
            barrier.wait()
            store.add_verified(src, digest)
            dest = tmp_path / f"bundle{n}" / "big.bin"
            store.materialise(digest, dest)
            linked.append(dest.stat().st_ino)

        threads = [threading.Thread(target=build, args=(s, n)) for n, s in enumerate(srcs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(linked) == {store.blob_path(digest).stat().st_ino}, f"round {round_}"
        store.blob_path(digest).chmod(0o644)
        store.blob_path(digest).unlink()  # the next round races from an empty store again


def test_lock_excludes_other_threads_holding_the_same_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, overlaps
        with store.lock("some-key"):
            with guard:
                inside += 1
                overlaps += inside > 1
            time.sleep(0.02)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == 0
    # An odd key still maps to a file inside locks/ and partial/.
    assert store.partial_path("https://x/y?z").parent == store.root / "partial"


def test_materialise_hard_links_within_one_file_system(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "w.pth"
    src.write_bytes(b"weights")
    digest = store.add_file(src)
    dest = tmp_path / "bundle" / "torch" / "hub" / "checkpoints" / "w.pth"

    assert store.materialise(digest, dest) == "link"
    assert dest.stat().st_ino == store.blob_path(digest).stat().st_ino
    assert dest.stat().st_mode & 0o444 == 0o444  # readable by all users
    assert store.materialise(digest, dest) == "exists"
    assert [p.name for p in dest.parent.iterdir()] == ["w.pth"]  # no temp names left


def test_materialise_replaces_a_stale_file_at_the_destination(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "a"
    src.write_bytes(b"new bytes")
    digest = store.add_file(src)
    dest = tmp_path / "bundle" / "file.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old stale bytes")

    assert store.materialise(digest, dest) == "link"
    assert dest.read_bytes() == b"new bytes"
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]


def test_materialise_copies_across_file_systems(tmp_path: Path, tmpfs_dir: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "cfg.json"
    src.write_bytes(b'{"hidden_size": 32}')
    digest = store.add_file(src)
    dest = tmpfs_dir / "bundle" / "cfg.json"

    assert store.materialise(digest, dest) == "copy"
    assert dest.read_bytes() == b'{"hidden_size": 32}'
    assert dest.stat().st_mode & 0o444 == 0o444
    assert [p.name for p in dest.parent.iterdir()] == ["cfg.json"]


def test_materialise_of_a_missing_blob_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="not in the store"):
        store.materialise("ef" * 32, tmp_path / "x")


def test_disk_full_while_adding_ends_in_store_error_and_no_blob(
    tmp_path: Path, tmpfs_dir: Path
) -> None:
    store = Store(tmpfs_dir / "store")
    src = tmp_path / "big.bin"  # on another file system: copied in, 2 MiB > 1 MiB tmpfs
    src.write_bytes(os.urandom(2 << 20))

    with pytest.raises(StoreError, match="disk full"):
        store.add_file(src)

    assert blob_files(store) == []
    assert list((store.root / "tmp").iterdir()) == []
    assert src.exists()  # nothing lost on the way


# --- aliases: git blob ids of verified blobs -------------------------------------


def _stored(store: Store, data: bytes) -> str:
    src = store.root.parent / f"src-{sha(data)[:8]}"
    src.write_bytes(data)
    return store.add_file(src)


def test_an_alias_remembered_by_one_build_is_recalled_by_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    blob = _stored(store, b'{"model_type": "vit"}')
    git_id = "1" * 40
    store.remember_alias("git-sha1", git_id, blob)

    later = Store(tmp_path / "store")  # another process: reads the log
    assert later.recall_alias("git-sha1", git_id) == blob
    assert later.recall_alias("git-sha1", git_id, size=21) == blob
    assert later.recall_alias("git-sha1", git_id, size=22) is None  # wrong size: fetch again
    assert later.recall_alias("git-sha1", "2" * 40) is None
    os.chmod(store.blob_path(blob), 0o644)
    store.blob_path(blob).unlink()
    assert Store(tmp_path / "store").recall_alias("git-sha1", git_id) is None  # blob gone


def test_a_torn_alias_record_from_a_crash_spoils_only_itself(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first, second = _stored(store, b"first"), _stored(store, b"second")
    store.remember_alias("git-sha1", "a" * 40, first)
    with open(store.root / "aliases" / "git-sha1.log", "ab") as log:
        log.write(b"\n" + b"b" * 40 + b" " + second[:20].encode())  # killed mid-write
    reader = Store(tmp_path / "store")
    assert reader.recall_alias("git-sha1", "b" * 40) is None

    store.remember_alias("git-sha1", "c" * 40, second)  # the next build appends after it

    assert reader.recall_alias("git-sha1", "c" * 40) == second  # read incrementally
    fresh = Store(tmp_path / "store")
    assert fresh.recall_alias("git-sha1", "a" * 40) == first
    assert fresh.recall_alias("git-sha1", "c" * 40) == second
    assert fresh.recall_alias("git-sha1", "b" * 40) is None


def test_aliases_written_by_concurrent_builds_are_all_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    blobs = [_stored(store, f"file {i}".encode()) for i in range(40)]
    code = (
        "import sys; from builder.store import Store; s = Store(sys.argv[1]); "
        "[s.remember_alias('git-sha1', f'{i:040x}', b) for i, b in "
        "enumerate(sys.argv[3:]) if i % 2 == int(sys.argv[2])]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(store.root), str(parity), *blobs])
        for parity in (0, 1)
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    fresh = Store(tmp_path / "store")
    assert [fresh.recall_alias("git-sha1", f"{i:040x}") for i in range(40)] == blobs


def test_aliases_of_a_store_made_before_the_log_are_still_recalled(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    blob = _stored(store, b"older layout")
    git_id = "d" * 40
    legacy = store.root / "aliases" / "git-sha1" / git_id[:2] / git_id
    legacy.parent.mkdir(parents=True)
    legacy.write_text(blob)
    assert Store(tmp_path / "store").recall_alias("git-sha1", git_id) == blob


def test_a_store_with_fan_out_folders_keeps_its_layout(tmp_path: Path) -> None:
    """Stores made before the flat layout hold blobs/sha256/ab/<sha>: still found, and new
    blobs go the same way (no store is half one layout, half the other)."""
    old = tmp_path / "old-store"
    data, more = os.urandom(500), os.urandom(700)
    (old / "blobs/sha256" / sha(data)[:2]).mkdir(parents=True)
    (old / "blobs/sha256" / sha(data)[:2] / sha(data)).write_bytes(data)

    store = Store(old)
    assert store.has(sha(data), len(data)) and not store.flat
    src = tmp_path / "more.bin"
    src.write_bytes(more)
    assert store.blob_path(store.add_file(src)) == old / "blobs/sha256" / sha(more)[:2] / sha(more)
    assert not (old / "layout").exists()
    assert Store(tmp_path / "new-store").flat and (tmp_path / "new-store/layout").read_text() == "flat\n"
