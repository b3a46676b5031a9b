"""``source = "timm"``: a timm model name with tag, e.g. ``mobilevit_s.cvnets_in1k``.

timm's own registry (``get_pretrained_cfg``) says where the weights live. For the
Hub-hosted ones (``hf_hub_id = "timm/NAME"``) the repo is planned through the
``hf`` source's logic, so that ``timm.create_model(NAME, pretrained=True)`` and
``hf-hub:timm/NAME`` load offline from the hub cache layout. Models whose weights
are a plain URL go to ``torch/hub/checkpoints/`` like torchvision weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from builder.errors import BuildError
from builder.sources import HUB_SNAPSHOT_FIELDS, URL_FILE_FIELDS, FieldSpec, register_source
from builder.sources.hf import HubHostedSource, plan_hub_repo, revision_field_problem
from builder.sources.records import ResolveContext, ResolvedArtifact
from builder.sources.torchvision import checkpoint_plan
from runtime.constants import DEFAULT_REVISION

if TYPE_CHECKING:
    from builder.artifact import ArtifactSpec

# What timm loads from a `timm/...` repo: model.safetensors first, then
# pytorch_model.bin; config.json is read by the `hf-hub:` form.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _weights_chooser(hf_filename: str | None):
    def choose(repo_files: list[str]) -> list[str]:
        wanted = [hf_filename] if hf_filename else []
        if not wanted:
            wanted = [next((f for f in _WEIGHT_FILES if f in repo_files), _WEIGHT_FILES[0])]
        if "config.json" in repo_files:
            wanted.append("config.json")
        return wanted

    return choose


@register_source("timm")
class TimmSource(HubHostedSource):
    """Pretrained weights of a timm model."""

    ref_field = "model"
    # Weights on the Hub take the snapshot fields; weights at a plain URL the file ones.
    fields = {"model": FieldSpec(str, required=True, help='model name with tag, e.g. "mobilevit_s.cvnets_in1k"'),
              **HUB_SNAPSHOT_FIELDS, **URL_FILE_FIELDS}

    def check(self, options: dict) -> str | None:
        return revision_field_problem(options)

    def resolve(self, artifact: ArtifactSpec, ctx: ResolveContext) -> ResolvedArtifact:
        from timm.models import get_pretrained_cfg

        name = artifact.get("model")
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            raise BuildError(
                f"{ctx.spec_path}: artifact '{artifact.id}': field 'model': timm has no pretrained "
                f"weights named {name!r} (see timm.list_pretrained('{name.split('.')[0]}*'))",
                artifact=artifact.id,
            )
        hub_id = getattr(cfg, "hf_hub_id", None)
        if hub_id:
            repo, _, hub_rev = hub_id.partition("@")
            resolved = plan_hub_repo(
                artifact.id,
                repo,
                revision=artifact.get("revision") or hub_rev or DEFAULT_REVISION,
                include=artifact.include,
                exclude=artifact.exclude,
                choose_files=_weights_chooser(getattr(cfg, "hf_hub_filename", None)),
                source="timm",
                ref=name,
                # timm asks the hub cache for its own revision (or main), whatever
                # revision the spec pinned the snapshot to.
                ref_name=hub_rev or DEFAULT_REVISION,
            )
            resolved.aliases = [repo, f"hf-hub:{repo}"]
            return resolved
        if getattr(cfg, "url", None):
            return checkpoint_plan(artifact, cfg.url, source="timm", ref=name)
        raise BuildError(
            f"{ctx.spec_path}: artifact '{artifact.id}': field 'model': timm's config for {name!r} "
            "names no Hub repo and no URL for its weights",
            artifact=artifact.id,
        )
