"""`bundle publish`: upload a bundle folder as a versioned Kaggle dataset.

First publish creates the dataset, a changed bundle makes a new version whose
notes carry the bundle version and digest, an unchanged bundle uploads nothing.
All talk with Kaggle goes through the official client (``kaggle.api.KaggleApi``
and the ``kagglesdk`` client it builds); it is imported inside :func:`publish`
only, because ``import kaggle`` authenticates at import time.

What Kaggle receives: every top-level file of the bundle (``bundle.json``,
``README.md``) as is, and every top-level folder (``hf/``, ``torch/``,
``files/``, ``wheels/``, ``notebooks/``) as one zip archive (the client's
``dir_mode="zip"``), which Kaggle unpacks into a folder of the same name. The
mounted dataset therefore has the bundle's own tree:
``/kaggle/input/SLUG/bundle.json`` and ``/kaggle/input/SLUG/hf/models--.../...``
(or ``/kaggle/input/datasets/OWNER/SLUG/...`` on newer mounts).
``dataset-metadata.json`` is read by the client and never uploaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from builder.credentials import CredentialError, refuse_secrets
from runtime.constants import GENERATED_FILES, KAGGLE_METADATA_NAME, MANIFEST_NAME, README_NAME
from runtime.manifest import Manifest, ManifestError, read_manifest

# Kaggle's own limits (the client checks some of them only after uploading).
TITLE_MIN, TITLE_MAX = 6, 50
SUBTITLE_MIN, SUBTITLE_MAX = 20, 80
SLUG_MIN, SLUG_MAX = 6, 50
_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
_OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
#: How the digest is written into version notes and the description, and read back.
_DIGEST_RE = re.compile(r"digest:? sha256:([0-9a-f]{64})")
_DIGEST_LINE_RE = re.compile(r"^bundle \S+ \S+, digest sha256:[0-9a-f]{64}$", re.MULTILINE)
_ENV_TO_CLIENT_FLAG = {"LOCALHOST": "--local", "STAGING": "--staging", "ADMIN": "--admin"}


class PublishError(Exception):
    """`bundle publish` could not finish; the message is one line that says what to do."""


class BundleCheckError(PublishError):
    """The bundle folder fails verification (missing, resized, stray or linked files)."""


class KaggleMetadataError(PublishError):
    """Dataset id, title, subtitle or license break Kaggle's rules."""


class KaggleAuthError(PublishError):
    """No usable Kaggle credentials were found."""


class KaggleServerError(PublishError):
    """Kaggle answered with an error (HTTP status or an error field in a 200 reply).

    Attributes:
        method: the API method that failed, e.g. "CreateDataset".
        status: the HTTP status, or None for an error carried in a 200 reply.
        server_message: what the server said.
    """

    def __init__(self, message: str, *, method: str, status: int | None, server_message: str):
        super().__init__(message)
        self.method = method
        self.status = status
        self.server_message = server_message


@dataclass
class UploadUnit:
    """One thing the client uploads: a top-level file, or a folder sent as NAME.zip."""

    name: str  # name on Kaggle before unpacking: "bundle.json", "hf.zip"
    path: str  # top-level entry in the bundle: "bundle.json", "hf"
    files: int
    size: int  # bytes of the bundle files it carries (before compression)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "files": self.files, "size": self.size}


@dataclass
class PublishPlan:
    """What a publish would send, worked out locally without credentials."""

    bundle_dir: Path
    manifest: Manifest
    owner: str | None  # None: the authenticated user's name, known after login
    slug: str
    metadata: dict[str, Any]
    units: list[UploadUnit]
    version_notes: str

    @property
    def dataset(self) -> str:
        return f"{self.owner or '<your-kaggle-username>'}/{self.slug}"

    @property
    def total_size(self) -> int:
        return sum(u.size for u in self.units)


@dataclass
class PublishResult:
    """What `publish` did. `action` is "create", "version" or "unchanged"; with a
    dry run it is what would happen ("create or version" when it could not ask)."""

    dataset: str
    action: str
    digest: str
    bundle_version: str
    units: list[UploadUnit]
    total_size: int
    dry_run: bool = False
    version_notes: str = ""
    remote_version: int | None = None
    url: str | None = None
    uploaded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "action": self.action,
            "dry_run": self.dry_run,
            "digest": self.digest,
            "bundle_version": self.bundle_version,
            "remote_version": self.remote_version,
            "version_notes": self.version_notes,
            "url": self.url,
            "total_size": self.total_size,
            "files": [u.to_json() for u in self.units],
            "uploaded": list(self.uploaded),
        }


# --- Local checks ------------------------------------------------------------


@contextlib.contextmanager
def _hash_progress(total: int, enabled: bool) -> Iterator[Any]:
    """A byte counter on stderr while hashing (gigabytes take a while); None when off."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc="sha256", file=sys.stderr) as bar:
        yield bar


def check_bundle(bundle_dir: str | os.PathLike, *, full: bool = False,
                 progress: bool = False, action: str = "uploaded") -> Manifest:
    """Check a bundle folder before it is uploaded.

    Every file bundle.json lists must exist as a regular file (not a link) with
    the listed size (and sha256 with ``full=True``), and the folder must hold
    nothing else: a stray file would be uploaded to Kaggle unchecked.

    Args:
        bundle_dir: the bundle folder (holds bundle.json).
        full: also hash every file (reads every byte).
        progress: show a byte counter on stderr while hashing.
        action: what the caller will not do when the check fails, for the
            message ("nothing uploaded"; pack says "packed").

    Returns:
        The bundle's manifest.

    Raises:
        BundleCheckError: the manifest is invalid or files are bad; the message
            lists up to five of them and says to rebuild.
    """
    from builder.store import sha256_file
    from runtime.integrity import unlisted_files

    root = Path(bundle_dir)
    try:
        manifest = read_manifest(root)
    except ManifestError as e:
        raise BundleCheckError(str(e)) from None
    problems: list[str] = []
    listed = {f.path for f in manifest.all_files()}
    with _hash_progress(manifest.size, full and progress) as bar:
        for entry in manifest.all_files():
            path = root / entry.path
            if path.is_symlink():
                problems.append(f"{entry.path}: is a symlink (Kaggle flattens links)")
            elif not path.is_file():
                problems.append(f"{entry.path}: missing")
            elif path.stat().st_size != entry.size:
                problems.append(f"{entry.path}: {path.stat().st_size} bytes, bundle.json says {entry.size}")
            elif full and sha256_file(path, progress=None if bar is None else bar.update) != entry.sha256:
                problems.append(f"{entry.path}: sha256 differs from bundle.json")
    problems += [f"{rel}: not listed in bundle.json" for rel in unlisted_files(root, listed)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BundleCheckError(
            f"{root}: bundle fails verification, nothing {action}: {shown}. "
            "Rebuild it with `bundle build` (or remove the stray files)."
        )
    return manifest


def _upload_units(root: Path, manifest: Manifest) -> list[UploadUnit]:
    """Group the bundle's files by top-level entry, the way the client uploads them."""
    groups: dict[str, list[int]] = {}
    for entry in manifest.all_files():
        groups.setdefault(entry.path.split("/", 1)[0], []).append(entry.size)
    units = []
    for top, sizes in groups.items():
        is_dir = (root / top).is_dir()
        units.append(UploadUnit(f"{top}.zip" if is_dir else top, top, len(sizes), sum(sizes)))
    for name in (MANIFEST_NAME, README_NAME):
        if (root / name).is_file():
            units.append(UploadUnit(name, name, 1, (root / name).stat().st_size))
    return sorted(units, key=lambda u: u.name)


def split_dataset_id(dataset: str, where: str = "--dataset") -> tuple[str, str]:
    """Split and check "OWNER/SLUG" against Kaggle's rules.

    Raises:
        KaggleMetadataError: naming the rule broken.
    """
    owner, sep, slug = dataset.partition("/")
    if not sep or not owner or "/" in slug:
        raise KaggleMetadataError(f"{where}: {dataset!r} is not OWNER/SLUG (e.g. alice/emotion-vit-bundle)")
    if not _OWNER_RE.match(owner):
        raise KaggleMetadataError(f"{where}: owner {owner!r} is not a Kaggle user name")
    check_slug(slug, where)
    return owner, slug


def check_slug(slug: str, where: str) -> None:
    """Kaggle slugs: 6-50 characters of a-z, 0-9 and '-', not starting or ending with '-'."""
    if not _SLUG_RE.match(slug):
        raise KaggleMetadataError(
            f"{where}: slug {slug!r} may hold only lowercase letters, digits and '-' "
            "(not at the start or end)"
        )
    if not SLUG_MIN <= len(slug) <= SLUG_MAX:
        raise KaggleMetadataError(
            f"{where}: slug {slug!r} has {len(slug)} characters; Kaggle wants {SLUG_MIN}-{SLUG_MAX}. "
            "Pass --dataset OWNER/LONGER-SLUG or set `kaggle` in the spec"
        )


def check_metadata(meta: dict[str, Any], where: str) -> None:
    """Title, subtitle and license rules, checked before any upload.

    Raises:
        KaggleMetadataError: naming the field and the allowed range.
    """
    title = meta.get("title")
    if not isinstance(title, str) or not TITLE_MIN <= len(title) <= TITLE_MAX:
        n = len(title) if isinstance(title, str) else 0
        raise KaggleMetadataError(
            f"{where}: field 'title' {title!r} has {n} characters; Kaggle wants "
            f"{TITLE_MIN}-{TITLE_MAX}. Set `title` in the spec's [bundle] and rebuild"
        )
    subtitle = meta.get("subtitle")
    if subtitle and not SUBTITLE_MIN <= len(subtitle) <= SUBTITLE_MAX:
        raise KaggleMetadataError(
            f"{where}: field 'subtitle' has {len(subtitle)} characters; Kaggle wants "
            f"{SUBTITLE_MIN}-{SUBTITLE_MAX} (or none)"
        )
    licenses = meta.get("licenses")
    if not (isinstance(licenses, list) and len(licenses) == 1 and isinstance(licenses[0], dict)
            and licenses[0].get("name")):
        raise KaggleMetadataError(
            f"{where}: field 'licenses' must name exactly one license, e.g. [{{\"name\": \"other\"}}]"
        )


def _read_bundle_metadata(root: Path) -> dict[str, Any]:
    path = root / KAGGLE_METADATA_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BundleCheckError(f"{path}: not valid JSON ({e}); rebuild the bundle") from None
    if not isinstance(data, dict):
        raise BundleCheckError(f"{path}: must be a JSON object; rebuild the bundle")
    return data


def _digest_line(manifest: Manifest) -> str:
    return f"bundle {manifest.name} {manifest.version}, digest sha256:{manifest.digest}"


def plan_publish(
    bundle_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    message: str | None = None,
    public: bool = False,
    full_verify: bool = False,
) -> PublishPlan:
    """Check the bundle and work out the dataset id, metadata and files to send.

    Needs no credentials and contacts nothing.

    Raises:
        BundleCheckError, KaggleMetadataError.
    """
    root = Path(bundle_dir).resolve()
    manifest = check_bundle(root, full=full_verify, progress=full_verify)
    meta = _read_bundle_metadata(root)
    where = str(root / KAGGLE_METADATA_NAME)
    if dataset:
        owner, slug = split_dataset_id(dataset)
    elif "/" in str(meta.get("id") or ""):
        owner, slug = split_dataset_id(str(meta["id"]), f"{where}: field 'id'")
    elif meta.get("id"):
        # `bundle build` writes the bare slug when the spec names no owner.
        owner, slug = None, str(meta["id"])
        check_slug(slug, f"{where}: field 'id'")
    else:
        # DESIGN: the bundle name is the default slug, owned by whoever logs in.
        owner, slug = None, manifest.name
        check_slug(slug, f"bundle name {slug!r}")
    digest_line = _digest_line(manifest)
    # The dataset page shows the description: the bundle's README says how to use it.
    readme = root / README_NAME
    description = meta.get("description") or (
        readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    ) or manifest.title or manifest.name
    description = _DIGEST_LINE_RE.sub("", description).rstrip()
    metadata = {
        "title": meta.get("title") or manifest.title or manifest.name,
        "licenses": meta.get("licenses") or [{"name": "other"}],
        "description": f"{description}\n\n{digest_line}",
        "isPrivate": not public,
    }
    if meta.get("subtitle"):
        metadata["subtitle"] = meta["subtitle"]
    if meta.get("keywords"):
        metadata["keywords"] = meta["keywords"]
    check_metadata(metadata, where)
    notes = f"{message.strip()} ({digest_line})" if message and message.strip() else digest_line
    # Defense in depth: no byte that goes to Kaggle holds a credential of this machine.
    try:
        refuse_secrets(
            [*bundle_files_to_send(root, manifest),
             ("the dataset metadata (title, description)", json.dumps(metadata).encode()),
             ("the version notes (--message)", notes.encode())],
            action="nothing was published",
        )
    except CredentialError as e:
        raise BundleCheckError(str(e)) from None
    return PublishPlan(root, manifest, owner, slug, metadata, _upload_units(root, manifest), notes)


def bundle_files_to_send(root: Path, manifest: Manifest) -> list[tuple[str, Path]]:
    """(label, path) of every file of a bundle folder that publish or pack sends."""
    rels = [f.path for f in manifest.all_files()]
    rels += [name for name in sorted(GENERATED_FILES) if (root / name).is_file()]
    return [(str(root / rel), root / rel) for rel in rels]


# --- The Kaggle client -------------------------------------------------------


def _kaggle_config_path() -> str:
    """Where kaggle.json lives, decided now (the client decides once, at import)."""
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    if not config_dir:
        config_dir = os.path.join(os.path.expanduser("~"), ".kaggle")
        if sys.platform.startswith("linux") and not os.path.exists(config_dir):
            xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
            config_dir = os.path.join(xdg, "kaggle")
    return config_dir


def _make_api() -> Any:
    """A KaggleApi, authenticated from the client's usual places.

    Raises:
        KaggleAuthError: no credentials found.
    """
    captured = io.StringIO()
    # `import kaggle` authenticates at import and prints help when it cannot;
    # that text is for the kaggle CLI, not for us.
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        from kaggle.api.kaggle_api_extended import KaggleApi

    class StrictKaggleApi(KaggleApi):
        """KaggleApi that fails loudly when a file's bytes were refused.

        The stock client logs "Upload unsuccessful" and goes on to create the
        dataset without that file.
        """

        def _upload_file(self, file_name, full_path, *args, **kwargs):  # type: ignore[override]
            # Older 2.x clients return None for a refused file; newer ones raise
            # ValueError. Either way the dataset must not be created without it.
            try:
                result = super()._upload_file(file_name, full_path, *args, **kwargs)
            except ValueError as e:
                raise _refused_bytes(file_name, str(e)) from None
            if result is None:
                raise _refused_bytes(file_name, "upload unsuccessful")
            self.uploaded_names.append(file_name)
            return result

    api = StrictKaggleApi()
    api.uploaded_names = []
    # The client reads KAGGLE_API_ENVIRONMENT and VERBOSE once, at import; read
    # them now instead. Never pass --verbose: it prints the Authorization header.
    flag = _ENV_TO_CLIENT_FLAG.get(os.environ.get("KAGGLE_API_ENVIRONMENT", ""))
    api.args = [flag] if flag else []
    api.config_dir = _kaggle_config_path()
    api.config = os.path.join(api.config_dir, "kaggle.json")
    with contextlib.redirect_stdout(captured):
        try:
            api.authenticate()
        except SystemExit:
            raise KaggleAuthError(
                "no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY (or "
                "KAGGLE_API_TOKEN), or save kaggle.json from kaggle.com > Settings > API "
                f"in {api.config_dir}/ with mode 600"
            ) from None
    for line in captured.getvalue().splitlines():
        if line.startswith("Warning"):  # e.g. "your kaggle.json is readable by others"
            print(line, file=sys.stderr)
    return api


def _refused_bytes(file_name: str, detail: str) -> KaggleServerError:
    return KaggleServerError(
        f"Kaggle refused the bytes of {file_name}; nothing was published. Run again "
        "(the upload restarts) or check https://www.kaggle.com/ for an outage",
        method="upload",
        status=None,
        server_message=detail,
    )


def _server_error(method: str, exc: Exception) -> KaggleServerError:
    """Turn a client exception into one line with the server's own message."""
    import requests

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    text = str(exc)
    if response is not None and text.startswith(f"{status} "):
        # raise_for_status() text names only the status; the body says why.
        body = (response.text or "").strip().replace("\n", " ")
        try:
            parsed = json.loads(body)
            body = parsed.get("message") or parsed.get("error") or body
        except (ValueError, AttributeError):
            pass
        text = body[:300] or text
    if isinstance(exc, requests.exceptions.ConnectionError):
        return KaggleServerError(
            f"cannot reach Kaggle for {method}: {text}; check the network (or KAGGLE_API_ENVIRONMENT)",
            method=method, status=None, server_message=text,
        )
    where = f"HTTP {status}" if status else "an error"
    hint = ""
    if status in (401, 403):
        hint = "; check KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN or kaggle.json, and the dataset owner"
    return KaggleServerError(
        f"Kaggle answered {where} to {method}: {text}{hint}", method=method, status=status,
        server_message=text,
    )


@contextlib.contextmanager
def _calling(method: str) -> Iterator[None]:
    import requests

    try:
        yield
    except KaggleServerError:
        raise
    except requests.exceptions.RequestException as e:
        raise _server_error(method, e) from None
    except ValueError as e:  # the client's own validation
        raise KaggleMetadataError(f"kaggle client refused {method}: {e}") from None


def _check_reply(method: str, response: Any) -> None:
    """The client returns errors in 200 replies; its CLI then exits 0. We do not."""
    if response is None:
        raise KaggleServerError(f"Kaggle gave no reply to {method}", method=method, status=None,
                                server_message="")
    status = (getattr(response, "status", None) or "").lower()
    error = getattr(response, "error", None)
    if status != "ok" or error:
        msg = error or f"status {status or 'missing'}"
        raise KaggleServerError(f"Kaggle refused {method}: {msg}", method=method, status=200,
                                server_message=msg)


@dataclass
class RemoteDataset:
    exists: bool
    version: int | None = None
    digest: str | None = None
    url: str | None = None


def remote_state(api: Any, owner: str, slug: str) -> RemoteDataset:
    """Ask Kaggle whether the dataset exists and which bundle digest its latest version holds.

    The digest is read from the latest version's notes (where `publish` writes
    it), else from the dataset description (the first version, made by
    CreateDataset, has no notes).
    """
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

    with _calling("GetDatasetStatus"):
        try:
            api.dataset_status(f"{owner}/{slug}")
        except Exception as e:
            if getattr(getattr(e, "response", None), "status_code", None) == 404:
                return RemoteDataset(exists=False)
            raise
    request = ApiGetDatasetRequest()
    request.owner_slug = owner
    request.dataset_slug = slug
    with _calling("GetDataset"), api.build_kaggle_client() as client:
        info = client.datasets.dataset_api_client.get_dataset(request)
    versions = sorted(info.versions or [], key=lambda v: v.version_number or 0)
    latest = versions[-1] if versions else None
    digest = None
    for text in (latest.version_notes if latest else None, info.description):
        found = _DIGEST_RE.search(text or "")
        if found:
            digest = found.group(1)
            break
    number = info.current_version_number or (latest.version_number if latest else None)
    return RemoteDataset(exists=True, version=number, digest=digest, url=info.url)


def _stage(plan: PublishPlan, owner: str, work: Path) -> Path:
    """A folder the client can read: links to the bundle's top-level entries and
    our dataset-metadata.json (the bundle itself may be read-only, and its
    metadata may name another dataset)."""
    stage = work / "stage" / plan.slug
    stage.mkdir(parents=True)
    for unit in plan.units:
        os.symlink(plan.bundle_dir / unit.path, stage / unit.path)
    meta = dict(plan.metadata, id=f"{owner}/{plan.slug}")
    (stage / KAGGLE_METADATA_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return stage


@contextlib.contextmanager
def _private_tempdir(work: Path) -> Iterator[None]:
    """The client writes its folder archives and upload-resume records under
    tempfile.gettempdir(); keep them in our private (0700) folder."""
    tmp = work / "tmp"
    tmp.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def publish(
    bundle_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    message: str | None = None,
    public: bool = False,
    dry_run: bool = False,
    full_verify: bool = False,
    quiet: bool = False,
) -> PublishResult:
    """Publish a bundle folder as a Kaggle dataset: create it, add a version, or do nothing.

    Args:
        bundle_dir: the bundle folder (holds bundle.json and dataset-metadata.json).
        dataset: "OWNER/SLUG"; default: the id in dataset-metadata.json, else
            the logged-in user and the bundle name.
        message: text put in front of the version notes.
        public: create the dataset public (default private); ignored for new versions.
        dry_run: check and plan only. Asks Kaggle whether it would create or
            version only when credentials are available; never uploads.
        full_verify: hash every file before uploading (default: sizes only).
        quiet: no per-file progress from the client.

    Returns:
        What was done (or would be done).

    Raises:
        BundleCheckError: the bundle fails verification.
        KaggleMetadataError: id, title, subtitle or license break Kaggle's rules.
        KaggleAuthError: no credentials (not raised by a dry run).
        KaggleServerError: Kaggle answered an error; the message is the server's.
    """
    plan = plan_publish(bundle_dir, dataset=dataset, message=message, public=public,
                        full_verify=full_verify)
    manifest = plan.manifest
    result = PublishResult(
        dataset=plan.dataset, action="create or version", digest=manifest.digest,
        bundle_version=manifest.version, units=plan.units, total_size=plan.total_size,
        dry_run=dry_run, version_notes=plan.version_notes,
    )
    try:
        api = _make_api()
    except KaggleAuthError:
        if dry_run:
            return result  # a dry run needs no credentials; it just cannot ask
        raise
    owner = plan.owner or api.config_values.get("username")
    if not owner:
        raise KaggleAuthError("cannot tell your Kaggle user name; pass --dataset OWNER/SLUG")
    result.dataset = f"{owner}/{plan.slug}"
    remote = remote_state(api, owner, plan.slug)
    result.remote_version, result.url = remote.version, remote.url
    if remote.exists and remote.digest == manifest.digest:
        result.action = "unchanged"
        return result
    result.action = "version" if remote.exists else "create"
    if dry_run:
        return result

    work = Path(tempfile.mkdtemp(prefix="bundle-publish-"))  # mode 0700
    try:
        stage = _stage(plan, owner, work)
        # The client prints progress with print(); keep stdout for our report.
        with _private_tempdir(work), contextlib.redirect_stdout(sys.stderr):
            if remote.exists:
                with _calling("CreateDatasetVersion"):
                    response = api.dataset_create_version(
                        str(stage), plan.version_notes, quiet=quiet, dir_mode="zip")
                _check_reply("CreateDatasetVersion", response)
            else:
                with _calling("CreateDataset"):
                    response = api.dataset_create_new(
                        str(stage), public=public, quiet=quiet, dir_mode="zip")
                _check_reply("CreateDataset", response)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.uploaded = list(api.uploaded_names)
    result.url = getattr(response, "url", None) or result.url
    return result


@click.command("publish")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", metavar="OWNER/SLUG",
              help="Kaggle dataset id (default: dataset-metadata.json, else YOU/BUNDLE-NAME).")
@click.option("--message", "-m", metavar="TEXT", help="Version notes (the digest is appended).")
@click.option("--public", is_flag=True, help="Create the dataset public (default: private).")
@click.option("--dry-run", is_flag=True, help="Check and list what would be sent; upload nothing.")
@click.option("--full-verify", is_flag=True, help="Hash every file first (default: sizes only).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def publish_command(bundle_dir: Path, dataset: str | None, message: str | None, public: bool,
                    dry_run: bool, full_verify: bool, as_json: bool) -> None:
    """Publish BUNDLE_DIR as a Kaggle dataset: create it, add a version, or nothing if unchanged.

    Credentials come from the kaggle client's usual places: KAGGLE_USERNAME +
    KAGGLE_KEY, KAGGLE_API_TOKEN, or ~/.kaggle/kaggle.json. They are never
    written into the bundle or printed.

    \b
    Examples:
      bundle publish bundles-dist/emotion-vit --dry-run
      bundle publish bundles-dist/emotion-vit --dataset alice/emotion-vit-bundle
      bundle publish bundles-dist/emotion-vit -m "add AST weights" --json

    \b
    In a notebook the dataset appears at /kaggle/input/SLUG/ (or
    /kaggle/input/datasets/OWNER/SLUG/) with the bundle's folder tree.
    """
    try:
        result = publish(bundle_dir, dataset=dataset, message=message, public=public,
                         dry_run=dry_run, full_verify=full_verify, quiet=as_json)
    except PublishError as e:
        raise click.ClickException(str(e)) from None
    from builder.layout import human_size

    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    prefix = "dry run: " if result.dry_run else ""
    if result.action == "unchanged":
        click.echo(f"{prefix}{result.dataset} version {result.remote_version} already holds digest "
                   f"{result.digest[:12]} (bundle {result.bundle_version}); nothing uploaded")
        return
    if result.dry_run:
        why = " (no Kaggle credentials, so Kaggle was not asked)" if result.action == "create or version" else ""
        click.echo(f"dry run: would {result.action} {result.dataset}{why}; files:")
        for unit in result.units:
            folder = f" ({unit.files} files, unpacked by Kaggle into {unit.path}/)" if unit.name != unit.path else ""
            click.echo(f"  {unit.name:<24} {human_size(unit.size):>10}{folder}")
        click.echo(f"total {human_size(result.total_size)} in {sum(u.files for u in result.units)} files")
        click.echo(f"version notes: {result.version_notes}")
        return
    verb = "created" if result.action == "create" else "added a version to"
    click.echo(f"{verb} {result.dataset}: {len(result.uploaded)} uploads, "
               f"{human_size(result.total_size)}, digest {result.digest[:12]}"
               + (f"; {result.url}" if result.url else ""))
