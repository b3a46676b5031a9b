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

Modules: ``diskio`` (hashing, writing, durability, error texts), ``aliases`` (git ids
of verified blobs), ``blobs`` (the Store). Imports builder.errors and runtime.constants
only.
"""

from builder.store.blobs import Store
from builder.store.diskio import (
    BLOB_MODE,
    CHUNK_SIZE,
    HASH_CHUNK,
    LINK_REFUSED,
    WRITE_SLICE,
    sha256_file,
    start_writeback,
    write_all,
)

__all__ = [
    "BLOB_MODE", "CHUNK_SIZE", "HASH_CHUNK", "LINK_REFUSED", "WRITE_SLICE", "Store",
    "sha256_file", "start_writeback", "write_all",
]
