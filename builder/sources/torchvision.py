"""``source = "torchvision"``: a torchvision weights enum, e.g. ``ViT_B_16_Weights.IMAGENET1K_V1``.

URL and file name come from torchvision's own registry (``get_weight``); the file
goes where ``torch.hub`` looks for it, ``torch/hub/checkpoints/FILE``, so that
``vit_b_16(weights=...)`` loads it offline with ``TORCH_HOME`` pointing at the
bundle's ``torch/``. The bytes are checked like torch.hub does when it downloads
(the sha256 prefix in the file name, ``name-<hex>.pth``), or against the spec's
pinned ``sha256`` when there is one.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from builder.errors import BuildError
from builder.sources import URL_FILE_FIELDS, FieldSpec, Source, register_source
from builder.sources.records import PlannedFile, ResolveContext, ResolvedArtifact
from runtime.constants import TORCH_CHECKPOINTS_DIR

if TYPE_CHECKING:
    from builder.artifact import ArtifactSpec

# The same pattern torch.hub uses to find the hash prefix in a checkpoint name.
_HASH_PREFIX_RE = re.compile(r"-([a-f0-9]*)\.")
_WEIGHTS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")


def checkpoint_plan(artifact: ArtifactSpec, url: str, *, source: str, ref: str) -> ResolvedArtifact:
    """Plan one torch.hub checkpoint downloaded from ``url`` (shared with timm)."""
    # Exactly what torch.hub.load_state_dict_from_url names the file (no unquoting),
    # so the runtime's TORCH_HOME holds it where torchvision looks.
    filename = posixpath.basename(urlsplit(url).path)
    if not filename or filename in (".", ".."):
        raise BuildError(
            f"artifact '{artifact.id}': cannot take a file name from {url}", artifact=artifact.id
        )
    prefix = None
    if artifact.sha256 is None:
        m = _HASH_PREFIX_RE.search(filename)
        prefix = m.group(1) if m and m.group(1) else None
    path = f"{TORCH_CHECKPOINTS_DIR}/{filename}"
    warnings = []
    if artifact.sha256 is None and prefix is None:
        warnings.append(
            f"artifact '{artifact.id}': {filename} carries no hash; pin sha256 in the spec"
        )
    return ResolvedArtifact(
        id=artifact.id,
        source=source,
        ref=ref,
        revision=None,
        path=path,
        files=[
            PlannedFile(
                path,
                [url, *artifact.mirrors],
                sha256=artifact.sha256,
                size=artifact.size,
                sha256_prefix=prefix,
            )
        ],
        aliases=[filename],
        warnings=warnings,
    )


@register_source("torchvision")
class TorchvisionSource(Source):
    """Pretrained weights from torchvision's registry."""

    ref_field = "weights"
    # A pinned sha256 replaces the check of the hash prefix in the file name.
    fields = {"weights": FieldSpec(str, required=True, help='weights enum, e.g. "ViT_B_16_Weights.IMAGENET1K_V1"'),
              **URL_FILE_FIELDS}

    def check(self, options: dict[str, Any]) -> str | None:
        if not _WEIGHTS_RE.match(options["weights"]):
            return (
                "field 'weights' must be ENUM.MEMBER, e.g. \"ViT_B_16_Weights.IMAGENET1K_V1\", "
                f"got {options['weights']!r}"
            )
        return None

    def resolve(self, artifact: ArtifactSpec, ctx: ResolveContext) -> ResolvedArtifact:
        import torchvision.models

        name = artifact.get("weights")
        try:
            weights = torchvision.models.get_weight(name)
        except (ValueError, KeyError, AttributeError) as e:
            raise BuildError(
                f"{ctx.spec_path}: artifact '{artifact.id}': field 'weights': torchvision "
                f"{torchvision.__version__} has no weights {name!r} ({e})",
                artifact=artifact.id,
            ) from None
        return checkpoint_plan(artifact, weights.url, source="torchvision", ref=name)
