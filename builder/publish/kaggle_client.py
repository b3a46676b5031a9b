"""The official Kaggle client, as publish uses it: credentials, errors that say what to
do, and the state of a remote dataset."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import constants as builder_constants
from builder.errors import KaggleAuthError, KaggleMetadataError, KaggleServerError
from builder.publish.kaggle_plan import DIGEST_RE
from runtime import constants

_ENV_TO_CLIENT_FLAG = {"LOCALHOST": "--local", "STAGING": "--staging", "ADMIN": "--admin"}


def _kaggle_config_path() -> str:
    """Where kaggle.json lives, decided now (the client decides once, at import)."""
    explicit = constants.env_value("KAGGLE_CONFIG_DIR")
    if explicit:
        return explicit
    config_dir = os.path.join(constants.home(), ".kaggle")
    if sys.platform.startswith("linux") and not os.path.exists(config_dir):
        config_dir = os.path.join(constants.xdg_config_home(), "kaggle")
    return config_dir


def make_api() -> Any:
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

        def upload_files(self, request, resources, folder, blob_type, upload_context,  # type: ignore[override]
                         quiet=False, dir_mode="skip", ignore_patterns=None):
            if dir_mode != TREE:
                return super().upload_files(request, resources, folder, blob_type, upload_context,
                                            quiet, dir_mode, ignore_patterns)
            upload_tree(self, request, folder, blob_type, upload_context, quiet)

    api = StrictKaggleApi()
    api.uploaded_names = []
    # The client reads KAGGLE_API_ENVIRONMENT and VERBOSE once, at import; read
    # them now instead. Never pass --verbose: it prints the Authorization header.
    flag = _ENV_TO_CLIENT_FLAG.get(builder_constants.kaggle_api_environment())
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


#: ``dir_mode`` of our client: every file its own blob, the folders sent as a tree
TREE = "tree"


def upload_tree(api: Any, request: Any, folder: str, blob_type: Any, upload_context: Any,
                quiet: bool) -> None:
    """Upload every file under ``folder`` as its own blob and describe the folders as a tree
    (``files`` at the top, ``directories`` below): how kagglehub uploads a model, so that
    Kaggle lays the version out as the bundle is, with nothing to unpack. Symlinked entries
    of ``folder`` (the staging folder links to the bundle) are followed; the client's
    metadata files at the top are not uploaded.

    Written here because the kaggle client only skips folders or archives them
    (``dir_mode`` "zip"/"tar"), and kagglehub's uploader is its own client with its own
    credentials and endpoint; this reuses the kaggle client's resumable blob upload.
    """
    from kagglesdk.datasets.types.dataset_api_service import (
        ApiDatasetNewFile,
        ApiUploadDirectoryInfo,
    )

    skip = {api.MODEL_METADATA_FILE, api.MODEL_INSTANCE_METADATA_FILE, api.DATASET_METADATA_FILE}

    def token_for(path: str, name: str) -> Any:
        new_file = ApiDatasetNewFile()
        new_file.token = api._upload_file(name, path, blob_type, upload_context, quiet, None).token
        return new_file

    def directory(path: str, name: str) -> Any:
        node = ApiUploadDirectoryInfo()
        node.name = name
        node.files, node.directories = [], []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_dir():
                node.directories.append(directory(entry.path, entry.name))
            elif entry.is_file():
                node.files.append(token_for(entry.path, entry.name))
        return node

    request.files = request.files or []
    request.directories = request.directories or []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            request.directories.append(directory(entry.path, entry.name))
        elif entry.is_file() and entry.name not in skip:
            request.files.append(token_for(entry.path, entry.name))


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
        owner = ("the model's owner (--handle OWNER/MODEL/FRAMEWORK/VARIATION)" if "Model" in method
                 else "the dataset's owner (--dataset OWNER/SLUG)")
        hint = f"; check KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN or kaggle.json, and {owner}"
    return KaggleServerError(
        f"Kaggle answered {where} to {method}: {text}{hint}", method=method, status=status,
        server_message=text,
    )


@contextlib.contextmanager
def calling(method: str) -> Iterator[None]:
    import requests

    try:
        yield
    except KaggleServerError:
        raise
    except requests.exceptions.RequestException as e:
        raise _server_error(method, e) from None
    except ValueError as e:  # the client's own validation
        raise KaggleMetadataError(f"kaggle client refused {method}: {e}") from None


def check_reply(method: str, response: Any) -> None:
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


@contextlib.contextmanager
def upload_workspace(prefix: str) -> Iterator[Path]:
    """A private (0700) scratch folder for one upload, removed whatever happens.

    The staged tree goes in it; so do the client's folder archives and upload-resume
    records, which it writes under tempfile.gettempdir() (pointed at ``WORK/tmp`` for
    the block); the client's print() progress goes to stderr, keeping stdout for our
    report.
    """
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
    tmp = work / "tmp"
    tmp.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield work
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(work, ignore_errors=True)


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

    with calling("GetDatasetStatus"):
        try:
            api.dataset_status(f"{owner}/{slug}")
        except Exception as e:
            if getattr(getattr(e, "response", None), "status_code", None) == 404:
                return RemoteDataset(exists=False)
            raise
    request = ApiGetDatasetRequest()
    request.owner_slug = owner
    request.dataset_slug = slug
    with calling("GetDataset"), api.build_kaggle_client() as client:
        info = client.datasets.dataset_api_client.get_dataset(request)
    versions = sorted(info.versions or [], key=lambda v: v.version_number or 0)
    latest = versions[-1] if versions else None
    digest = None
    for text in (latest.version_notes if latest else None, info.description):
        found = DIGEST_RE.search(text or "")
        if found:
            digest = found.group(1)
            break
    number = info.current_version_number or (latest.version_number if latest else None)
    return RemoteDataset(exists=True, version=number, digest=digest, url=info.url)
