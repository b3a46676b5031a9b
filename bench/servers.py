"""Local servers for the benchmarks: a Hub stand-in whose large files come from a "CDN".

The test stand-ins (``tests/fixtures/hubserver.py``, ``tests/fixtures/fileserver.py``)
hold every file in memory and write it from Python; measured here they cap a
loopback download at ~150-200 MB/s while ``os.sendfile`` serves the same file at
500-800 MB/s. A benchmark that measures the server is worthless, so:

* the Hub protocol (model info, tree, resolve, error codes) is the test stand-in's
  own handler (:class:`tests.fixtures.hubserver.HubStandIn`), unchanged for small
  files;
* large (LFS) files are answered the way the real Hub answers them: a ``302`` to
  a CDN URL with ``X-Linked-Etag`` / ``X-Linked-Size`` / ``X-Repo-Commit``, and the
  CDN is a static file server that sends the bytes from disk with ``os.sendfile``
  (HTTP Range and ``ETag`` supported), so every contender follows the same redirect
  and reads from the same server;
* both run in their own process (``start_servers``), so the server never competes
  with a contender for the Python GIL.

Run by hand::

    python -m bench.servers DATA_DIR [HUB_PORT CDN_PORT [LINK_MB_S [LATENCY_MS]]]   # prints {"hub": URL, ...}

``LATENCY_MS`` emulates a round trip to a distant server: every request waits that
long before it is answered, and a new connection once more (its TCP handshake).
Loopback answers in microseconds, so without it small files measure CPU only.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import mmap
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.hubserver import (
    HubRepo,
    HubStandIn,
    RepoFileData,
    _HubHandler,
    git_blob_sha1,
    is_lfs,
)

REPO_ID_SEP = "--"  # DATA_DIR/hub/ORG--NAME/ holds the files of repo ORG/NAME
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Latency:
    """Mixin for a handler: one round trip of delay per request, and per new connection."""

    latency_s = 0.0

    def setup(self) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)  # the TCP handshake's round trip
        super().setup()  # type: ignore[misc]

    def parse_request(self) -> bool:
        ok = super().parse_request()  # type: ignore[misc]
        if ok and self.latency_s:
            time.sleep(self.latency_s)  # the request's way there and the answer's way back
        return ok


# --- the CDN: static files by sha256, sent with sendfile ----------------------


class _CdnHandler(_Latency, BaseHTTPRequestHandler):
    """``GET /blobs/<sha256>`` (Range, ETag); ``GET /stats`` -> ``{"sent": body bytes so far}``."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's
    # delayed ACK stalls every response ~40 ms (real servers set TCP_NODELAY).
    disable_nagle_algorithm = True
    blobs: dict[str, Path] = {}  # sha256 -> file on disk (set per server)
    sent = [0]  # body bytes sent, all requests (a list: shared by the handler instances)
    link_bytes_per_s = 0  # 0: as fast as loopback goes; else a cap per connection
    sent_lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        if self.path == "/stats":
            body = json.dumps({"sent": self.sent[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = self.blobs.get(self.path.split("?", 1)[0].rsplit("/", 1)[-1])
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        start, end, status = 0, size, 200
        m = _RANGE_RE.match(self.headers.get("Range", "").strip())
        if m and m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) + 1, size) if m.group(2) else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{path.name}"')
        self.send_header("Last-Modified", email.utils.formatdate(0, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        rate = self.link_bytes_per_s
        slice_size = max(64 << 10, rate // 50) if rate else end - start
        began = time.monotonic()
        try:
            with open(path, "rb") as f:
                offset = start
                while offset < end:
                    if rate:
                        # Emulate a link: never ahead of rate * elapsed (per connection,
                        # as a CDN edge or a congested path limits one TCP stream).
                        ahead = (offset - start) / rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
                    count = min(end - offset, slice_size)
                    sent = os.sendfile(self.connection.fileno(), f.fileno(), offset, count)
                    if sent == 0:
                        break
                    offset += sent
                    with self.sent_lock:
                        self.sent[0] += sent
        except OSError:
            self.close_connection = True  # the client went away (killed build)


def start_cdn(
    blobs: dict[str, Path], port: int = 0, link_mb_s: float = 0, latency_ms: float = 0
) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``blobs`` (sha256 -> file) at ``/blobs/<sha256>``; returns the server and its URL.

    ``link_mb_s``: cap each connection at this many MB/s (0: no cap).
    ``latency_ms``: the emulated round trip (0: loopback's).
    """
    handler = type("CdnHandler", (_CdnHandler,), {
        "blobs": dict(blobs), "sent": [0], "link_bytes_per_s": int(link_mb_s * 1_000_000),
        "latency_s": latency_ms / 1000,
    })
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --- the Hub stand-in with disk-backed LFS files --------------------------------


@dataclass
class _DiskLfsFile(RepoFileData):
    """An LFS file kept on disk; ``data`` is a read-only mmap (only its length is used)."""

    disk_path: str = ""
    digest: str = ""

    @property
    def sha256(self) -> str:  # type: ignore[override]
        return self.digest


class _BenchHubHandler(_Latency, _HubHandler):
    cdn_url = ""
    disable_nagle_algorithm = True  # see _CdnHandler

    def _resolve(self, rest: str, fault: Any) -> None:
        repo, tail = self.hub._find_repo(rest)
        if repo is not None and tail.startswith("resolve/"):
            revision, _, filename = tail[len("resolve/") :].partition("/")
            commit = repo.commit_for(revision)
            entry = repo.commits[commit].get(filename) if commit else None
            if isinstance(entry, _DiskLfsFile):
                # What huggingface.co does for LFS files: a redirect to the CDN.
                location = f"{self.cdn_url}/blobs/{entry.digest}"
                return self._send(302, b"", {
                    "Location": location,
                    "X-Repo-Commit": commit,
                    "ETag": f'"{entry.digest}"',
                    "X-Linked-Etag": f'"{entry.digest}"',
                    "X-Linked-Size": str(len(entry.data)),
                }, "text/plain")
        return super()._resolve(rest, fault)


class BenchHub(HubStandIn):
    """HubStandIn whose LFS files are redirected to a sendfile CDN."""

    def __init__(self, cdn_url: str, port: int = 0, latency_ms: float = 0) -> None:
        super().__init__()
        self.cdn_url = cdn_url
        self.port = port
        self.latency_ms = latency_ms

    def add_disk_repo(self, repo_id: str, folder: Path, digests: dict[str, str]) -> str:
        """Publish ``folder`` as ``repo_id``; LFS files stay on disk (``digests``: rel -> sha256)."""
        files: dict[str, RepoFileData] = {}
        for p in sorted(folder.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(folder).as_posix()
            if p.stat().st_size > 64 * 1024:
                with open(p, "rb") as f:
                    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                files[rel] = _DiskLfsFile(rel, data, True, disk_path=str(p), digest=digests[rel])
            else:
                data = p.read_bytes()
                files[rel] = RepoFileData(rel, data, is_lfs(rel, data))
        h = hashlib.sha1(repo_id.encode())
        for rel, f in files.items():
            h.update(f"\0{rel}\0{f.sha256}".encode())
        commit = h.hexdigest()
        repo = self.repos.setdefault(repo_id, HubRepo(repo_id))
        repo.commits[commit] = files
        repo.refs["main"] = commit
        return commit

    def start(self) -> BenchHub:
        handler = type("Handler", (_BenchHubHandler,), {
            "hub": self, "cdn_url": self.cdn_url, "latency_s": self.latency_ms / 1000,
        })
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self


def serve(
    data_dir: Path, hub_port: int = 0, cdn_port: int = 0, link_mb_s: float = 0,
    latency_ms: float = 0,
) -> dict[str, Any]:
    """Start the CDN and the Hub for ``data_dir``; returns URLs and commits.

    ``data_dir/hub/ORG--NAME/`` folders become repos ``ORG/NAME``;
    ``data_dir/files/`` holds plain files (url artifacts) served by the CDN only.
    ``link_mb_s`` caps each CDN connection (an emulated link; 0: loopback speed);
    ``latency_ms`` delays every request and new connection to both servers.
    ``data_dir/digests.json`` maps each folder name ("files" included) to
    ``{relative path: sha256}`` of its large files (hashing gigabytes at every
    start would dominate short benchmarks).
    """
    digests: dict[str, dict[str, str]] = json.loads((data_dir / "digests.json").read_text())
    blobs = {}
    for folder, files in digests.items():
        base = data_dir / "files" if folder == "files" else data_dir / "hub" / folder
        blobs.update({sha: base / rel for rel, sha in files.items()})
        if folder == "files":
            # Plain files also by name (/files/NAME): a url artifact's URL, or what a
            # --mirror rewrite of download.pytorch.org/models/NAME leads to.
            blobs.update({Path(rel).name: base / rel for rel in files})
    _cdn, cdn_url = start_cdn(blobs, cdn_port, link_mb_s, latency_ms)
    hub = BenchHub(cdn_url, hub_port, latency_ms)
    commits = {}
    for folder in sorted((data_dir / "hub").iterdir()):
        repo_id = folder.name.replace(REPO_ID_SEP, "/", 1)
        commits[repo_id] = hub.add_disk_repo(repo_id, folder, digests.get(folder.name, {}))
    hub.start()
    return {"hub": hub.url, "cdn": cdn_url, "commits": commits}


class Servers:
    """The bench servers in their own process; use as a context manager.

    ``ports=(hub, cdn)`` binds fixed ports, e.g. to restart the servers with
    changed data at the same URLs (the build lock remembers the endpoint).
    """

    def __init__(
        self, data_dir: Path, ports: tuple[int, int] = (0, 0), link_mb_s: float = 0,
        latency_ms: float = 0,
    ) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.link_mb_s = link_mb_s
        self.latency_ms = latency_ms
        self.proc: subprocess.Popen[str] | None = None
        self.hub = self.cdn = ""
        self.commits: dict[str, str] = {}

    def __enter__(self) -> Servers:
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", str(self.data_dir), *map(str, self.ports),
             str(self.link_mb_s), str(self.latency_ms)],
            cwd=root, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError("bench servers did not start (see stderr above)")
        info = json.loads(line)
        self.hub, self.cdn, self.commits = info["hub"], info["cdn"], info["commits"]
        self.ports = (int(self.hub.rsplit(":", 1)[1]), int(self.cdn.rsplit(":", 1)[1]))
        return self

    def cdn_bytes_sent(self) -> int:
        """Body bytes the CDN has sent since it started (counted by the server)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.cdn}/stats", timeout=10) as r:
            return int(json.loads(r.read())["sent"])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    ports = [int(p) for p in sys.argv[2:4]] or [0, 0]
    link = float(sys.argv[4]) if len(sys.argv) > 4 else 0
    latency = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    info = serve(Path(sys.argv[1]), *ports, link_mb_s=link, latency_ms=latency)
    print(json.dumps(info), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

__all__ = ["BenchHub", "Servers", "git_blob_sha1", "serve", "sha256_of", "start_cdn"]
