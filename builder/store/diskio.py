"""File-system pieces of the store: hashing, writing, durability, errors that say what to do."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from builder.errors import StoreError
from runtime import constants

#: Read size when hashing or copying files.
CHUNK_SIZE = 1 << 20
#: Read size when hashing whole bundle files (large reads keep a disk busy).
HASH_CHUNK = 8 << 20
BLOB_MODE = 0o444
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
#: errno values for which a hard link is refused and a copy is the answer.
LINK_REFUSED = {
    errno.EXDEV,
    errno.EPERM,
    errno.EMLINK,
    errno.EACCES,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
}



def sha256_file(
    path: Path, *, chunk_size: int = CHUNK_SIZE, progress: Callable[[int], object] | None = None
) -> str:
    """Hex sha256 of a file's bytes; ``progress`` is called with each chunk's length."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


#: Largest single write(). Measured on this project's Linux VM (ext4, 800 MB of
#: new file from one hot buffer, 3 interleaved rounds), CPU seconds per GB:
#: 1 MiB writes 2.0-2.5, 64 KiB 0.21-0.23, 32 KiB 0.25-0.28, 16 KiB 0.32-0.38,
#: 4 KiB 0.8-1.1 (system calls). Large writes make the page cache allocate large
#: folios, which were ten times slower to fill here. In the whole download
#: pipeline (3 files, 1.6 GB, 3 rounds each) 32 KiB won: 1.58 s against 1.73 s
#: for 16 KiB, 2.34 s for 64 KiB and 3.55 s for 1 MiB writes.
WRITE_SLICE = 32 << 10


def write_all(file: Any, data: Any) -> None:
    """Write every byte of ``data`` to an unbuffered file, in WRITE_SLICE pieces."""
    view = memoryview(data)
    while view:
        view = view[file.write(view[:WRITE_SLICE]) :]


#: sync_file_range(2) flag: start writeback of the range's dirty pages, don't wait.
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` to disk, now.

    A blob must be on disk before it is named (the final ``fsync``). Started
    while the download goes on, the disk writes overlap the network instead of
    all waiting for that ``fsync`` at the end: on loopback, fsyncing a 1 GB file
    that was never written back takes ~2 s here. Linux ``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE`` does not block and does not make anything durable
    by itself; elsewhere (or if the call is missing) this does nothing and the
    final ``fsync`` does all the work, as before.
    """
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = _load_sync_file_range()
    if _sync_file_range is not False:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # errors ignored


def _load_sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return False
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


def syncfs(path: Path) -> bool:
    """syncfs(2) of the file system holding ``path``; False where there is none."""
    libc = _load_libc()
    if libc is None or not hasattr(libc, "syncfs"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
        return True
    finally:
        os.close(fd)


@functools.cache
def _load_libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (OSError, ImportError):  # pragma: no cover - not Linux
        return None



def check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
        raise StoreError(f"not a sha256 (64 lowercase hex digits): {sha256!r}")
    return sha256


def store_os_error(exc: OSError, what: str) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(
            f"disk full while {what}: free space on that file system, or point the store "
            f"elsewhere with --store DIR or ${constants.ENV_STORE}"
        )
    return StoreError(f"store error while {what}: {exc}")


@contextlib.contextmanager
def flocked(path: str | os.PathLike, *, exclusive: bool = True, wait: bool = True) -> Iterator[None]:
    """Hold an flock on ``path`` (created when missing) for the block: an inter-process and
    inter-thread lock (the lock belongs to this open file description).

    Raises:
        BlockingIOError: ``wait`` is False and someone else holds it.
        OSError: the lock file cannot be opened.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def making_parent(op: Callable[[Path, Path], None], src: Path, dest: Path) -> None:
    """``op(src, dest)`` (``os.replace``, ``os.link``), creating ``dest``'s folder when
    it is missing.

    Tries the operation first: the 256 fan-out folders exist after the first few
    hundred files, and ``mkdir`` on an existing folder costs a locked system
    call per file while other threads create files in it.
    """
    try:
        op(src, dest)
    except FileNotFoundError:
        if not os.path.exists(src):
            raise
        dest.parent.mkdir(parents=True, exist_ok=True)
        op(src, dest)


def replace_making_parent(src: Path, dest: Path) -> None:
    """``os.replace(src, dest)``, creating ``dest``'s folder when it is missing."""
    making_parent(os.replace, src, dest)


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
