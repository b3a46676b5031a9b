"""Which URLs may be fetched, and ``--mirror FROM=TO`` rewrites."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from builder.credentials import redact_url
from builder.errors import FetchError


def parse_mirror(spec: str) -> tuple[str, str]:
    """Parse a ``--mirror FROM=TO`` value into ``(FROM, TO)``.

    Raises:
        ValueError: not of the form FROM=TO with both sides non-empty.
    """
    src, sep, dst = spec.partition("=")
    if not sep or not src.strip() or not dst.strip():
        raise ValueError(
            f"--mirror {spec!r}: expected FROM=TO, e.g. "
            "--mirror https://download.pytorch.org/=https://mirror.example.com/pytorch/"
        )
    return src.strip(), dst.strip()


def parse_mirrors(values: Sequence[str]) -> list[tuple[str, str]]:
    """Every ``--mirror FROM=TO`` value parsed (see :func:`parse_mirror`)."""
    return [parse_mirror(v) for v in values]


def rewrite_url(url: str, mirrors: Sequence[tuple[str, str]]) -> str:
    """Apply the first mirror whose FROM prefix starts ``url``; unchanged if none does."""
    for src, dst in mirrors:
        if url.startswith(src):
            return dst + url[len(src) :]
    return url


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url_allowed(url: str, *, allow_http: bool) -> None:
    """Refuse URLs we must not connect to, before any connection is made.

    https is always allowed; plain http only to loopback hosts (127.0.0.0/8,
    ::1, localhost) unless ``allow_http``.

    Raises:
        FetchError: (permanent) naming the URL and the way out.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise FetchError(
            f"invalid url {shown}: {exc}", url=shown, reason="bad url", permanent=True
        ) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise FetchError(
            f"unsupported url {shown}: only http(s)://HOST/... urls can be fetched",
            url=shown,
            reason="bad url",
            permanent=True,
        )
    if scheme == "http" and not allow_http and not is_loopback(host):
        raise FetchError(
            f"refusing plain http to {host} ({shown}): use an https url, or pass "
            "--allow-http if you trust this network (bytes are still checked against sha256)",
            url=shown,
            reason="http refused",
            permanent=True,
        )
