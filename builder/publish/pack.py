"""`bundle pack` / `bundle unpack`: a bundle as one zip file, e.g. for Colab Drive.

The archive holds one top folder, ``NAME/``, so unpacking it into
``/content/drive/MyDrive/bundles/`` gives ``/content/drive/MyDrive/bundles/NAME/bundle.json``,
one of the places ``runtime.locate()`` searches. It is deterministic: entries
sorted by path, fixed timestamps and permissions, so the same bundle always
packs to the same bytes. Files are stored, not deflated: model weights hardly
compress and deflating gigabytes costs minutes (``--deflate`` if you want it).

:func:`unpack_bundle` extracts safely: it refuses absolute paths, ``..``,
backslashes, links and anything outside ``NAME/``, writes into a temporary
folder next to the target, checks every file against bundle.json, and only
then renames the folder into place. (``unzip`` or ``python -m zipfile -e``
also work; they do not verify the bytes.)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import click

from builder.errors import PackError, UnsafeArchiveError
from runtime.constants import GENERATED_FILES, MANIFEST_NAME
from runtime.manifest import ManifestError, check_relative_path

#: Zip's earliest representable time; every entry gets it (deterministic bytes).
_EPOCH = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20
#: Where Colab users keep bundles on Drive (one of runtime.locate()'s roots).
COLAB_BUNDLES_DIR = "/content/drive/MyDrive/bundles"


@dataclass
class PackResult:
    archive: Path
    name: str
    files: int
    size: int  # bytes of the archive


def _bundle_files(root: Path) -> list[str]:
    """Every file to pack: those bundle.json lists plus the generated top-level files."""
    from builder.credentials import refuse_secrets
    from builder.errors import BundleCheckError, CredentialError
    from builder.publish.checks import bundle_files_to_send, check_bundle

    try:
        manifest = check_bundle(root, action="packed")
        # The archive goes to Drive or elsewhere: no credential of this machine in it.
        refuse_secrets(bundle_files_to_send(root, manifest), action="nothing was packed")
    except (BundleCheckError, CredentialError) as e:
        raise PackError(str(e)) from None
    files = [f.path for f in manifest.all_files()]
    files += [name for name in sorted(GENERATED_FILES) if (root / name).is_file()]
    return sorted(files)


def pack_bundle(bundle_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                deflate: bool = False, progress: bool = False) -> PackResult:
    """Write the bundle folder as one deterministic zip with a top folder ``NAME/``.

    Args:
        bundle_dir: the bundle folder (checked first: sizes, no stray files).
        out: the archive to write; default ``NAME-VERSION.zip`` next to the bundle folder.
        deflate: compress (slow for weights); default stores the bytes as they are.
        progress: a byte counter on stderr while writing (a terminal only).

    Returns:
        The archive path, the bundle name, how many files and the archive size.

    Raises:
        PackError: the bundle fails its check, or the archive cannot be written.
    """
    root = Path(bundle_dir).resolve()
    files = _bundle_files(root)
    manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    name = manifest["name"]
    target = Path(out) if out else root.parent / f"{name}-{manifest['version']}.zip"
    target = target.resolve()
    if target == root or root in target.parents:
        raise PackError(f"{target}: the archive must not be written inside the bundle it packs")
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    from runtime.progress import byte_bar

    total = sum((root / rel).stat().st_size for rel in files)
    try:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf, \
                byte_bar(total, "pack", enabled=progress) as bar:
            for rel in files:
                info = zipfile.ZipInfo(f"{name}/{rel}", date_time=_EPOCH)
                info.compress_type = method
                info.create_system = 3  # unix, so the mode below is honoured
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                with open(root / rel, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                        bar.update(len(chunk))
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PackError(f"{target}: cannot write the archive: {e.strerror or e}") from None
    return PackResult(target, name, len(files), target.stat().st_size)


def _member_path(info: zipfile.ZipInfo, archive: Path) -> tuple[str, str]:
    """Split a member into (top folder, path inside it), refusing anything unsafe."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a symlink; refusing to unpack")
    try:
        check_relative_path(name.rstrip("/") if info.is_dir() else name, f"{archive}: member")
    except ManifestError as e:
        raise UnsafeArchiveError(f"{e}; refusing to unpack") from None
    top, _, rest = name.partition("/")
    return top, rest


def _extract_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], work: Path,
                     archive: Path) -> None:
    for info in infos:
        if info.is_dir():
            continue
        target = work.joinpath(*info.filename.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(target, "wb") as dst:
                # Never write more than the header announces (zip bombs).
                remaining = info.file_size
                while chunk := src.read(min(_CHUNK, remaining + 1)):
                    remaining -= len(chunk)
                    if remaining < 0:
                        raise PackError(f"{archive}: member {info.filename!r} is larger than declared")
                    dst.write(chunk)
        except zipfile.BadZipFile as e:  # CRC mismatch: damaged in transfer
            raise PackError(f"{archive}: member {info.filename!r} is damaged ({e})") from None


def unpack_bundle(archive: str | os.PathLike, dest: str | os.PathLike, *, quick: bool = False,
                  force: bool = False) -> Path:
    """Safely unpack a `bundle pack` archive into ``dest/NAME/`` and verify it.

    Args:
        archive: the zip written by :func:`pack_bundle`.
        dest: the folder to unpack into (e.g. /content/drive/MyDrive/bundles).
        quick: check sizes only (default: sha256 of every file too).
        force: replace an existing ``dest/NAME``.

    Returns:
        The unpacked bundle folder.

    Raises:
        UnsafeArchiveError: a member is absolute, has "..", is a link or lies
            outside the single top folder; nothing is written.
        PackError: not a bundle archive, the target exists, or the unpacked
            files do not match bundle.json (the partial folder is removed).
    """
    from builder.errors import BundleCheckError
    from builder.publish.checks import check_bundle

    archive = Path(archive)
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as e:
        raise PackError(f"{archive}: not a readable zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        tops = set()
        # Check every member before writing anything.
        for info in infos:
            top, rest = _member_path(info, archive)
            tops.add(top)
            if not rest and not info.is_dir():
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is not inside a bundle folder")
        if len(tops) != 1:
            raise PackError(f"{archive}: expected one top folder (the bundle), found {sorted(tops) or 'none'}")
        name = tops.pop()
        if f"{name}/{MANIFEST_NAME}" not in zf.namelist():
            raise PackError(f"{archive}: no {name}/{MANIFEST_NAME}; not made by `bundle pack`")
        final = dest / name
        if final.exists() and not force:
            raise PackError(f"{final}: already exists; remove it or pass --force")
        dest.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=dest))
        try:
            _extract_members(zf, infos, work, archive)
            try:
                check_bundle(work / name, full=not quick, progress=not quick, action="unpacked")
            except BundleCheckError as e:
                raise PackError(str(e)) from None
            if final.exists():
                shutil.rmtree(final)
            os.replace(work / name, final)
        except OSError as e:
            raise PackError(f"{archive}: cannot unpack into {dest}: {e}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


@click.command("pack")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--zip", "as_zip", is_flag=True, hidden=True,
              help="Accepted for old command lines: a zip is the only format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Archive to write (default: NAME-VERSION.zip next to BUNDLE_DIR).")
@click.option("--deflate", is_flag=True, help="Compress (slow for weights; default: store).")
@click.option("--no-progress", is_flag=True, help="No byte counter on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def pack_command(bundle_dir: Path, as_zip: bool, out: Path | None, deflate: bool,
                 no_progress: bool, as_json: bool) -> None:
    """Pack BUNDLE_DIR into one zip, e.g. to put on Google Drive for Colab.

    The archive holds NAME/...; unpack it into MyDrive/bundles/ and the runtime
    finds it at /content/drive/MyDrive/bundles/NAME/. The bundle is checked first
    (sizes, nothing unlisted); the zip is written under a temporary name and renamed
    when complete.

    \b
    Examples:
      bundle pack bundles-dist/emotion-vit --out emotion-vit.zip
      # in Colab, after drive.mount("/content/drive"):
      bundle unpack /content/drive/MyDrive/emotion-vit.zip --dest /content/drive/MyDrive/bundles
    """
    try:
        result = pack_bundle(bundle_dir, out, deflate=deflate, progress=not (no_progress or as_json))
    except PackError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps({"archive": str(result.archive), "name": result.name,
                               "files": result.files, "size": result.size}, indent=2))
        return
    from runtime.sizes import human_size

    click.echo(f"{result.archive} ({result.files} files, {human_size(result.size)}); "
               f"unpack into {COLAB_BUNDLES_DIR}/ for Colab")


@click.command("unpack")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help=f"Folder to unpack into (default: {COLAB_BUNDLES_DIR} if Drive is mounted, else ./bundles-dist).")
@click.option("--quick", is_flag=True, help="Check sizes only (default: sha256 of every file).")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder of that name.")
@click.option("--json", "as_json", is_flag=True, help="Print the unpacked folder as JSON.")
def unpack_command(archive: Path, dest: Path | None, quick: bool, force: bool, as_json: bool) -> None:
    """Unpack a `bundle pack` ARCHIVE safely and verify it against its bundle.json.

    Nothing is named before it is verified: the archive is extracted into a temporary
    folder beside the destination (members that escape it, links and devices refused),
    every file is checked, then the folder is renamed into place.

    \b
    Example (Colab):
      bundle unpack /content/drive/MyDrive/emotion-vit.zip
    """
    if dest is None:
        dest = Path(COLAB_BUNDLES_DIR) if Path(COLAB_BUNDLES_DIR).parent.is_dir() else Path("bundles-dist")
    try:
        folder = unpack_bundle(archive, dest, quick=quick, force=force)
    except PackError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps({"bundle_dir": str(folder), "verified": "sizes" if quick else "sha256"},
                              indent=2))
        return
    click.echo(f"{folder}: unpacked and verified")
