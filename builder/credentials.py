"""Credentials never leave the machine: redacted URLs, spec headers from the environment,
and a scan of every file before it is published, packed or put into an image.

Three layers:

1. **Specs carry no secrets.** A URL with ``user:password@`` is refused (the spec
   says where to put the secret instead); a ``headers`` table names environment
   variables (``Authorization = "env:MY_TOKEN"``), read at build time, never written.
2. **Nothing the build writes holds a secret.** A signed URL's sensitive query
   values (signatures, tokens, keys, credentials, expiry) are written as ``***``
   (:func:`redact_url`) in bundle.json, README, notebooks and the build lock; the
   full URL lives in memory for the download only, and a rebuild takes it from the
   spec again (:func:`restore_urls`).
3. **Defense in depth before anything is sent.** ``bundle publish``, ``bundle pack``
   and ``bundle image`` scan every byte they are about to send for the secrets this
   machine holds (:func:`machine_secrets`: the Kaggle key, the Hugging Face token,
   values of variables named like ``*TOKEN*``/``*KEY*``/``*SECRET*``) and for URLs
   with a password, and refuse, naming the file and the kind of secret, never the
   secret itself (:func:`refuse_secrets`).
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from builder.errors import CredentialError
from runtime import constants
from runtime.redact import REDACTED, redact_url

_ENV_REF_RE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)\Z")
#: Environment variables whose values count as secrets for the scan.
_SECRET_NAME_RE = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
#: Shorter values are too common to mean anything ("1", "true", a port).
SECRET_MIN_LENGTH = 8
#: A URL carrying user:password (the password part non-empty).
_USERINFO_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s/@:\"'<>]+:[^\s/@\"'<>]+@[^\s/\"'<>]")
#: Files up to this size that look like text are also searched for user:password URLs.
_TEXT_SCAN_MAX = 8 << 20


# --- URLs --------------------------------------------------------------------------


def is_redacted(url: str) -> bool:
    return url != redact_url(url) or REDACTED in url


def url_without_query(url: str) -> str:
    """The URL up to its ``?``: what a signed URL names whatever its signature."""
    return url.split("#", 1)[0].split("?", 1)[0]


def userinfo_problem(url: str) -> str | None:
    """The problem with credentials written into ``url`` (``user:pass@host``), or None."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return None
    if "@" not in netloc:
        return None
    return (
        "holds credentials (user:password@ or user@ before the host); a spec is copied into "
        "bundle.json, the README and the build lock. Put the secret in an environment variable "
        'and send it as a header: headers = { Authorization = "env:MY_TOKEN" }'
    )


def restore_urls(redacted: list[str], spec_urls: Iterable[str | None]) -> list[str] | None:
    """Full URLs for the redacted ones a build lock holds, taken from the spec again.

    Returns None when a redacted URL is not in the spec (it changed): the plan
    must then be resolved afresh.
    """
    full = {redact_url(u): u for u in spec_urls if u}
    restored = []
    for url in redacted:
        if url in full:
            restored.append(full[url])
        elif is_redacted(url):
            return None
        else:
            restored.append(url)
    return restored


# --- spec headers ---------------------------------------------------------------------


def header_problem(name: str, value: object) -> str | None:
    """Why a spec ``headers`` entry is not ``NAME = "env:VARIABLE"``, or None."""
    if not isinstance(value, str) or not _ENV_REF_RE.match(value):
        return (
            f"field 'headers': {name} must be \"env:VARIABLE\" (the value is read from the "
            "environment when the build runs and never written); a literal value in a spec "
            "would be copied wherever the spec goes"
        )
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        return f"field 'headers': {name!r} is not an HTTP header name"
    return None


def resolve_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``{"Authorization": "env:TOKEN"}`` -> the values now in the environment.

    Returns:
        (headers with values, names of the variables that are not set).
    """
    values: dict[str, str] = {}
    unset: list[str] = []
    for name, ref in headers.items():
        var = _ENV_REF_RE.match(ref).group(1)  # checked by the spec
        value = constants.env_value(var)
        if value:
            values[name] = value
        else:
            unset.append(var)
    return values, unset


# --- the machine's secrets --------------------------------------------------------------


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _kaggle_config_dirs() -> list[str]:
    return constants.kaggle_config_dirs()


def _hf_token_files() -> list[str]:
    return constants.hf_token_files()


def machine_secrets() -> list[tuple[str, str]]:
    """Every credential this machine holds that must never be published: (kind, value).

    The Kaggle key (kaggle.json, KAGGLE_KEY, KAGGLE_API_TOKEN, access_token), the
    Hugging Face token (HF_TOKEN, the token file, stored_tokens), and the value
    of every environment variable whose name holds TOKEN, KEY, SECRET, PASSWORD or
    CREDENTIAL. Values shorter than SECRET_MIN_LENGTH are left out.
    """
    found: list[tuple[str, str]] = []
    for d in _kaggle_config_dirs():
        text = _read_text(os.path.join(d, "kaggle.json"))
        if text:
            try:
                key = json.loads(text).get("key")
            except (ValueError, AttributeError):
                key = None
            if isinstance(key, str):
                found.append((f"the Kaggle API key ({os.path.join(d, 'kaggle.json')})", key))
        token = _read_text(os.path.join(d, "access_token"))
        if token:
            found.append((f"the Kaggle API token ({os.path.join(d, 'access_token')})", token))
    for path in _hf_token_files():
        token = _read_text(path)
        if token:
            found.append((f"the Hugging Face token ({path})", token))
        stored = _read_text(os.path.join(os.path.dirname(path), "stored_tokens"))
        for line in (stored or "").splitlines():
            value = line.partition("=")[2].strip()
            if value:
                found.append((f"a stored Hugging Face token ({os.path.dirname(path)}/stored_tokens)",
                              value))
    for name, value in constants.environment().items():
        if _SECRET_NAME_RE.search(name) and value.strip():
            found.append((f"the value of ${name}", value.strip()))
    seen: set[str] = set()
    secrets = []
    for kind, value in found:
        if len(value) >= SECRET_MIN_LENGTH and value not in seen:
            seen.add(value)
            secrets.append((kind, value))
    return secrets


# --- the scan ------------------------------------------------------------------------------


def _looks_like_text(head: bytes) -> bool:
    return b"\0" not in head[:8192]


def scan_bytes(data: bytes | mmap.mmap, secrets: list[tuple[str, bytes]]) -> list[str]:
    """Kinds of secret found in ``data`` (each kind once)."""
    kinds = [kind for kind, value in secrets if data.find(value) != -1]
    if len(data) <= _TEXT_SCAN_MAX and _looks_like_text(data[:8192]):
        if _USERINFO_RE.search(data):
            kinds.append("a URL with user:password")
    return kinds


def scan_file(path: Path, secrets: list[tuple[str, bytes]]) -> list[str]:
    """Kinds of secret found in the file at ``path`` (read through mmap: no copy)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return scan_bytes(data, secrets)


def find_secrets(files: Iterable[tuple[str, Path | bytes]],
                 secrets: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(file label, kind) for every secret found in ``files`` (label, path or bytes)."""
    if secrets is None:
        secrets = machine_secrets()
    needles = [(kind, value.encode()) for kind, value in secrets]
    hits = []
    for label, source in files:
        kinds = scan_bytes(source, needles) if isinstance(source, bytes) else scan_file(source, needles)
        hits += [(label, kind) for kind in kinds]
    return hits


def refuse_secrets(files: Iterable[tuple[str, Path | bytes]], *, action: str,
                   secrets: list[tuple[str, str]] | None = None) -> None:
    """Raise CredentialError when any of ``files`` holds a secret of this machine.

    Args:
        files: (label shown in the message, path or bytes) of everything about to be sent.
        action: what is refused, e.g. "nothing was published".

    Raises:
        CredentialError: names each file and the kind of secret (never its value).
    """
    hits = find_secrets(files, secrets)
    if not hits:
        return
    shown = "; ".join(f"{label}: {kind}" for label, kind in hits[:10])
    more = f"; and {len(hits) - 10} more" if len(hits) > 10 else ""
    raise CredentialError(
        f"refusing to send files that hold credentials, {action}: {shown}{more}. "
        "Remove the secret from those files (rebuild the bundle; specs name secrets as "
        'headers = { NAME = "env:VARIABLE" }) and try again'
    )


# --- credential files by name (what a build context or archive must never carry) ---

# Names that hold credentials. A build context carrying one is refused outright,
# whatever put it there: a leaked token in an image layer cannot be taken back.
_CREDENTIAL_NAMES = frozenset(
    {
        "kaggle.json",
        ".netrc",
        "_netrc",
        ".git-credentials",
        ".pypirc",
        ".env",
        ".npmrc",
        ".dockercfg",
        "credentials",
        "credentials.json",
        "stored_tokens",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
    }
)
_CREDENTIAL_DIRS = frozenset(
    {".git", ".ssh", ".aws", ".kaggle", ".docker", ".gnupg", ".huggingface"}
)
_CREDENTIAL_SUFFIXES = (".pem", ".p12", ".pfx", ".key")
# huggingface_hub keeps the login token in a file named "token" in HF_HOME.
_HF_TOKEN_RE = re.compile(r"(^|/)(huggingface|\.cache/huggingface)/token$")


def credential_reason(path: str) -> str | None:
    """Why `path` (relative, "/"-separated) looks like a credential file, or None."""
    p = PurePosixPath(path)
    name = p.name.lower()
    if name in _CREDENTIAL_NAMES:
        return f"file name {p.name!r} is a credential file"
    if name.endswith(_CREDENTIAL_SUFFIXES):
        return f"file name {p.name!r} looks like a private key or certificate"
    for part in p.parts[:-1]:
        if part.lower() in _CREDENTIAL_DIRS:
            return f"folder {part!r} holds credentials or repository history"
    if _HF_TOKEN_RE.search(path.lower()):
        return "it is a Hugging Face token file"
    return None
