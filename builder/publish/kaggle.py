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

Modules: ``checks`` (the bundle is whole), ``kaggle_plan`` (ids, metadata, what is
sent), ``kaggle_client`` (the official client); this one runs them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from builder.errors import KaggleAuthError, PublishError
from builder.extras.runtime_wheels import missing_runtime_wheel
from builder.publish.kaggle_client import (
    calling,
    check_reply,
    make_api,
    remote_state,
    upload_workspace,
)
from builder.publish.kaggle_plan import PublishPlan, PublishResult, plan_publish
from runtime.constants import KAGGLE_METADATA_NAME


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
    if (problem := missing_runtime_wheel(manifest)) is not None:
        result.warnings.append(problem)
    try:
        api = make_api()
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

    with upload_workspace("bundle-publish-") as work:
        stage = _stage(plan, owner, work)
        if remote.exists:
            with calling("CreateDatasetVersion"):
                response = api.dataset_create_version(
                    str(stage), plan.version_notes, quiet=quiet, dir_mode="zip")
            check_reply("CreateDatasetVersion", response)
        else:
            with calling("CreateDataset"):
                response = api.dataset_create_new(
                    str(stage), public=public, quiet=quiet, dir_mode="zip")
            check_reply("CreateDataset", response)
    return result.sent(api, response)


@click.command("publish")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--as", "target", type=click.Choice(["dataset", "model"]), default="dataset", show_default=True,
              help="Publish as a Kaggle dataset, or as a Kaggle Model variation (one version per digest).")
@click.option("--dataset", metavar="OWNER/SLUG",
              help="Kaggle dataset id (default: dataset-metadata.json, else YOU/BUNDLE-NAME).")
@click.option("--handle", metavar="OWNER/MODEL/FRAMEWORK/VARIATION",
              help="With --as model: the Kaggle Model variation [default: YOU/BUNDLE-NAME/pytorch/default].")
@click.option("--license", "license_name", metavar="NAME",
              help="With --as model: Kaggle's license name (default: the spec's, e.g. other -> Other).")
@click.option("--message", "-m", metavar="TEXT", help="Version notes (the digest is appended).")
@click.option("--public", is_flag=True, help="Create the dataset (or model) public (default: private).")
@click.option("--dry-run", is_flag=True, help="Check and list what would be sent; upload nothing.")
@click.option("--full-verify", is_flag=True, help="Hash every file first (default: sizes only).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def publish_command(bundle_dir: Path, target: str, dataset: str | None, handle: str | None,
                    license_name: str | None, message: str | None, public: bool,
                    dry_run: bool, full_verify: bool, as_json: bool) -> None:
    """Publish BUNDLE_DIR as a Kaggle dataset: create it, add a version, or nothing if unchanged.

    With --as model, as a Kaggle Model variation instead: the model and the variation
    are created when missing, else a new version; an unchanged bundle uploads nothing.
    Notebooks attach it at /kaggle/input/MODEL/FRAMEWORK/VARIATION/VERSION/, where
    runtime.activate() finds it.

    Credentials come from the kaggle client's usual places: KAGGLE_USERNAME +
    KAGGLE_KEY, KAGGLE_API_TOKEN, or ~/.kaggle/kaggle.json. They are never
    written into the bundle or printed.

    \b
    Examples:
      bundle publish bundles-dist/emotion-vit --dry-run
      bundle publish bundles-dist/emotion-vit --dataset alice/emotion-vit-bundle
      bundle publish bundles-dist/emotion-vit -m "add AST weights" --json
      bundle publish bundles-dist/emotion-vit --as model --handle alice/emotion-vit/pytorch/default

    \b
    In a notebook the dataset appears at /kaggle/input/SLUG/ (or
    /kaggle/input/datasets/OWNER/SLUG/) with the bundle's folder tree.
    """
    if target == "model" and dataset:
        raise click.UsageError("--dataset names a dataset; with --as model use --handle")
    if target == "dataset" and (handle or license_name):
        raise click.UsageError("--handle and --license go with --as model")
    try:
        if target == "model":
            from builder.publish.kaggle_models import publish_model

            result = publish_model(bundle_dir, handle=handle, message=message, public=public,
                                   dry_run=dry_run, full_verify=full_verify, quiet=as_json,
                                   license_name=license_name)
        else:
            result = publish(bundle_dir, dataset=dataset, message=message, public=public,
                             dry_run=dry_run, full_verify=full_verify, quiet=as_json)
    except PublishError as e:
        raise click.ClickException(str(e)) from None
    from runtime.sizes import human_size

    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    prefix = "dry run: " if result.dry_run else ""
    if result.action == "unchanged":
        click.echo(f"{prefix}{result.dataset} version {result.remote_version} already holds digest "
                   f"{result.digest[:12]} (bundle {result.bundle_version}); nothing uploaded")
        return
    if result.action == "finish":
        done = "would record" if result.dry_run else "recorded"
        click.echo(f"{prefix}{result.dataset} version {result.remote_version} already holds digest "
                   f"{result.digest[:12]} (an earlier publish stopped before recording it); "
                   f"{done} it in the variation's overview; nothing uploaded")
        return
    if result.dry_run:
        why = " (no Kaggle credentials, so Kaggle was not asked)" if result.action == "create or version" else ""
        click.echo(f"dry run: would {result.action} {result.dataset}{why}; files:")
        for unit in result.units:
            how = "each uploaded at its path under" if result.folders == "tree" else "unpacked by Kaggle into"
            folder = f" ({unit.files} files, {how} {unit.path}/)" if unit.name != unit.path else ""
            shown = unit.path + "/" if result.folders == "tree" and unit.name != unit.path else unit.name
            click.echo(f"  {shown:<24} {human_size(unit.size):>10}{folder}")
        click.echo(f"total {human_size(result.total_size)} in {sum(u.files for u in result.units)} files")
        click.echo(f"version notes: {result.version_notes}")
        return
    verb = {"create": "created", "create variation": "created the variation",
            "version": "added a version to"}.get(result.action, result.action)
    click.echo(f"{verb} {result.dataset}: {len(result.uploaded)} uploads, "
               f"{human_size(result.total_size)}, digest {result.digest[:12]}"
               + (f"; {result.url}" if result.url else ""))
