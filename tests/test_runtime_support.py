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


def _interpreter_paths() -> set[str]:
    """Every folder this interpreter reads its code from: prefixes, sys.path, the project."""
    import os
    import sys

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
             os.path.realpath(sys.executable), str(Path(__file__).resolve().parents[1])}
    paths.update(p for p in sys.path if p)
    return {os.path.realpath(p) for p in paths if os.path.exists(p)}


def _expose_commands(paths: set[str], skeletons: Path) -> list[str]:
    """Shell commands (for a private mount namespace) that let any user reach `paths`.

    A folder on the way that others may not enter (e.g. /root, 0700, where pyenv and
    a clone may live) is covered by a skeleton: a world-readable folder that holds
    bind mounts of just the entries on the way to `paths`, mounted over it. Nothing
    else of that folder becomes visible, and nothing on disk changes mode.
    """
    import os
    import shlex
    import stat

    blocked: set[str] = set()
    for p in paths:
        parts = Path(p).parts
        for i in range(1, len(parts) + 1):
            d = str(Path(*parts[:i]))
            st = os.stat(d)
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
                blocked.add(d)
    commands = []
    # Deepest first: a skeleton mounted below is carried up by the --rbind above it.
    for n, folder in enumerate(sorted(blocked, key=lambda d: -len(Path(d).parts))):
        skeleton = skeletons / str(n)
        skeleton.mkdir(parents=True)
        skeleton.chmod(0o755)
        inside = {q for q in paths | blocked if q != folder and q.startswith(folder.rstrip("/") + "/")}
        children = {Path(q).relative_to(folder).parts[0] for q in inside}
        if folder in paths:  # the folder itself is wanted: all of it
            children |= set(os.listdir(folder))
        for child in sorted(children):
            real, spot = os.path.join(folder, child), skeleton / child
            if os.path.isdir(real):
                spot.mkdir()
                flag = "--rbind"
            else:
                spot.touch()
                flag = "--bind"
            commands.append(f"mount {flag} {shlex.quote(real)} {shlex.quote(str(spot))}")
        commands.append(f"mount --rbind {shlex.quote(str(skeleton))} {shlex.quote(folder)}")
    return commands


def run_as_nobody(script: str, args: list[str], *, binds: dict[str, Path],
                  env: dict[str, str], timeout: float = 240, argv0: list[str] | None = None):
    """Run `python -c script args` as user nobody with empty, private HOME/HF_HOME/TORCH_HOME.

    The child runs this very interpreter (`sys.executable`: the same venv, conda env
    or system Python as the test, with the same packages), at its real paths: inside
    a private mount namespace, the folders it reads its code from are made reachable
    for nobody (see _expose_commands), and the bound folders (e.g. a bundle under
    pytest's 0700 tmp dir) appear under a world-readable temp folder. The mounts
    vanish with the process; nothing on disk changes mode.

    Args:
        argv0: run this command instead of `python -c script` (e.g. the venv's
            `bundle` script); `args` follow it.

    Returns:
        The CompletedProcess (text stdout/stderr). Each bind `name` appears at
        `{base}/name`; write "{base}" in `env` values or `args` to point at it.
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
        for name in binds:
            (base / name).mkdir()
        for name in ("home", "hf_home", "torch_home", "tmp"):
            (base / name).mkdir()
            shutil.chown(base / name, *NOBODY)
        expose = _expose_commands(_interpreter_paths(), base / ".skeletons")
        bin_dir = os.path.dirname(sys.executable)
        child_env = {
            "PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(base / "home"),
            "HF_HOME": str(base / "hf_home"),
            "TORCH_HOME": str(base / "torch_home"),
            "TMPDIR": str(base / "tmp"),
            "PYTHONDONTWRITEBYTECODE": "1",
            # "{base}" in a value stands for the folder the binds appear under.
            **{k: v.replace("{base}", str(base)) for k, v in env.items()},
        }
        commands = expose + [
            f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(base / name))}"
            for name, src in binds.items()
        ]
        command = argv0 or [sys.executable, "-c", script]
        args = [a.replace("{base}", str(base)) for a in args]
        inner = (
            " && ".join(commands + [
                f"exec setpriv --reuid={NOBODY[0]} --regid={NOBODY[1]} --clear-groups "
                + " ".join(shlex.quote(a) for a in [*command, *args])
            ])
        )
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            env=child_env, capture_output=True, text=True, timeout=timeout, cwd=base / "tmp",
        )
        return proc
    finally:
        shutil.rmtree(base, ignore_errors=True)
