"""The environment variables only the builder reads, in one place (the runtime's, and
those both share, are in runtime/constants.py; docs/environment.md lists them all).

Read at call time: a test or a wrapper script may set them just before a build."""

from __future__ import annotations

import os

#: Environment variables that decide a request's proxy (and key the connection pools).
PROXY_VARIABLES = tuple(
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
)


def source_date_epoch() -> str | None:
    """$SOURCE_DATE_EPOCH (reproducible builds): fixes `created` and wheel timestamps."""
    return os.environ.get("SOURCE_DATE_EPOCH") or None


def proxy_settings() -> tuple[str | None, ...]:
    """The proxy variables, in PROXY_VARIABLES' order."""
    return tuple(os.environ.get(name) for name in PROXY_VARIABLES)


def ca_bundle() -> str | None:
    """$REQUESTS_CA_BUNDLE or $CURL_CA_BUNDLE: a CA file (a TLS-inspecting proxy's)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def kaggle_api_environment() -> str:
    """$KAGGLE_API_ENVIRONMENT (the kaggle client's endpoint choice; LOCALHOST in tests)."""
    return os.environ.get("KAGGLE_API_ENVIRONMENT", "")


def docker_host() -> str | None:
    return os.environ.get("DOCKER_HOST") or None
