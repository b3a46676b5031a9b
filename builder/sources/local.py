"""``source = "local"``: a file or a folder of the build machine, pinned by sha256.

For what no server publishes: your own fine-tuned weights, a training run's
``best.pt``, a checkpoint whose public URL is gone and of which you hold a copy.

    [[artifact]]                       # one file -> files/ID/FILENAME
    id = "celeba-hq"
    source = "local"
    path = "checkpoints/celeba_hq.ckpt"   # relative to the spec (or absolute, or ~/...)
    sha256 = "<64 hex>"

    [[artifact]]                       # a folder -> files/ID/...
    id = "my-vit"
    source = "local"
    path = "runs/vit/hf"
    repo = "me/my-finetuned-vit"       # optional: laid out as that Hub repo, so that
    files = { "config.json" = "<64 hex>", "model.safetensors" = "<64 hex>" }
                                       # from_pretrained("me/my-finetuned-vit") finds it

A file is pinned by ``sha256``, a folder by ``files`` (every file it ships, by its
path in the folder; ``include``/``exclude`` globs narrow what is taken). Without
pins the build stops and prints the lines to add, with the hashes of the files as
they are now; ``--trust-on-first-use`` takes them as they are and warns. The copy
into the store is checked against the pins, so a file changed after you pinned it
is refused, never bundled.

Refused with one line: a path that does not exist, a device, socket or FIFO, a
symlink inside the folder that leads out of it (a Hugging Face cache snapshot is
such a folder: use ``source = "hf"``, or point ``path`` at a ``save_pretrained``
folder), and credential files (kaggle.json, .netrc, an HF ``token``).

With ``repo``, the folder goes where the Hub cache keeps that repo
(``hf/models--ORG--NAME/snapshots/COMMIT``, ``refs/main``); COMMIT is derived from
the files' hashes, so another version of the folder is another snapshot.

The files are copied by the build itself (``builder.pipeline.download``), not
fetched: a plan file's URL is ``file://`` + the absolute path, and only this
source's plans may hold one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuildError
from builder.sources import (
    HUB_SNAPSHOT_FIELDS,
    TORCH_HUB_FIELD,
    URL_FILE_FIELDS,
    FieldSpec,
    Source,
    register_source,
)
from builder.sources.hf import REPO_RE, repo_folder
from builder.sources.records import GeneratedFile, PlannedFile, ResolveContext, ResolvedArtifact
from runtime.constants import FILES_DIR, TORCH_CHECKPOINTS_DIR

if TYPE_CHECKING:
    from builder.artifact import ArtifactSpec

#: The scheme of a plan file that the build copies from this machine.
LOCAL_SCHEME = "file://"
#: File names that hold credentials: never copied into a bundle.
CREDENTIAL_NAMES = frozenset({"kaggle.json", ".netrc", "_netrc", ".git-credentials", "token",
                              "stored_tokens", ".env"})
_SHA256_LEN = 64


def local_url(path: Path) -> str:
    return LOCAL_SCHEME + str(path)


def local_path(url: str) -> Path | None:
    """The file a plan's ``file://`` URL names, or None for any other URL."""
    return Path(url[len(LOCAL_SCHEME):]) if url.startswith(LOCAL_SCHEME) else None


def pin_of(path: Path) -> str:
    """The sha256 a spec pins ``path`` with."""
    from builder.store import HASH_CHUNK, sha256_file

    return sha256_file(path, chunk_size=HASH_CHUNK)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "not a regular file"


@register_source("local")
class LocalSource(Source):
    """A file or folder on the build machine."""

    ref_field = "path"
    #: the files may change between builds: resolve (stat, walk) every time
    reuse_plan = False
    local_files = True
    fields = {
        "path": FieldSpec(str, required=True, help="file or folder on this machine, relative "
                          "to the spec (or absolute, or ~/...)"),
        "sha256": URL_FILE_FIELDS["sha256"],
        "size": URL_FILE_FIELDS["size"],
        "files": FieldSpec(dict, help='a folder\'s pins: { "PATH/IN/FOLDER" = "<sha256>", ... }'),
        "include": HUB_SNAPSHOT_FIELDS["include"],
        "exclude": HUB_SNAPSHOT_FIELDS["exclude"],
        "filename": FieldSpec(str, help="a file's name in the bundle (default: its own name)"),
        "torch_hub": TORCH_HUB_FIELD,
        "repo": FieldSpec(str, help="a folder's Hub repo id ORG/NAME: laid out as the Hub "
                          "cache, so from_pretrained(ORG/NAME) finds it"),
    }

    def check(self, options: dict) -> str | None:
        if "sha256" in options and "files" in options:
            return "fields 'sha256' (a file's pin) and 'files' (a folder's pins) exclude each other"
        for rel, digest in (options.get("files") or {}).items():
            if len(digest) != _SHA256_LEN or any(c not in "0123456789abcdefABCDEF" for c in digest):
                return f"field 'files': the sha256 of {rel!r} must be 64 hex digits, got {digest!r}"
        repo = options.get("repo")
        if repo is not None and not REPO_RE.match(repo):
            return f"field 'repo' must be ORG/NAME, got {repo!r}"
        if repo is not None and options.get("torch_hub"):
            return "fields 'repo' (a Hub folder) and 'torch_hub' (one checkpoint file) exclude each other"
        return None

    def resolve(self, artifact: ArtifactSpec, ctx: ResolveContext) -> ResolvedArtifact:
        here = f"artifact '{artifact.id}'"
        written = artifact.get("path")
        base = Path(ctx.spec_path).parent if ctx.spec_path else Path.cwd()
        src = Path(os.path.abspath(base / Path(written).expanduser()))
        try:
            mode = os.stat(src).st_mode
        except FileNotFoundError:
            raise BuildError(f"{here}: field 'path': {src} does not exist", artifact=artifact.id) from None
        except OSError as e:
            raise BuildError(f"{here}: field 'path': cannot read {src}: {e.strerror}",
                             artifact=artifact.id) from None
        if stat.S_ISREG(mode):
            return self._file(artifact, src, ctx)
        if stat.S_ISDIR(mode):
            return self._folder(artifact, src, ctx)
        raise BuildError(f"{here}: field 'path': {src} is {_kind(mode)}, not a file or folder",
                         artifact=artifact.id)

    # --- one file ------------------------------------------------------------------

    def _file(self, artifact: ArtifactSpec, src: Path, ctx: ResolveContext) -> ResolvedArtifact:
        here = f"artifact '{artifact.id}'"
        _refuse_fields(artifact, ("files", "repo", "include", "exclude"), f"is for a folder; {src} is a file")
        _refuse_credential(here, src.name, src)
        sha256, warnings = artifact.sha256, []
        if sha256 is None:
            if not ctx.trust_on_first_use:
                raise BuildError(
                    f"{here}: field 'sha256' is required for a local file; if {src} is the file "
                    f"you mean, add sha256 = \"{pin_of(src)}\" (its hash now), or build with "
                    "--trust-on-first-use", artifact=artifact.id)
            warnings.append(f"{here}: TRUSTING FIRST USE of {src}: no sha256 in the spec; the "
                            "hash of the file as it is now is recorded in bundle.json; pin it "
                            "in the spec")
        filename = artifact.get("filename") or src.name
        folder = TORCH_CHECKPOINTS_DIR if artifact.get("torch_hub") else f"{FILES_DIR}/{artifact.id}"
        path = f"{folder}/{filename}"
        return ResolvedArtifact(
            id=artifact.id, source="local", ref=filename, revision=None, path=path,
            files=[PlannedFile(path, [local_url(src)], sha256=sha256, size=artifact.size)],
            warnings=warnings,
        )

    # --- a folder ------------------------------------------------------------------

    def _folder(self, artifact: ArtifactSpec, src: Path, ctx: ResolveContext) -> ResolvedArtifact:
        here = f"artifact '{artifact.id}'"
        _refuse_fields(artifact, ("sha256", "size", "filename", "torch_hub"), f"is for a file; {src} is a folder")
        found = _walk(here, src, artifact.include, artifact.exclude)
        if not found:
            raise BuildError(f"{here}: field 'path': {src} holds no files"
                             + (" that include/exclude keep" if artifact.include or artifact.exclude else ""),
                             artifact=artifact.id)
        pins = {k: v.lower() for k, v in (artifact.get("files") or {}).items()}
        warnings: list[str] = []
        if pins:
            missing = sorted(set(pins) - set(found))
            unpinned = sorted(set(found) - set(pins))
            if missing:
                raise BuildError(f"{here}: field 'files' pins {_listing(missing)}, not in {src}",
                                 artifact=artifact.id)
            if unpinned:
                raise BuildError(
                    f"{here}: {src} holds {_listing(unpinned)} that field 'files' does not pin; "
                    "pin them, or leave them out with exclude = [...]", artifact=artifact.id)
            digests = pins
        else:
            # Hashed now: the error shows the pins to add; with --trust-on-first-use the
            # copy is checked against them (a file changing during the build is refused).
            digests = {rel: pin_of(real) for rel, real in found.items()}
            if not ctx.trust_on_first_use:
                raise BuildError(f"{here}: field 'files' is required for a local folder; if "
                                 f"{src} holds what you mean, add {_pins(digests)}, or build "
                                 "with --trust-on-first-use", artifact=artifact.id)
            warnings.append(f"{here}: TRUSTING FIRST USE of the {len(found)} file(s) of {src}: "
                            f"pin them in the spec: {_pins(digests)}")
        repo = artifact.get("repo")
        generated, revision, ref = [], None, src.name
        if repo:
            listing = "".join(f"{rel}\0{digests[rel]}\n" for rel in sorted(digests))
            revision = hashlib.sha1(listing.encode()).hexdigest()
            folder = repo_folder(repo)
            root = f"{folder}/snapshots/{revision}"
            generated = [GeneratedFile(f"{folder}/refs/main", revision.encode())]
            ref = repo
        else:
            root = f"{FILES_DIR}/{artifact.id}"
        files = [PlannedFile(f"{root}/{rel}", [local_url(found[rel])], sha256=digests[rel])
                 for rel in sorted(found)]
        return ResolvedArtifact(id=artifact.id, source="local", ref=ref, revision=revision,
                                path=root, files=files, generated=generated, warnings=warnings)


def _walk(here: str, root: Path, include: list[str] | None,
          exclude: list[str] | None) -> dict[str, Path]:
    """The regular files under ``root`` by their POSIX path in it (symlinks followed only
    when they stay inside), kept by ``include``/``exclude``.

    Raises:
        BuildError: a symlink that leads out of ``root``, a device, socket or FIFO, or a
            credential file among the files kept.
    """
    real_root = os.path.realpath(root)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            try:
                lmode = os.lstat(full).st_mode
            except OSError as e:
                raise BuildError(f"{here}: cannot read {full}: {e.strerror}") from None
            if stat.S_ISDIR(lmode):
                continue  # os.walk goes in
            if stat.S_ISLNK(lmode):
                target = os.path.realpath(full)
                if os.path.commonpath([real_root, target]) != real_root:
                    raise BuildError(
                        f"{here}: {full} is a symlink out of the folder (to {target}); copy the "
                        "file into the folder, or (a Hugging Face cache snapshot) use "
                        'source = "hf" or a save_pretrained folder')
                if os.path.isdir(target):
                    raise BuildError(f"{here}: {full} is a symlink to a folder; replace it "
                                     "with the folder itself")
            mode = os.stat(full).st_mode
            if not stat.S_ISREG(mode):
                raise BuildError(f"{here}: {full} is {_kind(mode)}; a bundle holds regular files only")
            if include and not any(fnmatch.fnmatch(rel, p) for p in include):
                continue
            if exclude and any(fnmatch.fnmatch(rel, p) for p in exclude):
                continue
            _refuse_credential(here, name, full)
            found[rel] = full
    return found


def _refuse_fields(artifact: ArtifactSpec, names: tuple[str, ...], why: str) -> None:
    """The spec set a field that does not apply to what ``path`` turned out to be."""
    for name in names:
        if artifact.get(name) is not None:
            raise BuildError(f"artifact '{artifact.id}': field '{name}' {why}", artifact=artifact.id)


def _refuse_credential(here: str, name: str, path: Path) -> None:
    if name in CREDENTIAL_NAMES:
        raise BuildError(f"{here}: {path} looks like a credential file ({name}); a bundle "
                         "never carries credentials: leave it out (exclude = [...]) or move it")


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _pins(digests: dict[str, str]) -> str:
    inner = ", ".join(f'"{rel}" = "{digest}"' for rel, digest in sorted(digests.items()))
    return f"files = {{ {inner} }}"
