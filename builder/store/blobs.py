"""The Store: verified blobs by sha256, partial downloads, locks, scratch space."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from builder.errors import IntegrityError, StoreError
from builder.store.aliases import AliasLog
from builder.store.diskio import (
    BLOB_MODE,
    CHUNK_SIZE,
    LINK_REFUSED,
    check_sha256,
    flocked,
    making_parent,
    replace_making_parent,
    sha256_file,
    store_os_error,
    syncfs,
    unlink_quietly,
    write_all,
)
from runtime import constants

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")


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
        try:
            blobs = self.root / "blobs" / "sha256"
            self.flat = self._flat_layout(blobs)
            for sub in ("blobs/sha256", "partial", "locks", "tmp", "aliases"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_os_error(exc, f"creating the store at {self.root}") from exc
        self._blobs = str(blobs)
        self.aliases = AliasLog(self.root, self.has)

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
        check_sha256(sha256)
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
            held = flocked(path)
            held.__enter__()
        except OSError as exc:
            raise store_os_error(exc, f"creating the lock {path}") from exc
        try:
            yield
        finally:
            held.__exit__(None, None, None)

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
                unlink_quietly(src)
                return dest
            os.chmod(src, BLOB_MODE)
            try:
                self._name(src, dest, sha256)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # src is on another file system: copy next to the blobs, then name it.
                tmp = self._copy_to_tmp(src, hash_it=False)[0]
                os.chmod(tmp, BLOB_MODE)
                self._name(tmp, dest, sha256)
                unlink_quietly(src)
        except StoreError:
            raise
        except OSError as exc:
            raise store_os_error(exc, f"moving {src} into the store as {sha256}") from exc
        return dest

    def _name(self, src: Path, dest: Path, sha256: str) -> None:
        """Give ``src`` the blob name ``dest`` unless a good blob already has it.

        A hard link cannot replace an existing name, so of two builds that verified
        the same bytes at once (deferred commits run outside the download lock) the
        first one's inode stays, and bundles that already link to it keep sharing it;
        the second copy is dropped. Only a damaged blob (wrong size) is replaced.
        """
        try:
            making_parent(os.link, src, dest)
        except FileExistsError:
            if not self.has(sha256, src.stat().st_size):
                replace_making_parent(src, dest)
                return
        except OSError as exc:
            if exc.errno not in LINK_REFUSED:
                raise
            replace_making_parent(src, dest)  # a file system without hard links: rename
            return
        unlink_quietly(src)

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
            if len(pending) == 1 or not syncfs(self.root):
                for src, _sha in pending:
                    fd = os.open(src, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        except OSError as exc:
            raise store_os_error(exc, f"flushing {len(pending)} file(s) into the store") from exc
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
            check_sha256(expected_sha256)
        same_fs = self._same_file_system(src)
        try:
            if move and same_fs:
                actual = sha256_file(src)
                staged = src
            else:
                # One pass: copy into tmp/ (next to the blobs) and hash on the way.
                staged, actual = self._copy_to_tmp(src, hash_it=True)
        except OSError as exc:
            raise store_os_error(exc, f"adding {src} to the store") from exc
        if expected_sha256 is not None and actual != expected_sha256:
            if staged != src:
                unlink_quietly(staged)
            raise IntegrityError(
                f"{src}: sha256 {actual} does not match the expected {expected_sha256}; "
                "not added to the store",
                expected=expected_sha256,
                actual=actual,
            )
        self.add_verified(staged, actual)  # consumes staged (drops it if the blob exists)
        if move:
            unlink_quietly(src)  # a no-op when src itself was moved in
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
            unlink_quietly(tmp)
            raise
        return tmp, (digest.hexdigest() if digest is not None else None)

    # --- aliases: other content ids of verified blobs -----------------------

    # --- aliases (builder.store.aliases) -------------------------------------

    def remember_alias(self, kind: str, key: str, sha256: str) -> None:
        """Record that the verified blob ``sha256`` also has the content id ``key``
        (see AliasLog.remember: only for bytes checked against ``key``)."""
        self.aliases.remember(kind, key, sha256)

    def recall_alias(self, kind: str, key: str, size: int | None = None) -> str | None:
        """The sha256 of a stored blob with content id ``key`` (and ``size``), else None."""
        return self.aliases.recall(kind, key, size)

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
            unlink_quietly(tmp)
            raise store_os_error(exc, f"writing {dest}") from exc
        return how
