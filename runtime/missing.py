"""What to tell someone whose unmodified loading code asked for a file no bundle can give.

One message for every loader (transformers, diffusers, timm, huggingface_hub,
torch.hub): the repo or URL and the file asked for, whether a bundle holds the repo
but not the file or holds a damaged copy, the declared fallback, the bundles searched
and the spec block to add. runtime.loaders raises it as MissingFromBundleError.
"""

from __future__ import annotations

from typing import Any

from runtime import constants
from runtime.catalog import AttachedBundle, Problem
from runtime.errors import MissingFromBundleError
from runtime.resolve import contents_listing, spec_snippet

#: Bundles listed in full in a message; beyond this, a count (200 mounted datasets).
_LISTED_BUNDLES = 8
_LISTED_FILES = 12


def searched(bundles: list[AttachedBundle]) -> tuple[tuple[str, str], ...]:
    return tuple((b.name, str(b.path)) for b in bundles)


def search_roots_text() -> str:
    """Where activate() looked: $BUNDLE_PATH and the search roots actually used."""
    entries = [str(p) for p in constants.bundle_path_entries()]
    roots = constants.search_roots()
    return (f"$BUNDLE_PATH ({', '.join(entries) if entries else 'unset'}) and "
            f"{', '.join(roots) if roots else 'no search roots ($OFFLINE_BUNDLE_SEARCH_ROOTS is empty)'}")


def search_roots_brief() -> str:
    """Where activate() looked, in a few words: $BUNDLE_PATH and the folders the search
    roots start from (``/kaggle/input`` for its 28 dataset and model patterns); the full
    list is in ``bundle doctor -v`` and :func:`search_roots_text`."""
    entries = [str(p) for p in constants.bundle_path_entries()]
    tops: list[str] = []
    for pattern in constants.search_roots():
        parts = []
        for part in pattern.split("/"):
            if any(ch in part for ch in "*?["):
                break
            parts.append(part)
        top = "/".join(parts) or pattern
        if top not in tops:
            tops.append(top)
    # /kaggle/input/datasets is inside /kaggle/input: say the outer folder once.
    tops = [t for t in tops if not any(t.startswith(other + "/") for other in tops)]
    where = ", ".join(tops) if tops else "no search roots ($OFFLINE_BUNDLE_SEARCH_ROOTS is empty)"
    return f"$BUNDLE_PATH ({', '.join(entries) if entries else 'unset'}), {where}"


def no_bundle_text() -> str:
    return (f"no bundle is attached (looked in {search_roots_brief()}; `bundle doctor -v` lists "
            "every place). Attach the bundle (Kaggle: Add Input > the dataset or model `bundle "
            "publish` made; Docker: /opt/bundles; elsewhere: BUNDLE_PATH=/path/to/bundle) and "
            "run runtime.activate() again")


def _listing(bundles: list[AttachedBundle]) -> str:
    if len(bundles) <= _LISTED_BUNDLES:
        return contents_listing(bundles)
    shown = contents_listing(bundles[:_LISTED_BUNDLES])
    return f"{shown}\n  ... and {len(bundles) - _LISTED_BUNDLES} more bundle(s)"


def _how_to_add(name: str) -> str:
    return (f"To bundle it, add this to your spec (bundles/NAME.toml), run `bundle build` and "
            f"attach the new bundle:\n\n{spec_snippet(name)}\n")


def _damaged(head: str, bundle: AttachedBundle, artifact: Any, path: str,
             info: dict[str, Any]) -> MissingFromBundleError:
    """A bundle lists the file, and its copy is missing or of the wrong size."""
    problem = _problem_for(bundle, path)
    detail = problem.detail if problem else "not usable"
    return MissingFromBundleError(
        f"{head}: bundle '{bundle.name}' at {bundle.path} lists it (artifact '{artifact.id}', "
        f"{bundle.path / path}) but its copy is damaged: {detail}. Re-attach or re-download the "
        f"bundle, or rebuild it with `bundle build`; `bundle verify {bundle.path}` lists every "
        "damaged file." + _fallback_text(bundle, artifact.id, artifact.fallbacks),
        reason="broken", **info)


def _problem_for(bundle: AttachedBundle, path: str) -> Problem | None:
    return next((p for p in bundle.problems if p.path == path), None)


def _fallback_text(bundle: AttachedBundle, artifact_id: str, fallbacks: list[str]) -> str:
    if not fallbacks:
        return ""
    described = []
    for fb in fallbacks:
        other = next((a for a in bundle.manifest.artifacts if a.id == fb), None)
        described.append(f"'{fb}' ({other.ref})" if other else f"'{fb}'")
    return (f" Artifact '{artifact_id}' declares the fallback(s) {', '.join(described)}: loading "
            f"code that names the repo does not take them; runtime.resolve('{artifact_id}') does "
            "(with a warning), or load the fallback by its own name.")


def hub_file(repo_id: str, filename: str | None, *, revision: str | None, repo_type: str | None,
             bundles: list[AttachedBundle], looked_for: list[str] | None = None,
             ) -> MissingFromBundleError:
    """The error for a Hub file (or, with filename None, a whole snapshot) no bundle gives.

    `looked_for`: every file the loading call tried (e.g. model.safetensors, then
    pytorch_model.bin), when it gave up on all of them; `filename` is the last.
    """
    several = looked_for is not None and len(looked_for) > 1
    listed = ", ".join(f"'{f}'" for f in looked_for or ())
    if several:
        what = f"none of {listed} of the Hub repo '{repo_id}'"
    elif filename:
        what = f"'{filename}' of the Hub repo '{repo_id}'"
    else:
        what = f"the Hub repo '{repo_id}'"
    rev = f" (revision {revision})" if revision and revision != "main" else ""
    info = {"repo_id": repo_id, "filename": filename, "revision": revision,
            "bundles": searched(bundles)}
    head = f"offline-bundle: {what}{rev} is not in the attached bundles"
    if not bundles:
        return MissingFromBundleError(f"{head}: {no_bundle_text()}.", reason="no-bundle", **info)
    folder = f"{constants.HF_DIR}/{(repo_type or 'model')}s--{repo_id.replace('/', '--')}/snapshots/"
    holders = []
    for bundle in bundles:
        for artifact in bundle.manifest.artifacts:
            files = [f.path[len(folder):] for f in artifact.files if f.path.startswith(folder)]
            if files:
                holders.append((bundle, artifact, files))
    if not holders:
        return MissingFromBundleError(
            f"{head}: no attached bundle holds that repo.\n{_listing(bundles)}\n"
            f"{_how_to_add(repo_id)}", reason="not-bundled", **info)
    lines = []
    for bundle, artifact, files in holders:
        commit = files[0].split("/", 1)[0]
        names = sorted({f.split("/", 1)[1] for f in files if "/" in f})
        if filename and filename in names:
            return _damaged(head, bundle, artifact, f"{folder}{commit}/{filename}", info)
        shown = ", ".join(names[:_LISTED_FILES]) + (
            f" (+{len(names) - _LISTED_FILES} more)" if len(names) > _LISTED_FILES else "")
        lines.append(f"bundle '{bundle.name}' at {bundle.path} holds {repo_id} as artifact "
                     f"'{artifact.id}' at commit {commit[:12]} with {len(names)} file(s): {shown}."
                     + _fallback_text(bundle, artifact.id, artifact.fallbacks))
    if several:
        held = f" It holds none of {listed}. "
        fix = ("Add the one you need to the artifact's include patterns (or remove include to "
               "take every file of the repo) in the spec, run `bundle build` and attach the new "
               "bundle.")
    elif filename:
        held = f" It does not hold '{filename}'. "
        fix = (f"Add '{filename}' to the artifact's include patterns (or remove include to take "
               "every file of the repo) in the spec, run `bundle build` and attach the new bundle.")
    else:
        held = " "
        fix = "Check the revision and the repo type, or rebuild the bundle from the spec."
    return MissingFromBundleError(
        f"{head}: " + " ".join(lines) + held + fix, reason="file-not-in-bundle", **info)


def url_file(url: str, filename: str, bundles: list[AttachedBundle]) -> MissingFromBundleError:
    """The error for a torch.hub / torchvision / timm URL checkpoint no bundle gives."""
    head = f"offline-bundle: the checkpoint {url} ('{filename}') is not in the attached bundles"
    info = {"url": url, "filename": filename, "bundles": searched(bundles)}
    if not bundles:
        return MissingFromBundleError(f"{head}: {no_bundle_text()}.", reason="no-bundle", **info)
    path = f"{constants.TORCH_CHECKPOINTS_DIR}/{filename}"
    for bundle in bundles:
        for artifact in bundle.manifest.artifacts:
            if any(f.path == path for f in artifact.files):
                return _damaged(head, bundle, artifact, path, info)
    return MissingFromBundleError(f"{head}.\n{_listing(bundles)}\n{_how_to_add(url)}",
                                  reason="not-bundled", **info)
