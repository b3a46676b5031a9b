"""Content-addressed store: every fetched file kept once, keyed by its sha256.

Layout under the store root::

    blobs/sha256/<64 hex>      verified blobs, read-only (0444); stores made before
                               the flat layout keep blobs/sha256/ab/<64 hex> (and
                               have no ``layout`` file), still read and written
    layout                     "flat": the blob layout of this store
    partial/<key>.part         resumable downloads in progress (never trusted as is)
    locks/<key>.lock           inter-process locks, one per download key
    tmp/                       scratch files being copied in (same file system as blobs/)
    aliases/git-sha1.log       "<40 hex> <sha256>" records: the verified blob whose git blob
                               id is that (Hub files kept in git come with no sha256, only
                               their git id); appended, one write per record. Stores made
                               before it hold aliases/git-sha1/ab/<40 hex> files, still read.

Rules the rest of the builder relies on:

* A blob appears under its final name only after its bytes were hashed and
  matched; it is moved there with one atomic ``os.replace``. A crash or a full
  disk leaves at most a file in ``partial/`` or ``tmp/``, never a bad blob.
* ``has()`` trusts the name and the size and never re-hashes, so a rebuild of an
  unchanged bundle costs a few ``stat`` calls however many gigabytes it holds.
* Builds sharing one store (threads or processes) take ``lock(key)`` around a
  download and re-check ``has()`` once they hold it.
* Bundles get blobs by hard link (``materialise``). Blobs are made read-only so
  that a user who opens a bundle file for writing gets "permission denied"
  instead of silently rewriting the shared inode, which would corrupt the store
  and every other bundle linked to it. (root ignores file modes; a root user
  editing a bundle file in place still edits the store: rebuild with a fresh
  store if that happened.)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import stat
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from builder.errors import IntegrityError, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
from runtime import constants

#: Read size when hashing or copying files.
CHUNK_SIZE = 1 << 20
#: Read size when hashing whole bundle files (large reads keep a disk busy).
HASH_CHUNK = 8 << 20
BLOB_MODE = 0o444
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
_ALIAS_KEY_RE = re.compile(r"^[0-9a-f]{40}\Z|^[0-9a-f]{64}\Z")
_ALIAS_RECORD_RE = re.compile(rb"^([0-9a-f]{40}|[0-9a-f]{64}) ([0-9a-f]{64})\Z")
_ALIAS_KINDS = ("git-sha1",)
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


def _syncfs(path: Path) -> bool:
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


def _check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise StoreError(f"not a sha256 (64 lowercase hex digits): {sha256!r}")
    return sha256


def _store_os_error(exc: OSError, what: str) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(
            f"disk full while {what}: free space on that file system, or point the store "
            f"elsewhere with --store DIR or ${constants.ENV_STORE}"
        )
    return StoreError(f"store error while {what}: {exc}")


def _replace_making_parent(src: Path, dest: Path) -> None:
    """``os.replace(src, dest)``, creating ``dest``'s folder when it is missing.

    Tries the rename first: the 256 fan-out folders exist after the first few
    hundred files, and ``mkdir`` on an existing folder costs a locked system
    call per file while other threads create files in it.
    """
    try:
        os.replace(src, dest)
    except FileNotFoundError:
        if not os.path.exists(src):
            raise
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class Store:
    """A sha256-keyed blob store on disk, shared safely by concurrent builds."""

    def __init__(self, root: Path | None = None) -> None:
        """Open (and create if needed) the store at ``root``.

        Args:
            root: store folder; default ``runtime.constants.store_dir()``
                ($OFFLINE_BUNDLE_STORE or ~/.cache/offline-bundle/store).

        Raises:
            StoreError: the folder cannot be created.
        """
        self.root = Path(root if root is not None else constants.store_dir()).expanduser()
        self._alias_lock = threading.Lock()
        self._alias_cache: dict[str, dict[str, str]] = {}  # kind -> key -> sha256
        self._alias_read: dict[str, int] = {}  # kind -> bytes of the log parsed so far
        try:
            blobs = self.root / "blobs" / "sha256"
            self.flat = self._flat_layout(blobs)
            for sub in ("blobs/sha256", "partial", "locks", "tmp", "aliases"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_os_error(exc, f"creating the store at {self.root}") from exc
        self._blobs = str(blobs)

    def _flat_layout(self, blobs: Path) -> bool:
        """New stores keep every blob in one folder: a fan-out folder costs a mkdir per
        new prefix (~0.4 ms here, most of what a small file costs). A store that has
        fan-out folders and no ``layout`` file keeps them."""
        marker = self.root / "layout"
        try:
            return marker.read_text().strip() == "flat"
        except FileNotFoundError:
            pass
        if blobs.is_dir() and any(True for _ in os.scandir(blobs)):
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        marker.write_text("flat\n")
        return True

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- lookup -----------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives (whether or not it exists)."""
        _check_sha256(sha256)
        if self.flat:
            return Path(f"{self._blobs}/{sha256}")
        return Path(f"{self._blobs}/{sha256[:2]}/{sha256}")

    def has(self, sha256: str, size: int | None = None) -> bool:
        """True when the blob exists (and has ``size`` bytes, if given).

        Never re-hashes: blobs were verified before they got their name.
        """
        try:
            st = self.blob_path(sha256).stat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def partial_path(self, key: str) -> Path:
        """The resumable download file for ``key`` (a sha256 or any short id)."""
        return self.root / "partial" / f"{self._safe_key(key)}.part"

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the inter-process (and inter-thread) lock for ``key``.

        Use around a download of one blob; re-check ``has()`` once inside.
        """
        path = str(self.root / "locks" / f"{self._safe_key(key)}.lock")
        if fcntl is None:  # pragma: no cover - Windows
            from filelock import FileLock

            with FileLock(path):
                yield
            return
        # flock on a descriptor of our own: two threads of one process exclude each
        # other just like two processes (the lock belongs to the open file
        # description). Four system calls; filelock's bookkeeping cost ~1 ms a file
        # under load, which a repo of hundreds of small files adds up.
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _store_os_error(exc, f"creating the lock {path}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _safe_key(key: str) -> str:
        if _SAFE_KEY_RE.match(key) and key not in (".", ".."):
            return key
        return hashlib.sha256(key.encode()).hexdigest()

    # --- adding -----------------------------------------------------------

    def add_verified(self, src: Path, sha256: str) -> Path:
        """Move ``src``, whose bytes the caller hashed as ``sha256``, into the store.

        ``src`` should live on the store's file system (``partial_path`` or
        ``tmp/``); otherwise it is copied into ``tmp/`` first. ``src`` is gone
        afterwards either way.

        Returns:
            The blob path (read-only).

        Raises:
            StoreError: the disk is full or the store is not writable; no blob
                is left under the final name.
        """
        dest = self.blob_path(sha256)
        src = Path(src)
        try:
            if self.has(sha256, src.stat().st_size):
                # Another build got there first: same bytes, keep the existing inode
                # (bundles may already link to it). A blob of the wrong size under
                # this name was damaged after the fact and is replaced below.
                _unlink_quietly(src)
                return dest
            os.chmod(src, BLOB_MODE)
            try:
                _replace_making_parent(src, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # src is on another file system: copy next to the blobs, then rename.
                tmp = self._copy_to_tmp(src, hash_it=False)[0]
                os.chmod(tmp, BLOB_MODE)
                os.replace(tmp, dest)
                _unlink_quietly(src)
        except StoreError:
            raise
        except OSError as exc:
            raise _store_os_error(exc, f"moving {src} into the store as {sha256}") from exc
        return dest

    def commit(self, pending: list[tuple[Path, str]]) -> list[Path]:
        """Make verified scratch files (``fetch(commit=False)``) durable, then name them.

        One ``syncfs`` of the store's file system for the group when there is more
        than one file (an fsync each costs ~0.3 ms here; a syncfs of a few hundred
        small files about 7 ms), else fsync; only then the renames. A crash before
        the end leaves unnamed scratch files in ``tmp/``, never an unverified or
        undurable blob under a name.

        Returns:
            The blob paths, in order.

        Raises:
            StoreError: flushing or naming failed (no file is named unflushed).
        """
        if not pending:
            return []
        try:
            if len(pending) == 1 or not _syncfs(self.root):
                for src, _sha in pending:
                    fd = os.open(src, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        except OSError as exc:
            raise _store_os_error(exc, f"flushing {len(pending)} file(s) into the store") from exc
        return [self.add_verified(src, sha256) for src, sha256 in pending]

    def add_file(self, src: Path, *, expected_sha256: str | None = None, move: bool = True) -> str:
        """Hash ``src`` and add it to the store.

        Args:
            src: the file to add.
            expected_sha256: when given, the bytes must hash to this.
            move: consume ``src`` (default): renamed into the store when it is on
                the store's file system, else copied and then deleted. With
                ``move=False`` it is copied and stays where it is.

        Returns:
            The sha256 of the file.

        Raises:
            IntegrityError: the hash differs from ``expected_sha256``; nothing is added.
            StoreError: disk full or unwritable store; nothing is added.
        """
        src = Path(src)
        if expected_sha256 is not None:
            _check_sha256(expected_sha256)
        same_fs = self._same_file_system(src)
        try:
            if move and same_fs:
                actual = sha256_file(src)
                staged = src
            else:
                # One pass: copy into tmp/ (next to the blobs) and hash on the way.
                staged, actual = self._copy_to_tmp(src, hash_it=True)
        except OSError as exc:
            raise _store_os_error(exc, f"adding {src} to the store") from exc
        if expected_sha256 is not None and actual != expected_sha256:
            if staged != src:
                _unlink_quietly(staged)
            raise IntegrityError(
                f"{src}: sha256 {actual} does not match the expected {expected_sha256}; "
                "not added to the store",
                expected=expected_sha256,
                actual=actual,
            )
        self.add_verified(staged, actual)  # consumes staged (drops it if the blob exists)
        if move:
            _unlink_quietly(src)  # a no-op when src itself was moved in
        return actual

    def _same_file_system(self, src: Path) -> bool:
        try:
            return src.stat().st_dev == (self.root / "tmp").stat().st_dev
        except OSError:
            return False

    def _copy_to_tmp(self, src: Path, *, hash_it: bool) -> tuple[Path, str | None]:
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.tmp"
        digest = hashlib.sha256() if hash_it else None
        try:
            with open(src, "rb", buffering=0) as fin, open(tmp, "wb", buffering=0) as fout:
                while chunk := fin.read(CHUNK_SIZE):
                    if digest is not None:
                        digest.update(chunk)
                    write_all(fout, chunk)
                os.fsync(fout.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp, (digest.hexdigest() if digest is not None else None)

    # --- aliases: other content ids of verified blobs -----------------------

    # One append-only log per kind, not a file per alias: creating a file (and its
    # fan-out folder) cost ~1 ms each on this VM's ext4, a quarter of what a small
    # Hub file costs to fetch; an O_APPEND write costs no metadata change.

    def _alias_log(self, kind: str) -> Path:
        return self.root / "aliases" / f"{kind}.log"

    def remember_alias(self, kind: str, key: str, sha256: str) -> None:
        """Record that the verified blob ``sha256`` also has the content id ``key``.

        Only call it for bytes that were checked against ``key`` (e.g. the git blob
        id the Hub reported). Best effort: an alias that cannot be written costs a
        re-download later, never a wrong file.

        Each record is one ``write`` to a file opened with ``O_APPEND``, so records
        of concurrent builds never interleave. A record starts with a newline: one
        torn by a crash spoils only itself (it no longer parses), not the next.
        """
        if kind not in _ALIAS_KINDS or not _ALIAS_KEY_RE.match(key):
            return
        _check_sha256(sha256)
        try:
            fd = os.open(self._alias_log(kind), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"\n{key} {sha256}".encode())
            finally:
                os.close(fd)
        except OSError:
            return
        with self._alias_lock:
            self._alias_cache.setdefault(kind, {})[key] = sha256

    def recall_alias(self, kind: str, key: str, size: int | None = None) -> str | None:
        """The sha256 of a stored blob with content id ``key`` (and ``size``), else None."""
        if kind not in _ALIAS_KINDS or not _ALIAS_KEY_RE.match(key):
            return None
        # The log is read again only for a key not seen yet (appended since, maybe).
        sha256 = (
            self._alias_cache.get(kind, {}).get(key)
            or self._aliases(kind).get(key)
            or self._legacy_alias(kind, key)
        )
        if sha256 is None or not self.has(sha256, size):
            return None
        return sha256

    def _aliases(self, kind: str) -> dict[str, str]:
        """The log's records, read once per Store and then only the part appended since."""
        with self._alias_lock:
            known = self._alias_cache.setdefault(kind, {})
            offset = self._alias_read.get(kind, 0)
            try:
                with open(self._alias_log(kind), "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                return known
            records = data.split(b"\n")
            for record in records:
                match = _ALIAS_RECORD_RE.match(record)
                if match:
                    known.setdefault(match[1].decode(), match[2].decode())
            consumed = len(data)
            if records and not _ALIAS_RECORD_RE.match(records[-1]):
                # The last record may still be being written: read it again next time
                # (one torn by a crash stays unparsable and is skipped forever).
                consumed -= len(records[-1])
            self._alias_read[kind] = offset + consumed
            return known

    def _legacy_alias(self, kind: str, key: str) -> str | None:
        path = self.root / "aliases" / kind / key[:2] / key
        try:
            sha256 = path.read_text().strip()
        except OSError:
            return None
        return sha256 if _SHA256_RE.match(sha256) else None

    # --- materialising ----------------------------------------------------

    def materialise(self, sha256: str, dest: Path) -> str:
        """Make ``dest`` hold the blob's bytes: a hard link, or a copy when linking is refused.

        The bytes go to a temporary name in ``dest``'s folder first and are
        renamed into place, so ``dest`` never holds partial bytes. ``dest`` is
        readable by all users (and read-only, like the blob).

        Returns:
            "exists" (dest already is this blob), "link" or "copy".

        Raises:
            StoreError: the blob is missing, or the destination cannot be written
                (the message says which, e.g. disk full).
        """
        blob = self.blob_path(sha256)
        dest = Path(dest)
        try:
            blob_st = blob.stat()
        except OSError as exc:
            raise StoreError(
                f"blob {sha256} is not in the store at {self.root}; fetch it before "
                f"materialising {dest}"
            ) from exc
        with contextlib.suppress(OSError):
            dest_st = dest.stat()
            if (dest_st.st_dev, dest_st.st_ino) == (blob_st.st_dev, blob_st.st_ino):
                return "exists"
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob, tmp)
                how = "link"
            except OSError as exc:
                if exc.errno not in LINK_REFUSED:
                    raise
                shutil.copyfile(blob, tmp)
                os.chmod(tmp, BLOB_MODE)
                how = "copy"
            os.replace(tmp, dest)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise _store_os_error(exc, f"writing {dest}") from exc
        return how
