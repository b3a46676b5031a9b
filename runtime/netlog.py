"""Recording mode: what a process fetches over the network, for ``bundle capture``.

``bundle capture -- COMMAND`` starts COMMAND with ``runtime/_site`` first on
PYTHONPATH; its ``sitecustomize`` calls :func:`install_from_env` in every Python
process of the run (children too), before any user code. From then on each HTTP
request is written as one JSON line to the file ``$OFFLINE_BUNDLE_CAPTURE_LOG``::

    {"kind": "http", "pid": 123, "client": "urllib", "method": "GET",
     "url": "https://download.pytorch.org/models/x.pth", "status": 200,
     "length": 1000, "bytes": 1000, "sha256": "...", "final_url": null}

Where requests are seen:

- ``http.client`` (``putrequest`` / ``getresponse`` and the response's reads): urllib
  and so ``torch.hub`` (torchvision, timm's URL weights), requests and urllib3;
- ``httpx`` and ``httpx2`` (huggingface_hub 1.x and 2.x): ``Client.send``,
  ``AsyncClient.send`` and the responses' ``close``, patched when first imported;
- :mod:`runtime.guard`'s audit hook in recording mode: connections to other hosts
  (clients none of the above knows: ``{"kind": "connect"}``) and child programs that
  download on their own (curl, wget, git, ...: ``{"kind": "exec"}``).

Nothing secret is written: no header, no body, URLs through
:func:`runtime.redact.redact_url` (no ``user:password@``, no signature or token
values). The body's sha256 is computed on the way (plain GETs answered 200), so a
file a library kept in memory still gets a pin.

``$OFFLINE_BUNDLE_CAPTURE_MIRRORS`` (a JSON list of ``[FROM, TO]`` URL prefixes,
``bundle capture --mirror``) rewrites what urllib and requests ask for; the log keeps
the URL as the library asked for it, which is what the spec must name.

Standard library only, and cheap when idle: it runs in every process of the run.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import threading
from typing import Any

#: programs that download on their own, out of sight of the Python hooks
DOWNLOADERS = frozenset({"curl", "wget", "git", "git-lfs", "aria2c", "gsutil", "aws", "azcopy",
                         "rclone", "kaggle", "hf", "huggingface-cli"})


class _State:
    fd: int | None = None
    mirrors: list[tuple[str, str]] = []
    asked: dict[str, str] = {}  # rewritten URL -> the URL the library asked for
    open_entries: set[_Entry] = set()
    lock = threading.Lock()
    seen_connects: set[tuple[str, int | None]] = set()


def _write(record: dict[str, Any]) -> None:
    fd = _State.fd
    if fd is None:
        return
    record["pid"] = os.getpid()
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        os.write(fd, line)  # O_APPEND: one write per line, whole lines from every process
    except OSError:
        pass


def _redact(url: str) -> str:
    from runtime.redact import redact_url

    return redact_url(url)


def rewrite(url: str) -> str:
    """``url`` after the first matching ``--mirror`` prefix (unchanged when none matches)."""
    for src, dst in _State.mirrors:
        if url.startswith(src):
            new = dst + url[len(src):]
            with _State.lock:
                _State.asked[new] = url
            return new
    return url


def _as_asked(url: str) -> str:
    with _State.lock:
        return _State.asked.get(url, url)


class _Entry:
    """One response being read: counts (and hashes) its body, written once at the end."""

    __slots__ = ("record", "hasher", "depth", "done", "__weakref__")

    def __init__(self, record: dict[str, Any], *, hash_body: bool) -> None:
        self.record = record
        self.record.setdefault("bytes", 0)
        self.hasher = hashlib.sha256() if hash_body else None
        self.depth = 0
        self.done = False
        with _State.lock:
            _State.open_entries.add(self)

    def feed(self, data: Any) -> None:
        self.record["bytes"] += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        length = self.record.get("length")
        if length is not None and self.record["bytes"] >= length:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        with _State.lock:
            _State.open_entries.discard(self)
        rec = self.record
        complete = rec.get("length") is None or rec["bytes"] == rec["length"]
        if self.hasher is not None and complete and rec["bytes"] > 0:
            rec["sha256"] = self.hasher.hexdigest()
        rec["complete"] = complete
        _write(rec)


# --- http.client: urllib, requests, urllib3 ---------------------------------------------


def _http_client_url(conn: Any, target: str) -> str:
    if target.startswith(("http://", "https://")):
        return target  # through a proxy: the request line holds the whole URL
    https = getattr(conn, "default_port", None) == 443
    host = getattr(conn, "_tunnel_host", None) or conn.host
    port = getattr(conn, "_tunnel_port", None) or conn.port
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if https else 80
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{'https' if https else 'http'}://{netloc}{target}"


def _patch_http_client() -> None:
    import http.client as hc

    conn_cls, resp_cls = hc.HTTPConnection, hc.HTTPResponse
    if getattr(conn_cls, "_offline_bundle_recording", False):
        return
    conn_cls._offline_bundle_recording = True  # type: ignore[attr-defined]
    orig_put, orig_get = conn_cls.putrequest, conn_cls.getresponse

    def putrequest(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._offline_bundle_request = (method, url)
        return orig_put(self, method, url, *args, **kwargs)

    def getresponse(self):  # type: ignore[no-untyped-def]
        response = orig_get(self)
        request = self.__dict__.pop("_offline_bundle_request", None)
        if request is not None:
            try:
                method, target = request
                url = _as_asked(_http_client_url(self, target))
                length = response.getheader("Content-Length")
                record = {
                    "kind": "http", "client": "http.client", "method": method, "url": _redact(url),
                    "status": response.status,
                    "length": int(length) if length and length.isdigit() and method != "HEAD" else None,
                    "encoding": response.getheader("Content-Encoding"),
                }
                entry = _Entry(record, hash_body=method == "GET" and response.status == 200
                               and not record["encoding"])
                response._offline_bundle_entry = entry
                if method == "HEAD" or record["length"] == 0:
                    entry.finish()
            except Exception:  # recording must never break the program it watches
                pass
        return response

    def reader(orig):  # type: ignore[no-untyped-def]
        def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            entry = self.__dict__.get("_offline_bundle_entry")
            if entry is None or entry.done:
                return orig(self, *args, **kwargs)
            entry.depth += 1
            try:
                result = orig(self, *args, **kwargs)
            finally:
                entry.depth -= 1
            if entry.depth == 0:
                if isinstance(result, int):  # readinto: the count; the bytes are in args[0]
                    if result:
                        entry.feed(memoryview(args[0])[:result])
                elif result:
                    entry.feed(result)
                elif not entry.done:
                    entry.finish()  # end of the body
            return result

        return read

    def close(self):  # type: ignore[no-untyped-def]
        entry = self.__dict__.get("_offline_bundle_entry")
        try:
            orig_close(self)
        finally:
            if entry is not None:
                entry.finish()

    orig_close = resp_cls.close
    conn_cls.putrequest = putrequest  # type: ignore[method-assign]
    conn_cls.getresponse = getresponse  # type: ignore[method-assign]
    for name in ("read", "readinto", "read1"):
        setattr(resp_cls, name, reader(getattr(resp_cls, name)))
    resp_cls.close = close  # type: ignore[method-assign]


def _patch_urllib(module: Any) -> None:
    opener = module.OpenerDirector
    orig_open = opener.open

    def open_(self, fullurl, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _State.mirrors:
            if isinstance(fullurl, str):
                fullurl = rewrite(fullurl)
            else:
                fullurl.full_url = rewrite(fullurl.full_url)
        return orig_open(self, fullurl, *args, **kwargs)

    opener.open = open_


def _patch_requests(module: Any) -> None:
    session = module.Session
    orig_send = session.send

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        if _State.mirrors:
            request.url = rewrite(request.url)
        return orig_send(self, request, **kwargs)

    session.send = send


# --- httpx / httpx2: huggingface_hub ------------------------------------------------------


def _patch_httpx(module: Any) -> None:
    name = module.__name__

    def start(response: Any, asked: str, method: str) -> None:
        try:
            final = str(response.url)
            length = response.headers.get("content-length")
            record = {
                "kind": "http", "client": name, "method": method, "url": _redact(asked),
                "status": response.status_code,
                "final_url": _redact(final) if final != asked else None,
                "length": int(length) if length and length.isdigit() and method != "HEAD" else None,
                "encoding": response.headers.get("content-encoding"),
            }
            entry = _Entry(record, hash_body=False)
            response._offline_bundle_entry = entry
            if response.is_closed or method == "HEAD":
                record["bytes"] = response.num_bytes_downloaded
                entry.finish()
        except Exception:
            pass

    def finish(response: Any) -> None:
        entry = getattr(response, "_offline_bundle_entry", None)
        if entry is not None and not entry.done:
            entry.record["bytes"] = response.num_bytes_downloaded
            entry.finish()

    client, aclient, resp = module.Client, module.AsyncClient, module.Response
    orig_send, orig_asend = client.send, aclient.send
    orig_close, orig_aclose = resp.close, resp.aclose

    def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked, method = str(request.url), request.method
        response = orig_send(self, request, *args, **kwargs)
        start(response, asked, method)
        return response

    async def asend(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked, method = str(request.url), request.method
        response = await orig_asend(self, request, *args, **kwargs)
        start(response, asked, method)
        return response

    def close(self):  # type: ignore[no-untyped-def]
        try:
            return orig_close(self)
        finally:
            finish(self)

    async def aclose(self):  # type: ignore[no-untyped-def]
        try:
            return await orig_aclose(self)
        finally:
            finish(self)

    client.send, aclient.send, resp.close, resp.aclose = send, asend, close, aclose


# --- sockets and programs, through the guard's audit hook -------------------------------


def _on_event(kind: str, detail: tuple) -> None:
    if kind == "connect":
        host, port = detail
        key = (str(host), port)
        with _State.lock:
            if key in _State.seen_connects:
                return
            _State.seen_connects.add(key)
        _write({"kind": "connect", "host": str(host), "port": port})
    elif kind == "exec":
        program = os.path.basename(str(detail[0]))
        if program in DOWNLOADERS:
            _write({"kind": "exec", "program": program})


# --- installation ------------------------------------------------------------------------

_PATCHES = {"urllib.request": _patch_urllib, "requests": _patch_requests,
            "httpx": _patch_httpx, "httpx2": _patch_httpx}


class _AfterImport:
    """A meta-path finder that runs a patch right after a module's first import."""

    def __init__(self, patches: dict[str, Any]) -> None:
        self.patches = dict(patches)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        patch = self.patches.get(name)
        if patch is None:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        del self.patches[name]
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingLoader:
    def __init__(self, inner: Any, patch: Any) -> None:
        self._inner, self._patch = inner, patch

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = self._inner  # what the module would have had
        self._inner.exec_module(module)
        try:
            self._patch(module)
        except Exception:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install(log_path: str, mirrors: list[tuple[str, str]] | None = None) -> None:
    """Start recording this process's network use into ``log_path`` (idempotent)."""
    if _State.fd is not None:
        return
    _State.fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _State.mirrors = [(str(a), str(b)) for a, b in (mirrors or [])]
    _patch_http_client()
    pending = {}
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
        else:
            pending[name] = patch
    sys.meta_path.insert(0, _AfterImport(pending))
    from runtime import guard

    guard.record(_on_event)
    atexit.register(_flush)


def _flush() -> None:
    """At exit: responses never closed nor read to the end are written as they stand."""
    with _State.lock:
        entries = list(_State.open_entries)
    for entry in entries:
        entry.finish()


def install_from_env() -> bool:
    """:func:`install` from ``$OFFLINE_BUNDLE_CAPTURE_LOG`` / ``_MIRRORS``; False when unset."""
    from runtime import constants

    path = constants.capture_log()
    if not path:
        return False
    mirrors = constants.capture_mirrors()
    install(path, [tuple(m) for m in mirrors])
    return True
