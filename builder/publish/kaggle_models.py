"""`bundle publish --as model`: a bundle as a Kaggle Model variation, one version per digest.

Kaggle Models have a model (``OWNER/MODEL``), variations per framework
(``OWNER/MODEL/FRAMEWORK/VARIATION``, "instances" in the API) and numbered
versions. A notebook attaches one version at
``/kaggle/input/MODEL/FRAMEWORK/VARIATION/VERSION/`` (or under
``/kaggle/input/models/OWNER/...``), which runtime.locate() finds.

Publishing: the model is created when missing (title and description from the
bundle), then the variation (its first version carries the files), else a new
version whose notes carry the bundle digest. Files go up the way kagglehub sends
them: each file its own blob, the folders as a tree in the request, so the version
is laid out as the bundle is with nothing for Kaggle to unpack (folders as NAME.zip,
as datasets go, relied on Kaggle unpacking them; kagglehub stopped doing that).

Where the digest lives: Kaggle's API returns neither a version's notes nor any
per-version text (kagglesdk's ModelInstanceVersion and ApiModelInstance have no
notes field), so the variation's overview is the record a rerun reads. A new
version is published in two steps that leave the overview saying what is true at
every moment:

1. the overview gains ``pending: version N is being published with bundle ... (sha256
   D)`` below the digest line of the version it still holds;
2. the version is created; then the overview's digest line becomes D's.

A rerun after step 2's upload but before its overview update (a 500, a lost
connection) sees the variation at version N with D pending, and finishes the record
without uploading anything; a rerun after a failed upload (the variation still at
N-1) uploads again. Calls go through the official client (``model_create_new``,
``model_instance_create``, ``model_instance_version_create``, ``model_instance_update``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.credentials import refuse_secrets
from builder.errors import (
    BundleCheckError,
    CredentialError,
    KaggleAuthError,
    KaggleMetadataError,
    KaggleServerError,
)
from builder.publish.checks import bundle_files_to_send
from builder.publish.kaggle_client import TREE
from builder.publish.kaggle_plan import (
    DIGEST_RE,
    PublishPlan,
    PublishResult,
    plan_publish,
)
from runtime.constants import KAGGLE_MODEL_FRAMEWORKS

MODEL_METADATA = "model-metadata.json"
INSTANCE_METADATA = "model-instance-metadata.json"
DEFAULT_FRAMEWORK = "pytorch"
DEFAULT_VARIATION = "default"
_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_OWNER_RE = re.compile(r"^[a-z0-9]+(?:[_-][a-z0-9]+)*\Z")
#: the spec's (dataset-style) license names -> Kaggle Models' names; others pass as they are
MODEL_LICENSES = {"apache-2.0": "Apache 2.0", "mit": "MIT", "cc0-1.0": "CC0: Public Domain",
                  "cc-by-4.0": "CC BY 4.0", "cc-by-sa-4.0": "CC BY-SA 4.0",
                  "cc-by-nc-sa-4.0": "CC BY-NC-SA 4.0", "gpl-3.0": "GPL 3", "other": "Other"}


@dataclass
class Handle:
    owner: str | None  # None: the logged-in user
    model: str
    framework: str  # the folder name Kaggle mounts it under (pytorch, transformers, ...)
    variation: str

    def __str__(self) -> str:
        return f"{self.owner or '<your-kaggle-username>'}/{self.model}/{self.framework}/{self.variation}"


def parse_handle(text: str | None, plan: PublishPlan) -> Handle:
    """``--handle OWNER/MODEL/FRAMEWORK/VARIATION`` (a shorter one keeps the defaults:
    the dataset id's owner and slug, framework pytorch, variation default)."""
    owner, model = plan.owner, plan.slug
    framework, variation = DEFAULT_FRAMEWORK, DEFAULT_VARIATION
    if text:
        parts = text.split("/")
        if len(parts) not in (2, 4) or not all(parts):
            raise KaggleMetadataError(
                f"--handle: {text!r} is not OWNER/MODEL or OWNER/MODEL/FRAMEWORK/VARIATION "
                "(e.g. alice/emotion-vit/pytorch/default)")
        owner, model = parts[0], parts[1]
        if len(parts) == 4:
            framework, variation = parts[2].lower(), parts[3]
    if owner is not None and not _OWNER_RE.match(owner):
        raise KaggleMetadataError(f"--handle: owner {owner!r} is not a Kaggle user name (lowercase)")
    for what, slug in (("model", model), ("variation", variation)):
        if not _SLUG_RE.match(slug):
            raise KaggleMetadataError(
                f"--handle: {what} slug {slug!r} may hold only lowercase letters, digits and single "
                "'-' (not at the start or end)")
    if framework not in KAGGLE_MODEL_FRAMEWORKS:
        raise KaggleMetadataError(f"--handle: framework {framework!r} is not one of Kaggle's: "
                                  f"{', '.join(KAGGLE_MODEL_FRAMEWORKS)}")
    return Handle(owner, model, framework, variation)


def usage_text(handle: Handle) -> str:
    """The first cell for a notebook that attaches this model (the variation's usage)."""
    from builder.extras.first_cell import first_cell

    return ("```python\n" + first_cell("model", handle=(handle.model, handle.framework,
                                                          handle.variation)) + "```\n")


#: The overview line of a version being published (step 1 above); no "digest sha256:"
#: in it, so DIGEST_RE never takes it for the digest of a published version.
_PENDING_RE = re.compile(r"^pending: version (\d+) is being published with bundle \S+ \S+ "
                         r"\(sha256 ([0-9a-f]{64})\)$", re.MULTILINE)


def pending_line(version: int, name: str, bundle_version: str, digest: str) -> str:
    return f"pending: version {version} is being published with bundle {name} {bundle_version} (sha256 {digest})"


@dataclass
class RemoteModel:
    model_exists: bool
    instance_exists: bool = False
    version: int | None = None
    digest: str | None = None  # what the latest version holds
    url: str | None = None
    overview: str = ""
    #: the latest version was made by a publish that stopped before its overview update
    unrecorded: bool = False


def _status_of(exc: Exception) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def remote_model_state(api: Any, handle: Handle) -> RemoteModel:
    """Whether the model and the variation exist, and the digest the latest version holds."""
    from builder.publish.kaggle_client import calling

    with calling("GetModel"):
        try:
            api.model_get(f"{handle.owner}/{handle.model}")
        except Exception as e:
            if _status_of(e) == 404:
                return RemoteModel(model_exists=False)
            raise
    with calling("GetModelInstance"):
        try:
            info = api.model_instance_get(str(handle))
        except Exception as e:
            if _status_of(e) == 404:
                return RemoteModel(model_exists=True)
            raise
    overview = getattr(info, "overview", "") or ""
    version = getattr(info, "version_number", None) or None
    found = DIGEST_RE.search(overview)
    remote = RemoteModel(True, True, version, found.group(1) if found else None,
                         getattr(info, "url", None) or None, overview)
    pending = _PENDING_RE.search(overview)
    if pending and version is not None and version >= int(pending.group(1)):
        # The pending version exists: it holds the pending bundle, not yet on record.
        remote.digest, remote.unrecorded = pending.group(2), True
    return remote


def check_model_reply(method: str, response: Any) -> None:
    """Models' create calls answer 200 with ``error`` set when refused (no ``status``)."""
    error = getattr(response, "error", None) if response is not None else "no reply"
    if error or not getattr(response, "ref", None):
        msg = error or "no reference to what was made"
        raise KaggleServerError(f"Kaggle refused {method}: {msg}", method=method, status=200,
                                server_message=msg)


def _metadata(plan: PublishPlan, handle: Handle, owner: str, license_name: str | None) -> tuple[dict, dict]:
    spec_license = (plan.metadata.get("licenses") or [{"name": "other"}])[0].get("name", "other")
    license_name = license_name or MODEL_LICENSES.get(str(spec_license).lower(), str(spec_license))
    model = {"ownerSlug": owner, "slug": handle.model, "title": plan.metadata["title"],
             "isPrivate": plan.metadata["isPrivate"], "description": plan.metadata["description"]}
    if plan.metadata.get("subtitle"):
        model["subtitle"] = plan.metadata["subtitle"]
    instance = {"ownerSlug": owner, "modelSlug": handle.model, "instanceSlug": handle.variation,
                "framework": handle.framework, "overview": plan.metadata["description"],
                "usage": usage_text(handle), "licenseName": license_name, "fineTunable": False,
                "trainingData": [], "modelInstanceType": "Unspecified", "baseModelInstance": "",
                "externalBaseModelUrl": ""}
    return model, instance


def publish_model(bundle_dir: str | os.PathLike, *, handle: str | None = None, message: str | None = None,
                  public: bool = False, dry_run: bool = False, full_verify: bool = False,
                  quiet: bool = False, license_name: str | None = None) -> PublishResult:
    """Publish a bundle folder as a Kaggle Model variation: create, add a version, or nothing.

    Raises:
        BundleCheckError, KaggleMetadataError, KaggleAuthError (not for a dry run),
        KaggleServerError: as for datasets; the message is the server's.
    """
    from builder.extras.runtime_wheels import missing_runtime_wheel
    from builder.publish.kaggle_client import calling, make_api, upload_workspace

    plan = plan_publish(bundle_dir, message=message, public=public, full_verify=full_verify)
    where = parse_handle(handle, plan)
    result = PublishResult(
        dataset=str(where), action="create or version", digest=plan.manifest.digest,
        bundle_version=plan.manifest.version, units=plan.units, total_size=plan.total_size,
        dry_run=dry_run, version_notes=plan.version_notes, folders="tree",
    )
    if (problem := missing_runtime_wheel(plan.manifest)) is not None:
        result.warnings.append(problem)
    try:
        api = make_api()
    except KaggleAuthError:
        if dry_run:
            return result
        raise
    owner = where.owner or str(api.config_values.get("username") or "").lower()
    if not owner:
        raise KaggleAuthError("cannot tell your Kaggle user name; pass --handle OWNER/MODEL/FRAMEWORK/VARIATION")
    where.owner = owner
    result.dataset = str(where)
    model_meta, instance_meta = _metadata(plan, where, owner, license_name)
    try:
        refuse_secrets([("the model metadata", json.dumps([model_meta, instance_meta]).encode()),
                        *bundle_files_to_send(plan.bundle_dir, plan.manifest)],
                       action="nothing was published")
    except CredentialError as e:
        raise BundleCheckError(str(e)) from None
    remote = remote_model_state(api, where)
    result.remote_version, result.url = remote.version, remote.url
    digest = plan.manifest.digest
    if remote.instance_exists and remote.digest == digest:
        # Published before; an earlier run may have stopped before writing the record.
        result.action = "finish" if remote.unrecorded else "unchanged"
        if remote.unrecorded and not dry_run:
            _record(api, where, instance_meta, remote.version)
        return result
    result.action = ("version" if remote.instance_exists else
                     "create variation" if remote.model_exists else "create")
    if dry_run:
        return result
    with upload_workspace("bundle-publish-model-") as work:
        stage = _stage(plan, work, model_meta, instance_meta)
        if not remote.model_exists:
            with calling("CreateModel"):
                response = api.model_create_new(str(stage))
            check_model_reply("CreateModel", response)
        if remote.instance_exists:
            response = _new_version(api, where, plan, stage, work, remote, instance_meta, quiet)
        else:
            with calling("CreateModelInstance"):
                response = api.model_instance_create(str(stage), quiet=quiet, dir_mode=TREE)
            check_model_reply("CreateModelInstance", response)
    return result.sent(api, response)


def _update_overview(api: Any, where: Handle, instance_meta: dict, overview: str) -> None:
    from builder.publish.kaggle_client import calling

    work = Path(tempfile.mkdtemp(prefix="bundle-publish-model-update-"))
    try:
        fields = {k: instance_meta[k] for k in ("ownerSlug", "modelSlug", "instanceSlug", "framework")}
        # model_instance_update sends only the fields present in the file.
        (work / INSTANCE_METADATA).write_text(json.dumps({**fields, "overview": overview}, indent=2) + "\n")
        with contextlib.redirect_stdout(sys.stderr), calling("UpdateModelInstance"):
            updated = api.model_instance_update(str(work))
        check_model_reply("UpdateModelInstance", updated)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _record(api: Any, where: Handle, instance_meta: dict, version: int | None) -> None:
    """Step 2's overview update: the digest line of the version now published."""
    try:
        _update_overview(api, where, instance_meta, instance_meta["overview"])
    except KaggleServerError as e:
        raise KaggleServerError(
            f"version {version} of {where} holds this bundle, but recording it in the "
            f"variation's overview failed: {e}. Run the same command again to finish; it "
            "uploads nothing",
            method=e.method, status=e.status, server_message=e.server_message) from None


def _new_version(api: Any, where: Handle, plan: PublishPlan, stage: Path, work: Path,
                 remote: RemoteModel, instance_meta: dict, quiet: bool) -> Any:
    """A new version of an existing variation, in the two steps of the module docstring."""
    from builder.publish.kaggle_client import calling

    number = (remote.version or 0) + 1
    manifest = plan.manifest
    kept = _PENDING_RE.sub("", remote.overview).rstrip()
    _update_overview(api, where, instance_meta,
                     f"{kept}\n\n{pending_line(number, manifest.name, manifest.version, manifest.digest)}")
    with calling("CreateModelInstanceVersion"):
        response = api.model_instance_version_create(
            str(where), str(stage), plan.version_notes, quiet=quiet, dir_mode=TREE)
    check_model_reply("CreateModelInstanceVersion", response)
    _record(api, where, instance_meta, number)
    return response


def _stage(plan: PublishPlan, work: Path, model_meta: dict, instance_meta: dict) -> Path:
    """Links to the bundle's top-level entries, and the two metadata files the client reads."""
    stage = work / "stage" / plan.slug
    stage.mkdir(parents=True)
    for unit in plan.units:
        os.symlink(plan.bundle_dir / unit.path, stage / unit.path)
    (stage / MODEL_METADATA).write_text(json.dumps(model_meta, indent=2) + "\n", encoding="utf-8")
    # model_instance_create reads every field.
    (stage / INSTANCE_METADATA).write_text(json.dumps(instance_meta, indent=2) + "\n", encoding="utf-8")
    return stage
