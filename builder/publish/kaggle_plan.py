"""What `bundle publish` would send: Kaggle's rules for ids and metadata, and the plan."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.credentials import refuse_secrets
from builder.errors import CredentialError, KaggleMetadataError

# Kaggle's own limits (the client checks some of them only after uploading).
from builder.kaggle_rules import (
    OWNER_RE,
    SLUG_MAX,
    SLUG_MIN,
    SLUG_RE,
    SUBTITLE_MAX,
    SUBTITLE_MIN,
    TITLE_MAX,
    TITLE_MIN,
)
from builder.publish.checks import (
    BundleCheckError,
    bundle_files_to_send,
    check_bundle,
)
from runtime._record import json_fields
from runtime.constants import KAGGLE_METADATA_NAME, MANIFEST_NAME, README_NAME
from runtime.manifest import Manifest

#: How the digest is written into version notes and the description, and read back.
DIGEST_RE = re.compile(r"digest:? sha256:([0-9a-f]{64})")
_DIGEST_LINE_RE = re.compile(r"^bundle \S+ \S+, digest sha256:[0-9a-f]{64}$", re.MULTILINE)


@dataclass
class UploadUnit:
    """One thing the client uploads: a top-level file, or a folder sent as NAME.zip."""

    name: str  # name on Kaggle before unpacking: "bundle.json", "hf.zip"
    path: str  # top-level entry in the bundle: "bundle.json", "hf"
    files: int
    size: int  # bytes of the bundle files it carries (before compression)

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, ("name", "path", "files", "size"))


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
    """What `publish` did. `action` is "create", "version" or "unchanged" (a Kaggle Model
    also "create variation", and "finish": the version was there, only its record was
    written); with a dry run it is what would happen ("create or version" when it could
    not ask). `folders`: "zip" (each top-level folder as NAME.zip, unpacked by Kaggle) or
    "tree" (each file uploaded at its path)."""

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
    #: what the user should know before relying on the dataset (e.g. no runtime wheel)
    warnings: list[str] = field(default_factory=list)
    folders: str = "zip"

    def sent(self, api: Any, response: Any) -> PublishResult:
        """Record what the client uploaded and the URL Kaggle answered with."""
        self.uploaded = list(api.uploaded_names)
        self.url = getattr(response, "url", None) or self.url
        return self

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, ("dataset", "action", "dry_run", "digest", "bundle_version",
                                  "remote_version", "version_notes", "url", "total_size"),
                           files=self.units, uploaded=self.uploaded, warnings=self.warnings,
                           folders=self.folders)


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
    if not OWNER_RE.match(owner):
        raise KaggleMetadataError(f"{where}: owner {owner!r} is not a Kaggle user name")
    check_slug(slug, where)
    return owner, slug


def check_slug(slug: str, where: str) -> None:
    """Kaggle slugs: 6-50 characters of a-z, 0-9 and '-', not starting or ending with '-'."""
    if not SLUG_RE.match(slug):
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


def _run_metrics(manifest: Manifest, most: int = 6) -> str:
    """A run bundle's metrics for the version notes ("val_acc 0.9123, ..."), "" otherwise."""
    metrics = (manifest.run or {}).get("metrics") or {}
    shown = [f"{k} {v:.4g}" for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)][:most]
    return f"{manifest.run.get('stack', 'run')} run: " + ", ".join(shown) if shown else ""


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
    if (metrics := _run_metrics(manifest)):
        notes = f"{metrics}; {notes}"  # a run bundle: each new run a version, its scores in the notes
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
