"""`bundle.json`: the manifest and lock of a bundle folder.

The single source of truth about a bundle. The builder writes it, the runtime,
`bundle verify`, publish and image read it. Nothing in this module imports
anything heavy: it runs inside `runtime.activate()`.

Shape (format 1)::

    {
      "format": 1,
      "name": "emotion-vit", "version": "1.0.0", "title": "...",
      "stacks": ["emotion-vit"],
      "digest": "<sha256 hex over the sorted file list>",
      "created": "2026-11-21T10:00:00Z",
      "artifacts": [
        {"id": "vit-in21k", "source": "hf", "ref": "google/vit-base-patch16-224-in21k",
         "revision": "<commit>", "path": "hf/models--google--vit.../snapshots/<commit>",
         "aliases": [], "fallbacks": ["vit-base"],
         "files": [{"path": "hf/.../config.json", "size": 123, "sha256": "..."}]}
      ],
      "extra_files": [{"path": "wheels/x.whl", "size": 1, "sha256": "..."}]
    }

`path` is what `runtime.resolve()` returns for the artifact (a snapshot folder
or a single file), relative to the bundle folder. `extra_files` holds files that
belong to no artifact (wheels, notebooks). Every path is relative, uses "/",
and stays inside the bundle folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime._record import FrozenRecord, Record, json_fields
from runtime.constants import GENERATED_FILES, MANIFEST_FORMAT, MANIFEST_NAME
from runtime.errors import ManifestError

_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class FileEntry(FrozenRecord):
    """One file of a bundle: its path relative to the bundle, size and sha256."""

    __slots__ = ("path", "size", "sha256")
    _fields = __slots__

    def __init__(self, path: str, size: int, sha256: str) -> None:
        self._set("path", path)
        self._set("size", size)
        self._set("sha256", sha256)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


class ArtifactEntry(Record):
    """One artifact of a bundle: where resolve() points (`path`) and the files it holds."""

    _fields = ("id", "source", "ref", "revision", "path", "files", "aliases", "fallbacks", "commit")

    def __init__(
        self,
        id: str,
        source: str,
        ref: str,
        revision: str | None,
        path: str,
        files: list[FileEntry],
        aliases: list[str] | None = None,
        fallbacks: list[str] | None = None,
        commit: str | None = None,
    ) -> None:
        self.id = id
        self.source = source
        self.ref = ref
        self.revision = revision
        self.path = path
        self.files = files
        self.aliases = [] if aliases is None else aliases
        self.fallbacks = [] if fallbacks is None else fallbacks
        #: what the build resolved `revision` to (a Hub commit); bundles made before this
        #: field held the commit in `revision` itself
        self.commit = commit if commit is not None else revision

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def names(self) -> list[str]:
        """Every name `runtime.resolve()` accepts for this artifact."""
        return [self.id, self.ref, *self.aliases]

    def to_json(self) -> dict[str, Any]:
        names = ("id", "source", "ref", "revision", *(("commit",) if self.commit is not None else ()),
                 "path", "aliases", "fallbacks")
        return json_fields(self, names, files=sorted(self.files, key=lambda f: f.path))


class Manifest(Record):
    """A bundle's bundle.json: its artifacts, other files and the digest over them all."""

    _fields = (
        "name", "version", "artifacts", "extra_files", "title", "stacks", "created", "digest",
        "format", "run",
    )

    def __init__(
        self,
        name: str,
        version: str,
        artifacts: list[ArtifactEntry],
        extra_files: list[FileEntry] | None = None,
        title: str = "",
        stacks: list[str] | None = None,
        created: str = "",
        digest: str = "",
        format: int = MANIFEST_FORMAT,
        run: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.artifacts = artifacts
        self.extra_files = [] if extra_files is None else extra_files
        self.title = title
        self.stacks = [] if stacks is None else stacks
        self.created = created
        self.digest = digest
        self.format = format
        #: a run bundle's record (bundle from-run): stack, command, code version, the base
        #: bundles the run loaded; None for a bundle of published models
        self.run = run

    def all_files(self) -> list[FileEntry]:
        """Every file of the bundle, sorted by path (generated top-level files excluded)."""
        files = [f for a in self.artifacts for f in a.files] + list(self.extra_files)
        return sorted(files, key=lambda f: f.path)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.all_files())

    def artifact(self, artifact_id: str) -> ArtifactEntry | None:
        return next((a for a in self.artifacts if a.id == artifact_id), None)

    def compute_digest(self) -> str:
        return compute_digest(self.all_files())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "stacks": list(self.stacks),
            "digest": self.digest or self.compute_digest(),
            "created": self.created,
            "artifacts": [a.to_json() for a in self.artifacts],
            "extra_files": [f.to_json() for f in sorted(self.extra_files, key=lambda f: f.path)],
            **({"run": self.run} if self.run is not None else {}),
        }


def _sha256() -> Any:
    # activate() checks 200 manifests' digests (a few kB each): Python's built-in
    # sha256 does that as fast as OpenSSL's, without hashlib loading OpenSSL
    # (~3.5 ms of `import runtime`). hashlib wherever the built-in is missing.
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # Python 3.12+
        except ImportError:
            from hashlib import sha256
    return sha256()


def compute_digest(files: list[FileEntry]) -> str:
    """sha256 over the sorted file list: one "path\\0size\\0sha256\\n" line per file."""
    h = _sha256()
    lines = "".join(
        f"{f.path}\0{f.size}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path)
    )
    h.update(lines.encode())  # one update: the same digest as one per line
    return h.hexdigest()


def check_relative_path(path: Any, where: str) -> str:
    """Return `path` if it is a safe relative POSIX path inside the bundle, else raise."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"{where}: must be a non-empty string, got {path!r}")
    if "\\" in path or _CONTROL_RE.search(path):
        raise ManifestError(
            f"{where}: {path!r} contains a backslash or a control character (NUL, newline, ...)"
        )
    # String tests, not PurePosixPath: this runs for every file of every bundle in activate().
    if path.startswith("/") or _DRIVE_RE.match(path):
        raise ManifestError(f"{where}: {path!r} is absolute; paths must be relative to the bundle")
    if any(part in ("..", ".", "") for part in path.split("/")):
        raise ManifestError(f"{where}: {path!r} has '..', '.' or empty parts (path traversal)")
    return path


def _get(obj: dict, key: str, typ: type | tuple, where: str, *, optional: bool = False) -> Any:
    if key not in obj:
        if optional:
            return None
        raise ManifestError(f"{where}: missing field '{key}'")
    value = obj[key]
    if optional and value is None:
        return None
    # bool is an int subclass; a size of `true` is a malformed manifest.
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ManifestError(f"{where}: field '{key}' must be {names}, got {type(value).__name__}")
    return value


def _clean_path(path: Any) -> bool:
    """True for an obviously safe relative path; False sends it to check_relative_path."""
    return (
        type(path) is str and path != "" and path[0] not in "/." and path[-1] != "/"
        and "/." not in path and "//" not in path and "\\" not in path
        and ":" not in path and path.isprintable()  # no NUL, newline or other control
    )


def _file_fast(obj: Any) -> FileEntry | None:
    """The common, clean file entry, without building any message text; else None.

    activate() validates every file of every attached bundle; the conservative
    checks here accept only what the exact checks would, and anything unusual
    (a "." part, a type mismatch, ...) goes to `_file_entry` for the precise error.
    """
    if type(obj) is dict:
        path, size, sha = obj.get("path"), obj.get("size"), obj.get("sha256")
        if (
            _clean_path(path) and type(size) is int and size >= 0
            and type(sha) is str and _SHA256_RE.match(sha)
        ):
            return FileEntry(path, size, sha)
    return None


def _file_entry_fast(obj: Any, where: str, index: int) -> FileEntry:
    return _file_fast(obj) or _file_entry(obj, f"{where}[{index}]")


def _str_list_fast(value: Any) -> list[str] | None:
    if value is None:
        return []
    if type(value) is list and all(type(v) is str for v in value):
        return list(value)
    return None


def _artifact_fast(raw: Any) -> ArtifactEntry | None:
    """A clean artifact entry built without message text, as _file_fast; else None."""
    if type(raw) is not dict:
        return None
    get = raw.get
    art_id, source, ref, path = get("id"), get("source"), get("ref"), get("path")
    revision, raw_files, commit = get("revision"), get("files"), get("commit")
    aliases, fallbacks = _str_list_fast(get("aliases")), _str_list_fast(get("fallbacks"))
    if not (
        type(art_id) is str and type(source) is str and type(ref) is str
        and (revision is None or type(revision) is str) and (commit is None or type(commit) is str)
        and _clean_path(path)
        and type(raw_files) is list and aliases is not None and fallbacks is not None
    ):
        return None
    files = []
    for obj in raw_files:
        entry = _file_fast(obj)
        if entry is None:
            return None
        files.append(entry)
    return ArtifactEntry(art_id, source, ref, revision, path, files, aliases, fallbacks, commit)


def _file_entry(obj: Any, where: str) -> FileEntry:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: must be an object with path, size, sha256")
    path = check_relative_path(_get(obj, "path", str, where), f"{where}.path")
    size = _get(obj, "size", int, where)
    if size < 0:
        raise ManifestError(f"{where}: field 'size' is negative ({size})")
    sha = _get(obj, "sha256", str, where)
    if not _SHA256_RE.match(sha):
        raise ManifestError(f"{where}: field 'sha256' is not 64 lowercase hex digits: {sha!r}")
    return FileEntry(path=path, size=size, sha256=sha)


def _str_list(obj: dict, key: str, where: str) -> list[str]:
    value = _get(obj, key, list, where, optional=True) or []
    if not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: field '{key}' must be a list of strings")
    return list(value)


def _artifact_exact(raw: Any, where: str, source: str) -> ArtifactEntry:
    """Validate one artifact entry field by field; the error names the field."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: must be an object")
    art_id = _get(raw, "id", str, where)
    where = f"{source}: artifact '{art_id}'"
    files = [
        _file_entry_fast(f, f"{where} files", j)
        for j, f in enumerate(_get(raw, "files", list, where))
    ]
    return ArtifactEntry(
        id=art_id,
        source=_get(raw, "source", str, where),
        ref=_get(raw, "ref", str, where),
        revision=_get(raw, "revision", str, where, optional=True),
        commit=_get(raw, "commit", str, where, optional=True),
        path=check_relative_path(_get(raw, "path", str, where), f"{where}.path"),
        files=files,
        aliases=_str_list(raw, "aliases", where),
        fallbacks=_str_list(raw, "fallbacks", where),
    )


def manifest_from_json(data: Any, source: str = MANIFEST_NAME) -> Manifest:
    """Validate parsed JSON and build a Manifest. `source` names the file in errors."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: top level must be a JSON object")
    fmt = _get(data, "format", int, source)
    if fmt > MANIFEST_FORMAT:
        raise ManifestError(
            f"{source}: format {fmt} is newer than this runtime understands ({MANIFEST_FORMAT}); "
            "upgrade offline-bundle"
        )
    artifacts: list[ArtifactEntry] = []
    seen_ids: set[str] = set()
    seen_paths: set[str] = set()
    raw_artifacts = _get(data, "artifacts", list, source)
    for i, raw in enumerate(raw_artifacts):
        artifact = _artifact_fast(raw) or _artifact_exact(raw, f"{source}: artifacts[{i}]", source)
        if artifact.id in seen_ids:
            raise ManifestError(f"{source}: artifact '{artifact.id}': duplicate id")
        seen_ids.add(artifact.id)
        for f in artifact.files:
            if f.path in seen_paths:
                raise ManifestError(
                    f"{source}: artifact '{artifact.id}': file {f.path!r} is listed twice"
                )
            seen_paths.add(f.path)
        artifacts.append(artifact)
    extra = [
        _file_entry_fast(f, f"{source}: extra_files", j)
        for j, f in enumerate(_get(data, "extra_files", list, source, optional=True) or [])
    ]
    for f in extra:
        if f.path in seen_paths:
            raise ManifestError(f"{source}: file {f.path!r} is listed twice")
        seen_paths.add(f.path)
    manifest = Manifest(
        format=fmt,
        name=_get(data, "name", str, source),
        version=_get(data, "version", str, source),
        title=_get(data, "title", str, source, optional=True) or "",
        stacks=_str_list(data, "stacks", source),
        created=_get(data, "created", str, source, optional=True) or "",
        run=_get(data, "run", dict, source, optional=True),
        digest=_get(data, "digest", str, source),
        artifacts=artifacts,
        extra_files=extra,
    )
    if manifest.digest != manifest.compute_digest():
        raise ManifestError(
            f"{source}: field 'digest' does not match the file list (edited by hand or truncated?)"
        )
    return manifest


def read_document(path: str, error: type[Exception], *, missing: str, kind: str,
                  parse: Callable[[str], Any], invalid: type[Exception] | tuple) -> Any:
    """``parse`` of the UTF-8 text of a small document (bundle.json, a spec).

    Raises:
        error: one line naming ``path``: missing (``missing`` says what to check),
            unreadable, not UTF-8, not valid ``kind`` (``parse`` raised ``invalid``),
            or nested too deeply to read.
    """
    text = read_text(path, error, missing)
    try:
        return parse(text)
    except invalid as e:
        raise error(f"{path}: not valid {kind}: {e}") from None
    except RecursionError:
        raise error(f"{path}: not a {kind} document we can read (nested too deeply)") from None


def read_text(path: str, error: type[Exception], missing: str) -> str:
    """The UTF-8 text of ``path``; ``error`` with one line naming it when it is missing
    (``missing`` says what to check), unreadable or not UTF-8."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_manifest(bundle_dir: str | os.PathLike) -> Manifest:
    """Read and validate `bundle_dir/bundle.json`.

    Raises:
        ManifestError: the file is missing, not JSON, or fails validation; the
            message names the file and the field.
    """
    # Plain strings and bytes, not pathlib and a text wrapper: activate() reads
    # every attached bundle's manifest (pathlib was a third of this function).
    path = os.path.join(os.fspath(bundle_dir), MANIFEST_NAME)
    data = read_document(path, ManifestError, missing="not found; is this a bundle folder?",
                         kind="JSON", parse=json.loads, invalid=json.JSONDecodeError)
    return manifest_from_json(data, path)


def manifest_to_text(manifest: Manifest) -> str:
    """Deterministic JSON text (sorted artifacts keep spec order; files sorted by path)."""
    return json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"


def write_manifest(bundle_dir: str | os.PathLike, manifest: Manifest) -> Path:
    """Write bundle.json atomically (temp file + rename); fills in `digest`."""
    manifest.digest = manifest.compute_digest()
    path = Path(bundle_dir) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
    tmp.write_text(manifest_to_text(manifest), encoding="utf-8")
    os.replace(tmp, path)
    return path


def is_generated(path: str) -> bool:
    """True for top-level files derived from bundle.json (not listed in it)."""
    return "/" not in path and path in GENERATED_FILES
