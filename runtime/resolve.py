"""`runtime.resolve(name)`: the local path of an artifact, by id, ref or alias.

Never returns something other than what was asked for without saying so: a
declared fallback is used only with a FallbackWarning naming both artifacts, and
a missing artifact is an ArtifactNotFoundError that lists what the attached
bundles hold and the spec snippet that would add it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime._record import FrozenRecord
from runtime.catalog import AttachedBundle
from runtime.constants import DEFAULT_REVISION
from runtime.errors import ArtifactNotFoundError, FallbackWarning, log_warning
from runtime.manifest import ArtifactEntry

if TYPE_CHECKING:  # runtime.provenance imports hashlib: only when a resolve happens
    from runtime.provenance import Resolved

_TORCHVISION_WEIGHTS = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+\Z")
_HF_URL_REPO = re.compile(
    r"^https?://(?:[\w-]+\.)*(?:huggingface\.co|hf\.co)/"
    r"(?:api/(?:models|datasets|spaces)/)?(?:datasets/|spaces/)?"
    r"(?P<repo>[\w.-]+/[\w.-]+)"
)


class Found(FrozenRecord):
    """An artifact of an attached bundle."""

    __slots__ = ("bundle", "artifact")
    _fields = __slots__

    def __init__(self, bundle: AttachedBundle, artifact: ArtifactEntry) -> None:
        self._set("bundle", bundle)
        self._set("artifact", artifact)

    @property
    def path(self) -> Path:
        return self.bundle.file_path(self.artifact.path)

    @property
    def ok(self) -> bool:
        return self.bundle.artifact_ok(self.artifact)


def name_keys(name: object) -> list[str]:
    """The strings `name` may be listed under: as given, without `hf-hub:`, a URL's file name."""
    text = str(name).strip()
    keys = [text]
    for prefix in ("hf-hub:", "hf_hub:"):
        if text.startswith(prefix):
            keys.append(text[len(prefix) :])
    url = getattr(name, "url", None)  # a torchvision WeightsEnum member
    if isinstance(url, str):
        keys += [url, url.rsplit("/", 1)[-1]]
    elif text.startswith(("https://", "http://")):
        bare = text.split("#", 1)[0].split("?", 1)[0]
        if bare != text:
            keys.append(bare)  # a signed URL: bundles list url artifacts by the URL without query
        keys.append(bare.rsplit("/", 1)[-1])  # torchvision checkpoints are aliased by file name
    return keys


def find(name: object, bundles: list[AttachedBundle]) -> Found | None:
    """The first artifact (in search order) whose id, ref or alias is `name`; exact, then any case."""
    keys = name_keys(name)
    for fold in (False, True):
        wanted = {k.lower() for k in keys} if fold else set(keys)
        for bundle in bundles:
            for artifact in bundle.manifest.artifacts:
                names = artifact.names()
                if any((n.lower() if fold else n) in wanted for n in names):
                    return Found(bundle, artifact)
    return None


def _find_in(name: str, bundles: list[AttachedBundle], prefer: AttachedBundle) -> Found | None:
    # A fallback id names an artifact of the same bundle first.
    return find(name, [prefer] + [b for b in bundles if b is not prefer])


def resolve_in(name: object, bundles: list[AttachedBundle]) -> Path:
    """`resolve()` over an explicit list of attached bundles (see runtime.resolve)."""
    return choose_in(name, bundles)[0].path


def plan(name: object, bundles: list[AttachedBundle]) -> tuple[Found | None, Found | None, str | None]:
    """What `resolve()` would do for `name`, quietly: (listed, used, why a fallback).

    `listed` is the artifact the name matches (None: no bundle lists it); `used` the
    one resolve() would return: `listed` when complete, else its first complete
    declared fallback (and `why` says what the primary lacks), else None.
    `bundle doctor` shows this; resolve() adds the warning or the error.
    """
    found = find(name, bundles)
    if found is None or found.ok:
        return found, found, None
    for fallback_name in found.artifact.fallbacks:
        fallback = _find_in(fallback_name, bundles, found.bundle)
        if fallback is not None and fallback.ok:
            return found, fallback, (
                f"primary artifact '{found.artifact.id}' ({found.artifact.ref}) of bundle "
                f"'{found.bundle.name}' is incomplete: {_problem_summary(found)}")
    return found, None, None


def choose_in(name: object, bundles: list[AttachedBundle]) -> tuple[Found, str | None]:
    """The artifact `resolve()` uses for `name`, and why it is a fallback (None if not).

    Raises and warns as runtime.resolve() does.
    """
    found = find(name, bundles)
    if found is None:
        raise ArtifactNotFoundError(
            missing_message(str(name), bundles),
            name=str(name),
            available=tuple(a.id for b in bundles for a in b.manifest.artifacts),
        )
    if found.ok:
        return found, None
    # The artifact is listed but its files are missing or truncated: try the declared fallbacks.
    tried: list[str] = []
    for fallback_name in found.artifact.fallbacks:
        fallback = _find_in(fallback_name, bundles, found.bundle)
        if fallback is None or not fallback.ok:
            tried.append(fallback_name)
            continue
        message = (
            f"runtime.resolve({str(name)!r}): artifact '{found.artifact.id}' of bundle "
            f"'{found.bundle.name}' is incomplete ({_problem_summary(found)}); using its "
            f"declared fallback '{fallback.artifact.id}' ({fallback.artifact.ref}) from bundle "
            f"'{fallback.bundle.name}' instead"
        )
        log_warning(message)
        warnings.warn(message, FallbackWarning, stacklevel=4)
        why = (f"primary artifact '{found.artifact.id}' ({found.artifact.ref}) of bundle "
               f"'{found.bundle.name}' is incomplete: {_problem_summary(found)}")
        return fallback, why
    fallbacks = (
        f"its fallbacks ({', '.join(tried)}) are missing or incomplete too"
        if tried
        else "it declares no fallbacks"
    )
    raise ArtifactNotFoundError(
        f"artifact '{found.artifact.id}' ({found.artifact.ref}) in bundle '{found.bundle.name}' "
        f"at {found.bundle.path} is incomplete: {_problem_summary(found)}; {fallbacks}. "
        f"Run runtime.verify() for the full list, then rebuild or re-download the bundle.",
        name=str(name),
        available=tuple(a.id for b in bundles for a in b.manifest.artifacts),
    )


def _problem_summary(found: Found) -> str:
    problems = [p for p in found.bundle.problems if p.artifact == found.artifact.id]
    text = "; ".join(f"{p.path}: {p.detail}" for p in problems[:3])
    return text + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")


def spec_snippet(name: str) -> str:
    """The `[[artifact]]` TOML block that would put `name` into a bundle."""
    weights = _torchvision_weights_for(name) if name.startswith("http") else None
    if weights:
        name = weights
    if re.match(r"^https?://", name):
        filename = name.rstrip("/").rsplit("/", 1)[-1] or "file"
        art_id = re.sub(r"[^a-z0-9]+", "-", filename.rsplit(".", 1)[0].lower()).strip("-")
        body = f'source = "url"\nurl = "{name}"\nsha256 = "<sha256 of the file>"'
    elif _TORCHVISION_WEIGHTS.match(name):
        art_id = name.split("_Weights", 1)[0].lower().replace("_", "-")
        body = f'source = "torchvision"\nweights = "{name}"'
    elif name.startswith("timm/") or ("/" not in name and "." in name):
        model = name.removeprefix("timm/")
        art_id = re.sub(r"[^a-z0-9]+", "-", model.split(".", 1)[0].lower()).strip("-")
        body = f'source = "timm"\nmodel = "{model}"'
    elif "/" not in name:
        # An artifact id (a spec's name for something), not a Hub repo: say so rather
        # than suggest a repo = "vit-base-in21k" that cannot build.
        return (f"# {name!r} looks like an artifact id: the [[artifact]] with id = {name!r} of the "
                f"spec this stack's bundle is built from (bundles/*.toml), e.g.\n"
                f'[[artifact]]\nid = "{name}"\nsource = "hf"\nrepo = "ORG/NAME"   # the Hub repo it names')
    else:
        art_id = re.sub(r"[^a-z0-9]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-")
        body = f'source = "hf"\nrepo = "{name}"\nrevision = "{DEFAULT_REVISION}"'
    return f'[[artifact]]\nid = "{art_id or "artifact"}"\n{body}'


def _torchvision_weights_for(url: str) -> str | None:
    """The torchvision weights name ("ViT_B_16_Weights.IMAGENET1K_V1") whose URL is `url`.

    Only when torchvision is already imported (this runs in error messages; never
    import torch for them).
    """
    import sys

    models = sys.modules.get("torchvision.models")
    if models is None:
        return None
    try:
        for model_name in models.list_models():
            for weights in models.get_model_weights(model_name):
                if weights.url == url:
                    return f"{type(weights).__name__}.{weights.name}"
    except Exception:  # an unexpected torchvision version must not break the error message
        return None
    return None


def contents_listing(bundles: list[AttachedBundle]) -> str:
    """What the attached bundles hold, one line per artifact, in search order."""
    if not bundles:
        from runtime import constants

        roots = ", ".join(constants.search_roots())
        return (
            "No bundle is attached: none found in $BUNDLE_PATH "
            f"({constants.bundle_path_entries() or 'unset'}) or the search roots ({roots})."
        )
    lines = ["Attached bundles (search order):"]
    for bundle in bundles:
        lines.append(f"  {bundle.name} {bundle.version} at {bundle.path}")
        for a in bundle.manifest.artifacts:
            aliases = f"  aliases: {', '.join(a.aliases)}" if a.aliases else ""
            state = "" if bundle.artifact_ok(a) else "  [INCOMPLETE]"
            lines.append(f"    {a.id:<24} {a.source:<11} {a.ref}{aliases}{state}")
        if not bundle.manifest.artifacts:
            lines.append("    (no artifacts)")
    return "\n".join(lines)


def missing_message(name: str, bundles: list[AttachedBundle]) -> str:
    """The ArtifactNotFoundError text: what is attached and how to add `name`."""
    return (
        f"no attached bundle holds an artifact named {name!r} (matched against ids, refs "
        f"and aliases).\n{contents_listing(bundles)}\n"
        f"To add it, put this in your bundle spec (bundles/NAME.toml):\n\n"
        f"{spec_snippet(name)}\n\n"
        f"then run `bundle build bundles/NAME.toml` and attach the new bundle "
        f"(Kaggle: add the dataset to the notebook; elsewhere: BUNDLE_PATH=/path/to/bundle)."
    )


def forgotten_artifact_hint(host: str, port: int | None, clues: dict[str, str],
                            bundles: list[AttachedBundle]) -> str:
    """Explain a strict-mode violation: which artifact the code was probably fetching."""
    name = clues.get("repo_id")
    url = clues.get("url", "")
    if not name and url:
        match = _HF_URL_REPO.match(url)
        name = match.group("repo") if match and not match.group("repo").startswith("api/") else url
    if not name:
        return (
            "Nothing in the call says which artifact it wanted. "
            + contents_listing(bundles)
            + "\nIf this code needs a model or file, add it to the bundle spec and rebuild."
        )
    found = find(name, bundles)
    if found is not None:
        return (
            f"The bundle '{found.bundle.name}' holds {name!r} (artifact '{found.artifact.id}', "
            f"{found.path}), so the code asked for something the bundle lacks: another "
            f"revision or file of it, or it ran before runtime.activate() set the caches."
        )
    return "The code was fetching " + repr(name) + ", but " + missing_message(name, bundles)


def resolve(name: object) -> Path:
    """Local path of an artifact of the attached bundles.

    Works before activate() too (it then reads the bundles `runtime.locate()` finds)::

        weights = runtime.resolve("ViT_B_16_Weights.IMAGENET1K_V1")   # .../torch/hub/checkpoints/...pth
        folder = runtime.resolve("google/vit-base-patch16-224-in21k")  # .../snapshots/<commit>

    Args:
        name: artifact id, ref (HF repo id, torchvision weights name or enum member,
            timm model name, URL) or alias, as listed in bundle.json.

    Returns:
        The path inside the bundle: the snapshot folder (hf, timm) or the file
        (torchvision, url).

    Raises:
        ArtifactNotFoundError: no attached bundle holds it (the message lists what
            they hold and the spec snippet that adds it), or it is incomplete and no
            declared fallback is usable.

    Warns:
        FallbackWarning: the artifact is incomplete and a declared fallback was used.
    """
    return resolve_with_provenance(name).path


def resolve_with_provenance(name: object) -> Resolved:
    """runtime.resolve(), and the record of what it resolved.

    Returns:
        A Resolved: `.path` (what resolve() returns) and `.provenance`, a dict of
        plain values for checkpoints and JSON: bundle name, version and digest,
        artifact id, ref with the pinned commit / weights enum / URL, every file's
        path, size and sha256, and `fallback` (None, or which primary was
        incomplete and why). runtime.provenance.line() makes one log line of it.

    Raises and warns as runtime.resolve().
    """
    from runtime.catalog import attach_all
    from runtime.locate import locate
    from runtime.provenance import Resolved, of_artifact
    from runtime.state import current

    act = current()
    bundles = act.bundles if act is not None else attach_all(locate())[0]
    found, why = choose_in(name, bundles)
    fallback = None if why is None else {"from": str(name), "reason": why}
    return Resolved(found.path, of_artifact(str(name), found.bundle, found.artifact, fallback))


#: What ``--checkpoint`` takes in a folder artifact (a run bundle's model folder).
CHECKPOINT_NAME = "best.pt"
_local_checkpoints: dict[tuple[str, int, int], dict[str, Any]] = {}


def resolve_checkpoint(value: str | os.PathLike, *, option: str = "--checkpoint",
                       filename: str = CHECKPOINT_NAME) -> Resolved:
    """The checkpoint a command was given, and its provenance record.

    ``value`` is a file (used as it is, its sha256 recorded), or the id or ref of an
    artifact of the attached bundles: a checkpoint file, or a folder holding
    ``filename`` (``best.pt``; a run bundle made by ``bundle from-run`` is such a folder). Under ``activate(strict=True)`` the
    artifact comes from the bundles like any model.

    Raises:
        runtime.errors.CheckpointError: ``value`` looks like a file path and is neither a
            file nor an artifact, or names a folder artifact without ``best.pt``.
        runtime.errors.ArtifactNotFoundError: no attached bundle holds an artifact of that
            name (the message lists what they hold).
    """
    from runtime.errors import ArtifactNotFoundError, CheckpointError
    from runtime.provenance import Resolved, of_local

    text = os.fspath(value)
    path = Path(text).expanduser()
    if path.is_file():
        # A command may resolve its checkpoint twice (which task? then load): hash once.
        st = path.stat()
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        if key not in _local_checkpoints:
            _local_checkpoints[key] = of_local(path)
        return Resolved(path, _local_checkpoints[key])
    try:
        resolved = resolve_with_provenance(text)
    except ArtifactNotFoundError:
        if path.suffix or "/" in text or os.sep in text:
            raise CheckpointError(
                f"{option} {text}: no such file, and no attached bundle holds an artifact of "
                f"that name; pass the {filename} that train wrote, or the id of a "
                "checkpoint artifact in an attached bundle (bundle ls)"
            ) from None
        raise
    found = resolved.path
    if found.is_dir():
        if not (found / filename).is_file():
            raise CheckpointError(
                f"{option} {text}: artifact {resolved.provenance['artifact']['id']} of bundle "
                f"{resolved.provenance['bundle']['name']} is a folder without {filename}; "
                "pass the id of a checkpoint artifact"
            )
        found = found / filename
    return Resolved(found, resolved.provenance)


def provenance_of_name(name: str | None) -> dict[str, Any] | None:
    """The provenance of what the attached bundles serve under `name` to unmodified code
    (torchvision `weights=`, timm `pretrained=True`): the artifact listed under it, no
    fallback (the libraries load the file itself). None for None or nothing found."""
    if not name:
        return None
    from runtime.catalog import attach_all
    from runtime.locate import locate
    from runtime.provenance import of_artifact
    from runtime.state import current

    act = current()
    bundles = act.bundles if act is not None else attach_all(locate())[0]
    found = find(name, bundles)
    if found is None:
        return None
    return of_artifact(name, found.bundle, found.artifact, None)
