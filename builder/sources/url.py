"""``source = "url"``: one file from a URL, pinned by sha256.

Goes to ``files/ID/FILENAME``; with ``torch_hub = true`` to
``torch/hub/checkpoints/FILENAME`` instead, where ``torch.hub.load_state_dict_from_url``
looks for it (a checkpoint no registry publishes; ``bundle capture`` writes these).
The sha256 is required: a URL can start serving
different bytes at any time (or vanish: one seed notebook lost its checkpoint to a
deleted bucket). ``bundle build --trust-on-first-use`` takes whatever the first
download gives, records its hash in bundle.json and warns.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from builder.credentials import redact_url, url_without_query
from builder.errors import BuildError
from builder.sources import TORCH_HUB_FIELD, URL_FILE_FIELDS, FieldSpec, Source, register_source
from builder.sources.records import PlannedFile, ResolveContext, ResolvedArtifact
from runtime.constants import FILES_DIR, TORCH_CHECKPOINTS_DIR

if TYPE_CHECKING:
    from builder.artifact import ArtifactSpec


def url_filename(url: str) -> str:
    """The last path segment of a URL, unquoted; "" when there is none."""
    from urllib.parse import unquote, urlsplit

    from runtime.manifest import ManifestError, check_relative_path

    name = unquote(posixpath.basename(urlsplit(url).path))
    try:
        check_relative_path(name, "")
    except ManifestError:
        return ""  # '..', '%00', '%0A', a backslash: the spec must name the file
    return "" if "/" in name or len(name.encode()) > 255 else name


@register_source("url")
class UrlSource(Source):
    """Any file on an HTTPS server."""

    ref_field = "url"
    fields = {
        "url": FieldSpec(str, required=True, help="https URL of the file"),
        **URL_FILE_FIELDS,
        "filename": FieldSpec(str, help="file name in the bundle (default: from the URL)"),
        "headers": FieldSpec(dict, help='request headers for the url\'s host, values from the '
                             'environment: { Authorization = "env:MY_TOKEN" }'),
        "torch_hub": TORCH_HUB_FIELD,
    }

    def check(self, options: dict) -> str | None:
        if "filename" not in options and not url_filename(options["url"]):
            return (f"field 'filename' is required: no file name in the URL "
                    f"{redact_url(options['url'])!r}")
        return None

    def resolve(self, artifact: ArtifactSpec, ctx: ResolveContext) -> ResolvedArtifact:
        url = artifact.get("url")
        warnings = []
        if artifact.sha256 is None:
            if not ctx.trust_on_first_use:
                raise BuildError(
                    f"{ctx.spec_path}: artifact '{artifact.id}': field 'sha256' is required for "
                    "url sources; add sha256 = \"<64 hex>\" (sha256sum FILE), or build once with "
                    "--trust-on-first-use to record what the server sends",
                    artifact=artifact.id,
                )
            warnings.append(
                f"artifact '{artifact.id}': TRUSTING FIRST USE of {redact_url(url)}: no sha256 "
                "in the spec, "
                "the hash of whatever the server sends is recorded in bundle.json; pin it in the spec"
            )
        filename = artifact.get("filename") or url_filename(url)
        if artifact.get("torch_hub"):
            # The very name torch.hub gives the download (the URL's last segment, not unquoted).
            from urllib.parse import urlsplit

            filename = artifact.get("filename") or posixpath.basename(urlsplit(url).path)
            path = f"{TORCH_CHECKPOINTS_DIR}/{filename}"
        else:
            path = f"{FILES_DIR}/{artifact.id}/{filename}"
        # What bundle.json, the README and the notebooks show: a signed URL's secret
        # values as ***; runtime.resolve() also finds it by the URL without its query.
        ref = redact_url(url)
        return ResolvedArtifact(
            id=artifact.id,
            source="url",
            ref=ref,
            revision=None,
            path=path,
            files=[
                PlannedFile(path, [url, *artifact.mirrors], sha256=artifact.sha256, size=artifact.size)
            ],
            aliases=[url_without_query(url)] if url_without_query(url) != url else [],
            warnings=warnings,
        )
