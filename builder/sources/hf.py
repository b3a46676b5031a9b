"""``source = "hf"``: a Hugging Face Hub model repo, snapshotted at one commit.

huggingface_hub speaks the protocol (``HfApi.model_info`` resolves the revision to
a commit, ``list_repo_tree`` lists files with sizes and LFS sha256s,
``hf_hub_url`` builds the file URLs, ``build_hf_headers`` finds the user's token);
the payloads go through our own fetch engine, because ``snapshot_download`` gives
up on the first HTTP 500 of a file and does not resume.

Bundle layout (the hub cache layout, with real files and no ``blobs/``)::

    hf/models--ORG--NAME/refs/REV                 the commit, no trailing newline
    hf/models--ORG--NAME/snapshots/COMMIT/<files>

LFS files are checked against the sha256 the Hub reports, files kept in git
against their git blob id (sha1 of ``b"blob SIZE\\0" + bytes``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from builder.errors import BuildError
from builder.sources import HUB_SNAPSHOT_FIELDS, FieldSpec, Source, register_source
from builder.sources.records import GeneratedFile, PlannedFile, ResolveContext, ResolvedArtifact
from runtime.constants import DEFAULT_REVISION, HF_DIR
from runtime.manifest import ManifestError, check_relative_path

if TYPE_CHECKING:
    from builder.artifact import ArtifactSpec

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?\Z")
#: tries for the small API calls (model info, tree); file downloads retry in fetch()
_API_TRIES = 4


_REF_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a name git would accept for a branch or tag; None when it is.

    The rules of ``git check-ref-format`` (a 40-hex commit passes them too): no
    '..', no control characters, spaces or any of ``~^:?*[\\``, no '@{', no
    empty component, no component starting with '.' or ending in '.lock', and not
    ending in '.'. The revision names a file of the bundle (``refs/REV``), so this
    is what keeps a hostile revision from writing outside it.
    """
    if not revision or revision == "@":
        return "is empty" if not revision else "is '@'"
    if _REF_FORBIDDEN_RE.search(revision):
        return "holds '..', '//', '@{', a space, a control character or one of ~^:?*[\\"
    if revision.startswith("/") or revision.endswith(("/", ".")):
        return "starts with '/' or ends with '/' or '.'"
    for part in revision.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"has a component {part!r} that starts with '.' or ends with '.lock'"
    return None


def check_revision(artifact_id: str, revision: str, where: str = "field 'revision'") -> None:
    """Raise BuildError when ``revision`` is not a valid git ref name (see revision_problem)."""
    problem = revision_problem(revision)
    if problem is not None:
        raise BuildError(
            f"artifact '{artifact_id}': {where}: {revision!r} {problem}; use a branch, tag or "
            "40-hex commit of the repo, as git names them",
            artifact=artifact_id,
        )


def repo_folder(repo_id: str) -> str:
    """``hf/models--ORG--NAME``: the hub cache folder of a model repo."""
    return f"{HF_DIR}/models--{repo_id.replace('/', '--')}"


def hub_endpoint() -> str:
    """The Hub endpoint huggingface_hub uses now (``HF_ENDPOINT``, read at call time)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def hub_headers() -> dict[str, str]:
    """User agent and the user's token from huggingface_hub's usual places."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers()


def headers_for(url: str) -> dict[str, str]:
    """Hub headers, but only for URLs on the Hub endpoint: a mirror never sees the token."""
    if urlsplit(url).netloc == urlsplit(hub_endpoint()).netloc:
        return hub_headers()
    return {}


def _is_transport_error(exc: BaseException) -> bool:
    try:
        import httpx2 as httpx  # what huggingface_hub 2.x speaks
    except ImportError:  # pragma: no cover - huggingface_hub 1.x
        import httpx
    return isinstance(exc, (httpx.TransportError, OSError))


def _api_call(artifact_id: str, what: str, call: Callable[[], Any]) -> Any:
    """Run a Hub API call, retrying server errors and dropped connections."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    delay = 0.5
    for attempt in range(1, _API_TRIES + 1):
        try:
            return call()
        except OfflineModeIsEnabled:
            raise BuildError(
                f"artifact '{artifact_id}': {what}: huggingface_hub is in offline mode "
                "(HF_HUB_OFFLINE=1, or runtime.activate() ran in this process); building needs "
                "the Hub: unset HF_HUB_OFFLINE or build in a fresh shell",
                artifact=artifact_id,
            ) from None
        except GatedRepoError:
            raise BuildError(
                f"artifact '{artifact_id}': {what}: the repo is gated; accept its terms on the "
                "Hub and log in (`hf auth login` or HF_TOKEN)",
                artifact=artifact_id,
            ) from None
        except RepositoryNotFoundError:
            raise BuildError(
                f"artifact '{artifact_id}': field 'repo': {what}: repository not found on "
                f"{hub_endpoint()} (check the name; private repos need a token: HF_TOKEN)",
                artifact=artifact_id,
            ) from None
        except RevisionNotFoundError:
            raise BuildError(
                f"artifact '{artifact_id}': field 'revision': {what}: revision not found "
                "(a branch, tag or 40-hex commit of the repo)",
                artifact=artifact_id,
            ) from None
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            transient = status is None or status >= 500 or status == 429
            if not transient or attempt == _API_TRIES:
                raise BuildError(
                    f"artifact '{artifact_id}': {what} failed: HTTP {status}: {str(e).splitlines()[0]}",
                    artifact=artifact_id,
                ) from None
        except Exception as e:
            # Connection refused/reset, timeouts: huggingface_hub lets the HTTP
            # client's transport errors through.
            if not _is_transport_error(e):
                raise
            if attempt == _API_TRIES:
                raise BuildError(
                    f"artifact '{artifact_id}': {what} failed: cannot reach {hub_endpoint()} "
                    f"({_transport_reason(e)}). Build where the Hub is reachable (check the "
                    "network or the proxy: HTTPS_PROXY), or point HF_ENDPOINT at a Hub mirror "
                    "(HF_ENDPOINT=https://MIRROR bundle build ...); a bundle built elsewhere "
                    "carries the files",
                    artifact=artifact_id,
                ) from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _transport_reason(exc: BaseException) -> str:
    """A few words for a connection failure: the name lookup, a refusal, a timeout."""
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or \
            "Temporary failure in name resolution" in text or "getaddrinfo" in text:
        return "the host name does not resolve: no network, or a DNS that blocks it"
    if "Connection refused" in text:
        return "the connection was refused"
    if "timed out" in text.lower():
        return "the connection timed out"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def plan_hub_repo(
    artifact_id: str,
    repo_id: str,
    *,
    revision: str = "main",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    choose_files: Callable[[list[str]], list[str]] | None = None,
    source: str = "hf",
    ref: str | None = None,
    ref_name: str | None = None,
) -> ResolvedArtifact:
    """Resolve ``revision`` to a commit and plan every file of the snapshot.

    Shared by the ``hf`` and ``timm`` sources.

    Args:
        artifact_id: for error messages.
        repo_id: ``ORG/NAME``.
        revision: branch, tag or commit.
        include / exclude: glob patterns as in ``snapshot_download``'s
            ``allow_patterns`` / ``ignore_patterns`` (``*`` crosses ``/``).
        choose_files: when no ``include`` is given, picks the files from the repo's
            file list (timm uses it to take only the weights it loads).
        source / ref: what the artifact entry reports.
        ref_name: the ``refs/`` file to write (default: the revision, or "main"
            when the revision is a commit).

    Raises:
        BuildError: unknown repo or revision, no file matched, server unreachable.
    """
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    check_revision(artifact_id, revision)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint)
    info = _api_call(
        artifact_id,
        f"model info of {repo_id}@{revision}",
        lambda: api.model_info(repo_id, revision=revision),
    )
    commit = info.sha
    if not commit or not _COMMIT_RE.match(commit):
        raise BuildError(
            f"artifact '{artifact_id}': the Hub did not report a commit for {repo_id}@{revision}",
            artifact=artifact_id,
        )
    entries = _api_call(
        artifact_id,
        f"file list of {repo_id}@{commit[:12]}",
        lambda: list(api.list_repo_tree(repo_id, revision=commit, recursive=True)),
    )
    repo_files = {e.path: e for e in entries if isinstance(e, RepoFile)}
    if include is None and choose_files is not None:
        include = choose_files(sorted(repo_files))
    selected = list(
        filter_repo_objects(
            sorted(repo_files), allow_patterns=list(include) if include else None,
            ignore_patterns=list(exclude) if exclude else None,
        )
    )
    if not selected:
        raise BuildError(
            f"artifact '{artifact_id}': field 'include': no file of {repo_id}@{commit[:12]} "
            f"matches include={list(include or [])} exclude={list(exclude or [])}; "
            f"the repo has: {', '.join(sorted(repo_files)[:20])}",
            artifact=artifact_id,
        )

    folder = repo_folder(repo_id)
    snapshot = f"{folder}/snapshots/{commit}"
    files: list[PlannedFile] = []
    for name in selected:
        entry = repo_files[name]
        try:
            rel = check_relative_path(f"{snapshot}/{name}", f"artifact '{artifact_id}'")
        except ManifestError as e:
            raise BuildError(f"{e} (file name from the Hub)", artifact=artifact_id) from None
        url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)
        if entry.lfs is not None:
            files.append(
                PlannedFile(rel, [url], sha256=entry.lfs.sha256.lower(), size=entry.lfs.size)
            )
        else:
            files.append(PlannedFile(rel, [url], size=entry.size, git_sha1=entry.blob_id))

    # refs/REV lets unmodified code that asks for the revision by name find the
    # snapshot offline. Code that names no revision asks for "main"; when the spec
    # pins a commit, "main" of this bundle is that commit.
    if ref_name is None:
        ref_name = "main" if _COMMIT_RE.match(revision) else revision
    check_revision(artifact_id, ref_name, "the ref name written to refs/")
    try:
        refs = check_relative_path(f"{folder}/refs/{ref_name}", f"artifact '{artifact_id}'")
    except ManifestError as e:
        raise BuildError(str(e), artifact=artifact_id) from None
    generated = [GeneratedFile(refs, commit.encode())]
    return ResolvedArtifact(
        id=artifact_id,
        source=source,
        ref=ref or repo_id,
        revision=commit,
        path=snapshot,
        files=files,
        generated=generated,
    )


def revision_field_problem(options: dict[str, Any]) -> str | None:
    """The spec check of an optional ``revision`` field (hf and timm sources)."""
    revision = options.get("revision")
    if revision is None:
        return None
    problem = revision_problem(revision)
    if problem is None:
        return None
    return (
        f"field 'revision': {revision!r} {problem}; use a branch, tag or 40-hex commit, "
        "as git names them"
    )


class HubHostedSource(Source):
    """A source whose files live on the Hub (``hf``, ``timm``).

    The user's token goes only to URLs on the Hub endpoint, and the endpoint is
    part of the plan's fingerprint: another ``HF_ENDPOINT`` re-resolves.
    """

    def headers(self, url: str) -> dict[str, str]:
        return headers_for(url)

    def fingerprint_extra(self) -> dict[str, Any]:
        return {"endpoint": hub_endpoint()}

    def mirror_hint(self, url: str) -> str | None:
        if urlsplit(url).netloc != urlsplit(hub_endpoint()).netloc:
            return None  # e.g. timm weights hosted at a plain URL: --mirror applies
        return ("point HF_ENDPOINT at a Hub mirror (HF_ENDPOINT=https://MIRROR bundle build ...; "
                "--mirror does not apply to Hub models, docs/fetch-store.md)")


@register_source("hf")
class HfSource(HubHostedSource):
    """A model repo on the Hugging Face Hub (or the endpoint in ``HF_ENDPOINT``)."""

    ref_field = "repo"
    fields = {"repo": FieldSpec(str, required=True, help="ORG/NAME on the Hub"), **HUB_SNAPSHOT_FIELDS}

    def check(self, options: dict[str, Any]) -> str | None:
        if not REPO_RE.match(options["repo"]):
            return f"field 'repo' must be ORG/NAME, got {options['repo']!r}"
        return revision_field_problem(options)

    def resolve(self, artifact: ArtifactSpec, ctx: ResolveContext) -> ResolvedArtifact:
        return plan_hub_repo(
            artifact.id,
            artifact.get("repo"),
            revision=artifact.get("revision", DEFAULT_REVISION),
            include=artifact.include,
            exclude=artifact.exclude,
        )
