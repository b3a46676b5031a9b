"""The fetch engine's HTTP client: urllib3, plus the parts of requests that we need.

Why not requests: for every request, requests merges cookies, session
settings and hooks. On the benchmark's Hub stand-in that cost 0.55 ms CPU per
request, against 0.30 ms for urllib3 on its own, and a repo of hundreds of
small files pays it hundreds of times (120 small files: 0.31 -> 0.24 s).

What requests did for us, done here instead:

* Redirects are followed by hand, at most MAX_REDIRECTS. Each target is given
  to ``check`` before it is requested. ``Authorization`` is dropped as soon as
  a hop changes scheme, host or port.
* Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
  ``ALL_PROXY``, ``NO_PROXY``; upper or lower case). The answer is cached per
  scheme, host and the variables' values, so a proxy set between two builds in
  one notebook is seen.
* CA certificates: ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (a file or a
  folder), else certifi's bundle, as requests does.

Not carried over: credentials from ``~/.netrc``, and cookies.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from builder import constants

MAX_REDIRECTS = 10
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)

_local = threading.local()


class TooManyRedirects(Exception):
    """A chain of redirects longer than MAX_REDIRECTS (a loop, most likely)."""


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname, port


class Client:
    """One thread's connection pools (and proxy pools), keyed by the CA settings."""

    def __init__(self, ca: str | None) -> None:
        import urllib3

        self._urllib3 = urllib3
        self._pool_kwargs: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        if ca is None:
            import certifi

            self._pool_kwargs["ca_certs"] = certifi.where()
        elif os.path.isdir(ca):
            self._pool_kwargs["ca_cert_dir"] = ca
        else:
            self._pool_kwargs["ca_certs"] = ca
        self._direct = urllib3.PoolManager(**self._pool_kwargs)
        self._proxied: dict[str, Any] = {}  # proxy url -> ProxyManager
        self._proxy_for: dict[tuple, str | None] = {}  # (scheme, host, env) -> proxy url

    def _manager(self, url: str, env: tuple) -> Any:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, env)
        if key not in self._proxy_for:
            self._proxy_for[key] = _environment_proxy(parts.scheme, parts.hostname or "")
        proxy = self._proxy_for[key]
        if proxy is None:
            return self._direct
        if proxy not in self._proxied:
            self._proxied[proxy] = self._urllib3.ProxyManager(proxy, **self._pool_kwargs)
        return self._proxied[proxy]

    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
        check: Callable[[str], None],
    ) -> Any:
        """GET ``url``, following redirects; returns the urllib3 response, body unread.

        The caller reads the body and then calls :func:`release`.

        Raises:
            whatever ``check`` raises for a redirect target (nothing is sent there);
            TooManyRedirects; urllib3 and OS errors of the connection, unchanged.
        """
        urllib3 = self._urllib3
        env = constants.proxy_settings()
        headers = dict(headers)
        timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._manager(url, env).request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=timeout,
            )
            location = response.headers.get("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                # Where the body came from and the headers that reached it: a segmented
                # download ranges that URL directly instead of redirecting every part.
                response.final_url = url
                response.final_headers = headers
                return response
            target = urljoin(url, location)
            try:
                response.drain_conn()
            finally:
                response.release_conn()
            check(target)
            if _origin(target) != _origin(url):
                # What requests does: credentials for one server never reach another.
                headers.pop("Authorization", None)
            url = target
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def release(response: Any, *, body_read: bool) -> None:
    """Give the connection back to its pool: kept alive if the body was read to its end.

    A connection whose response body was left unread cannot carry another request
    and is closed (what requests does when a response is closed early).
    """
    if not body_read:
        response.close()
    response.release_conn()


def client() -> Client:
    """This thread's client (connections stay alive across the files of a build)."""
    ca = constants.ca_bundle()
    current = getattr(_local, "client", None)
    if current is None or _local.ca != ca:
        current = Client(ca)
        _local.client, _local.ca = current, ca
    return current


def _environment_proxy(scheme: str, host: str) -> str | None:
    """The proxy URL the environment gives for ``scheme://host``, or None (direct)."""
    from urllib.request import getproxies_environment, proxy_bypass_environment

    proxies = getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or (host and proxy_bypass_environment(host, proxies)):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
