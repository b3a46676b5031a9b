"""Helpers for the runtime tests: lay out bundle folders by hand with runtime.manifest.

These are real bundles in the documented layout (DESIGN.md), written without the
builder so that runtime tests do not depend on the network stand-ins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from runtime.manifest import ArtifactEntry, FileEntry, Manifest, write_manifest


@dataclass
class Art:
    """An artifact to lay out: files relative to the bundle folder."""

    id: str
    source: str
    ref: str
    path: str
    files: dict[str, bytes]
    revision: str | None = None
    aliases: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


def hf_art(art_id: str, repo: str, files: dict[str, bytes], *, commit: str | None = None,
           source: str = "hf", aliases: list[str] | None = None,
           fallbacks: list[str] | None = None, ref: str | None = None) -> Art:
    """An hf-layout artifact: hf/models--ORG--NAME/{refs/main,snapshots/COMMIT/...}."""
    commit = commit or hashlib.sha1(repo.encode()).hexdigest()
    repo_dir = "hf/models--" + repo.replace("/", "--")
    snap = f"{repo_dir}/snapshots/{commit}"
    laid = {f"{snap}/{name}": data for name, data in files.items()}
    laid[f"{repo_dir}/refs/main"] = commit.encode()
    return Art(art_id, source, ref or repo, snap, laid, revision=commit,
               aliases=aliases or [], fallbacks=fallbacks or [])


def torch_art(art_id: str, weights: str, filename: str, data: bytes) -> Art:
    path = f"torch/hub/checkpoints/{filename}"
    return Art(art_id, "torchvision", weights, path, {path: data}, aliases=[filename])


def make_bundle(folder: Path, name: str, arts: list[Art], *, version: str = "1.0.0",
                stacks: list[str] | None = None) -> Path:
    """Write the files and bundle.json of a bundle at `folder`; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for art in arts:
        files = []
        for rel, data in art.files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
        entries.append(ArtifactEntry(id=art.id, source=art.source, ref=art.ref,
                                     revision=art.revision, path=art.path, files=files,
                                     aliases=art.aliases, fallbacks=art.fallbacks))
    write_manifest(folder, Manifest(name=name, version=version, artifacts=entries,
                                    stacks=stacks or [], created="2026-11-21T00:00:00Z"))
    return folder


# --- running a fresh interpreter as a non-root user --------------------------------

NOBODY = ("nobody", "nogroup")


def nobody_skip_reason() -> str | None:
    """Why run_as_nobody cannot work here, or None."""
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root to switch to the unprivileged user 'nobody' (setpriv)"
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def run_as_nobody(script: str, args: list[str], *, binds: dict[str, Path],
                  env: dict[str, str], timeout: float = 240):
    """Run `python -c script args` as user nobody with empty, private HOME/HF_HOME/TORCH_HOME.

    The interpreter and the bound folders (e.g. a bundle under pytest's 0700 tmp dir)
    are bind-mounted, inside a private mount namespace, under a world-readable temp
    folder: nobody can reach them there, and the binds vanish with the process. The
    interpreter's own prefix may sit under /root (pyenv); LD_LIBRARY_PATH makes it load
    its own libpython instead of the system's.

    Returns:
        The CompletedProcess (text stdout/stderr). Each bind `name` appears at
        `{base}/name`; write "{base}" in `env` values to point at it.
    """
    import os
    import shlex
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="runtime-nobody-"))
    try:
        base.chmod(0o755)
        prefix = Path(os.path.realpath(sys.base_prefix))
        mounts = {"py": prefix, **binds}
        for name in mounts:
            (base / name).mkdir()
        for name in ("home", "hf_home", "torch_home", "tmp"):
            (base / name).mkdir()
            shutil.chown(base / name, *NOBODY)
        python = base / "py/bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        child_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LD_LIBRARY_PATH": str(base / "py/lib"),
            "HOME": str(base / "home"),
            "HF_HOME": str(base / "hf_home"),
            "TORCH_HOME": str(base / "torch_home"),
            "TMPDIR": str(base / "tmp"),
            "PYTHONDONTWRITEBYTECODE": "1",
            # "{base}" in a value stands for the folder the binds appear under.
            **{k: v.replace("{base}", str(base)) for k, v in env.items()},
        }
        binds_sh = " && ".join(
            f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(base / name))}"
            for name, src in mounts.items()
        )
        inner = (
            f"{binds_sh} && exec setpriv --reuid={NOBODY[0]} --regid={NOBODY[1]} --clear-groups "
            f"{shlex.quote(str(python))} -c {shlex.quote(script)} "
            + " ".join(shlex.quote(a) for a in args)
        )
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            env=child_env, capture_output=True, text=True, timeout=timeout, cwd=base / "tmp",
        )
        return proc
    finally:
        shutil.rmtree(base, ignore_errors=True)
