"""What a captured run fetched: its recorder log (runtime.netlog) reconciled with its caches.

The caches say exactly *what* landed: the Hub cache holds each repo's files under
``snapshots/COMMIT/`` (the commit a branch resolved to, the etag of each file),
``TORCH_HOME/hub/checkpoints`` the torch.hub downloads. The log says *where from*
(a checkpoint's URL), what never reached a cache (a file a library kept in memory:
its sha256 was taken on the way), and what a spec cannot express (an API call, a
failed request, a connection by a client the recorder does not know, a program such
as curl). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from runtime.guard import is_local_host
from runtime.redact import REDACTED

_HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
#: hosts of the Hugging Face Hub and its CDNs (files reach the Hub cache: read from there)
_HUB_SUFFIXES = ("huggingface.co", "hf.co", "xethub.hf.co")
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class CapturedFile:
    """One file of the run, as it sits in a cache."""

    name: str  # path in the repo, or the checkpoint's file name
    local: Path  # the bytes (a Hub cache blob, a checkpoint file)
    size: int
    sha256: str
    etag: str | None = None  # the Hub's id of the file (sha256 for LFS, git blob sha1 otherwise)


@dataclass
class HubCapture:
    """The files of one Hub repo at one commit that the run downloaded."""

    repo_id: str
    repo_type: str
    commit: str
    refs: list[str]  # branch/tag names that pointed at the commit ("main")
    files: list[CapturedFile]
    remote_code: list[str] = field(default_factory=list)  # *.py files: trust_remote_code
    timm_model: str | None = None  # timm's pretrained tag published by this repo


@dataclass
class CheckpointCapture:
    """A torch.hub download (``TORCH_HOME/hub/checkpoints/FILE``)."""

    file: CapturedFile
    url: str | None  # from the log (None: the run fetched it out of the recorder's sight)
    weights: str | None = None  # torchvision's enum, e.g. ViT_B_16_Weights.IMAGENET1K_V1
    timm_model: str | None = None  # timm's pretrained tag whose URL this is


@dataclass
class UrlCapture:
    """A file fetched over HTTP(S) that no cache kept (a library read it into memory)."""

    url: str
    size: int
    sha256: str | None


@dataclass
class Unexpressible:
    """Something the run fetched that a spec cannot hold, and what to do about it."""

    what: str
    why: str
    todo: str


@dataclass
class Capture:
    hub: list[HubCapture] = field(default_factory=list)
    checkpoints: list[CheckpointCapture] = field(default_factory=list)
    urls: list[UrlCapture] = field(default_factory=list)
    problems: list[Unexpressible] = field(default_factory=list)
    requests: int = 0  # HTTP requests recorded
    processes: int = 0  # processes that recorded something

    @property
    def empty(self) -> bool:
        return not (self.hub or self.checkpoints or self.urls)

    def to_json(self) -> dict:
        def f(x: CapturedFile) -> dict:
            return {"name": x.name, "size": x.size, "sha256": x.sha256, "etag": x.etag}

        return {
            "hub": [{"repo": h.repo_id, "repo_type": h.repo_type, "commit": h.commit, "refs": h.refs,
                     "files": [f(x) for x in h.files], "remote_code": h.remote_code} for h in self.hub],
            "checkpoints": [{"url": c.url, "weights": c.weights, "timm_model": c.timm_model,
                             "file": f(c.file)} for c in self.checkpoints],
            "urls": [{"url": u.url, "size": u.size, "sha256": u.sha256} for u in self.urls],
            "not_expressible": [{"what": p.what, "why": p.why, "todo": p.todo} for p in self.problems],
            "requests": self.requests, "processes": self.processes,
        }


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the Hub reports for a file kept in git)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_log(path: Path) -> list[dict]:
    """The recorder's lines; a torn last line (a process killed mid-write) is skipped."""
    records = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def is_hub_url(url: str, endpoint: str) -> bool:
    """True for the Hub endpoint in use (host and port) and the Hub's own hosts and CDNs."""
    parts = urlsplit(url)
    if parts.netloc.lower() == urlsplit(endpoint).netloc.lower():
        return True
    return is_hub_host(parts.hostname or "")


def is_hub_host(host: str) -> bool:
    host = host.lower()
    return any(host == s or host.endswith("." + s) for s in _HUB_SUFFIXES)


# --- the caches --------------------------------------------------------------------------


def scan_hub_cache(hub_cache: Path, hf_home: Path) -> tuple[list[HubCapture], list[Unexpressible]]:
    """Every (repo, commit) with files under ``hub_cache`` (huggingface_hub's layout)."""
    out: list[HubCapture] = []
    problems: list[Unexpressible] = []
    if not hub_cache.is_dir():
        return out, problems
    remote_code = (hf_home / "modules").is_dir()
    for folder in sorted(hub_cache.iterdir()):
        kind, sep, rest = folder.name.partition("--")
        if not sep or kind not in _REPO_TYPES or not folder.is_dir():
            continue
        repo_id = rest.replace("--", "/", 1)
        refs: dict[str, list[str]] = {}
        refs_dir = folder / "refs"
        if refs_dir.is_dir():
            for ref in sorted(p for p in refs_dir.rglob("*") if p.is_file()):
                commit = ref.read_text().strip()
                refs.setdefault(commit, []).append(ref.relative_to(refs_dir).as_posix())
        snapshots = folder / "snapshots"
        for snap in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
            if not _HEX40.match(snap.name):
                continue
            files = []
            for p in sorted(snap.rglob("*")):
                if p.is_dir():
                    continue
                blob = p.resolve()
                if not blob.is_file():
                    continue  # a dangling link: a download that did not finish
                files.append(CapturedFile(p.relative_to(snap).as_posix(), blob, blob.stat().st_size,
                                          sha256_of(blob), etag=blob.name))
            if not files:
                continue
            capture = HubCapture(repo_id, _REPO_TYPES[kind], snap.name, refs.get(snap.name, []), files,
                                 [f.name for f in files if f.name.endswith(".py")] if remote_code else [])
            if capture.repo_type != "model":
                problems.append(Unexpressible(
                    f"{capture.repo_type} repo {repo_id}@{snap.name[:12]} ({len(files)} file(s))",
                    f"a spec's hf source holds model repos; this is a {capture.repo_type} repo",
                    "add its files as url artifacts (the Hub's resolve URLs, pinned to the commit) or "
                    "attach the data as its own Kaggle dataset",
                ))
                continue
            out.append(capture)
    return out, problems


def scan_checkpoints(torch_home: Path) -> tuple[list[CapturedFile], list[Unexpressible]]:
    """torch.hub downloads, and repos ``torch.hub.load`` fetched as code."""
    files: list[CapturedFile] = []
    problems: list[Unexpressible] = []
    hub = torch_home / "hub"
    checkpoints = hub / "checkpoints"
    if checkpoints.is_dir():
        for p in sorted(checkpoints.iterdir()):
            if p.is_file() and not p.name.endswith(".partial"):
                files.append(CapturedFile(p.name, p, p.stat().st_size, sha256_of(p)))
    if hub.is_dir():
        for p in sorted(hub.iterdir()):
            if p.is_dir() and p.name != "checkpoints":
                problems.append(Unexpressible(
                    f"torch.hub repo {p.name} (code from GitHub)",
                    "torch.hub.load fetched a repository's code, not a weights file",
                    "vendor that code into your project (or a Kaggle dataset of your own); its "
                    "weights, if any, were captured as checkpoints",
                ))
    return files, problems


# --- the log -----------------------------------------------------------------------------


def reconcile(log: list[dict], *, hub_cache: Path, hf_home: Path, torch_home: Path,
              endpoint: str) -> Capture:
    """The capture: the caches, completed and explained by the log."""
    capture = Capture()
    capture.hub, problems = scan_hub_cache(hub_cache, hf_home)
    capture.problems += problems
    checkpoint_files, problems = scan_checkpoints(torch_home)
    capture.problems += problems
    http = [r for r in log if r.get("kind") == "http"]
    capture.requests = len(http)
    capture.processes = len({r.get("pid") for r in log})
    by_name: dict[str, str] = {}
    seen_hosts: set[str] = set()
    url_records: dict[str, dict] = {}
    for rec in http:
        url = str(rec.get("url", ""))
        parts = urlsplit(url)
        host = parts.hostname or ""
        seen_hosts.add(host.lower())
        if rec.get("final_url"):
            seen_hosts.add((urlsplit(rec["final_url"]).hostname or "").lower())
        if is_hub_url(url, endpoint):
            continue  # the Hub cache says what arrived
        method, status = str(rec.get("method", "")).upper(), rec.get("status")
        if method == "HEAD" or (isinstance(status, int) and 300 <= status < 400):
            continue
        if method != "GET":
            capture.problems.append(Unexpressible(
                f"{method} {url}", "an API call, not a file download",
                "a spec holds files: run that step online and save its answer as a file of yours",
            ))
            continue
        if not isinstance(status, int) or status >= 400:
            capture.problems.append(Unexpressible(
                f"GET {url} -> {status}", "the request failed, so the run did not get this",
                "if the run needs it, fix the URL or its credentials and capture again",
            ))
            continue
        by_name.setdefault(posixpath.basename(parts.path), url)
        url_records[url] = rec
    # torch.hub checkpoints: the file, and the URL it came from (torch.hub names the file
    # after the URL's last path segment, not unquoted).
    for file in checkpoint_files:
        url = by_name.get(file.name)
        if url is not None:
            url_records.pop(url, None)
        capture.checkpoints.append(CheckpointCapture(file, url))
    for url, rec in url_records.items():
        if REDACTED in url:
            capture.problems.append(Unexpressible(
                url, "a signed or token-bearing URL: its secret part is not written down",
                "add it by hand as a url artifact with headers = { Authorization = \"env:VAR\" } "
                "or a stable URL, with its sha256",
            ))
            continue
        if not rec.get("complete", False):
            capture.problems.append(Unexpressible(
                url, f"the download did not finish ({rec.get('bytes', 0)} of {rec.get('length')} bytes)",
                "let the run read the whole file, or add it by hand with its sha256",
            ))
            continue
        capture.urls.append(UrlCapture(url, int(rec.get("bytes") or 0), rec.get("sha256")))
    for rec in log:
        if rec.get("kind") == "connect":
            host = str(rec.get("host", ""))
            if host.lower() in seen_hosts or is_hub_host(host) or is_local_host(host):
                continue
            seen_hosts.add(host.lower())
            capture.problems.append(Unexpressible(
                f"connection to {host}:{rec.get('port')}",
                "made by a client the recorder cannot read (native code, another protocol)",
                "what it fetched is in the spec only if it reached the Hub or torch caches; "
                "check the run's output for downloads and add them by hand",
            ))
        elif rec.get("kind") == "exec":
            capture.problems.append(Unexpressible(
                f"program {rec.get('program')}", "a program that downloads on its own is out of the "
                "recorder's sight", "add what it fetched by hand (url artifacts with sha256)",
            ))
    _dedupe(capture)
    return capture


def _dedupe(capture: Capture) -> None:
    seen: set[tuple[str, str]] = set()
    kept = []
    for p in capture.problems:
        key = (p.what, p.why)
        if key not in seen:
            seen.add(key)
            kept.append(p)
    capture.problems = kept


def match_registries(capture: Capture) -> None:
    """Name checkpoints after the registry entry that publishes their URL (torchvision's
    weights enums, timm's pretrained tags); importing those libraries only when needed."""
    timm_repos = [h for h in capture.hub if h.repo_id.startswith("timm/")]
    if timm_repos:
        for h in timm_repos:
            h.timm_model = _timm_hub_tag(h.repo_id)
    pending = [c for c in capture.checkpoints if c.url]
    if not pending:
        return
    tv = _torchvision_urls()
    for c in pending:
        c.weights = tv.get(c.url)
    if any(c.weights is None for c in pending):
        tm = _timm_urls()
        for c in pending:
            if c.weights is None:
                c.timm_model = tm.get(c.url)


def _torchvision_urls() -> dict[str, str]:
    try:
        from torchvision.models import get_model_weights, list_models
    except ImportError:
        return {}
    out: dict[str, str] = {}
    for name in list_models():
        try:
            enum = get_model_weights(name)
        except Exception:
            continue
        for w in enum:
            out.setdefault(w.url, f"{enum.__name__}.{w.name}")
    return out


def _timm_hub_tag(repo_id: str) -> str | None:
    """The timm tag whose weights live in ``repo_id`` (``timm/NAME`` publishes ``NAME``)."""
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        return None
    tag = repo_id.split("/", 1)[1]
    try:
        cfg = get_pretrained_cfg(tag)
    except Exception:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return tag if hub_id and hub_id.partition("@")[0] == repo_id else None


def _timm_urls() -> dict[str, str]:
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError:
        return {}
    out: dict[str, str] = {}
    for name in timm.list_pretrained():
        try:
            cfg = get_pretrained_cfg(name)
        except Exception:
            continue
        url = getattr(cfg, "url", None) if cfg is not None else None
        if url and not getattr(cfg, "hf_hub_id", None):
            out.setdefault(url, name)
    return out


def is_loopback_url(url: str) -> bool:
    return is_local_host(urlsplit(url).hostname or "")
