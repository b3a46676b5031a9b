"""``bundle capture``: run a command once online, record what it fetched, write the spec.

1. Every library cache of the command points at a fresh private folder (Hub cache,
   TORCH_HOME, XDG caches), so nothing cached on this machine hides a need; the
   Hugging Face token the user has (HF_TOKEN, or huggingface_hub's token file) is
   passed as ``HF_TOKEN`` in the environment only.
2. ``runtime/_site`` goes first on PYTHONPATH: every Python process of the command
   records its HTTP traffic into a log (runtime.netlog).
3. The log is reconciled with the caches (builder.capture.reconcile), checkpoints are
   named after their registry entries, and the spec is written, validated by the
   spec loader first.
4. Every captured file goes into the store, verified (its sha256; a Hub file kept in
   git also against its git id), so a build of the spec downloads none of them again.

The capture folder is made inside the store's ``tmp/`` (same file system: step 4 is
renames) and removed at the end unless ``--keep``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from builder.capture.reconcile import (
    Capture,
    git_blob_sha1,
    match_registries,
    read_log,
    reconcile,
)
from builder.errors import CaptureError
from runtime import constants

#: variables that would send a library to another cache, or keep it offline
CLEARED_ENV = ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE",
               "PYTORCH_TRANSFORMERS_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
               "HF_DATASETS_OFFLINE", "OFFLINE_BUNDLE_STRICT", "OFFLINE_BUNDLE_STRICT_CHILD")


@dataclass
class CaptureRun:
    command: list[str]
    returncode: int
    capture: Capture
    seconds: float
    stored: int = 0  # files imported into the store
    notes: list[str] = field(default_factory=list)


def cache_env(work: Path) -> dict[str, str]:
    """Point every library cache at ``work``."""
    hf = work / "hf"
    return {"HF_HOME": str(hf), "HF_HUB_CACHE": str(hf / "hub"), "HF_DATASETS_CACHE": str(hf / "datasets"),
            "HF_MODULES_CACHE": str(hf / "modules"), "TORCH_HOME": str(work / "torch"),
            "XDG_CACHE_HOME": str(work / "xdg")}


def user_hf_token() -> str | None:
    """The token huggingface_hub would use for this user (read before HF_HOME moves)."""
    if constants.hf_token():
        return constants.hf_token()
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    try:
        return get_token()
    except Exception:
        return None


def child_env(work: Path, log: Path, mirrors: list[tuple[str, str]]) -> dict[str, str]:
    """The captured command's environment: private caches, the recorder, the token as
    ``HF_TOKEN`` only (never on disk)."""
    from runtime.child import with_startup_hook

    token = user_hf_token()
    env = {k: v for k, v in constants.environment().items() if k not in CLEARED_ENV}
    env.update(cache_env(work))
    env[constants.ENV_CAPTURE_LOG] = str(log)
    env[constants.ENV_CAPTURE_MIRRORS] = json.dumps([list(m) for m in mirrors])
    if token:
        env["HF_TOKEN"] = token
    return with_startup_hook(env)


def run_capture(command: list[str], *, store_dir: Path, mirrors: list[tuple[str, str]],
                keep: Path | None = None, echo=print) -> CaptureRun:
    """Run ``command`` under the recorder; reconcile; import what it fetched into the store."""
    import shutil

    from builder.layout import remove_tree
    from builder.store import Store

    if shutil.which(command[0]) is None:
        raise CaptureError(f"command not found: {command[0]!r} (bundle capture -- COMMAND ...)")
    store = Store(store_dir)
    work = keep if keep is not None else store.root / "tmp" / f"capture-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "network.jsonl"
    env = child_env(work, log, mirrors)
    started = time.perf_counter()
    echo(f"bundle capture: running {' '.join(command)} with private caches in {work}")
    try:
        try:
            returncode = subprocess.run(command, env=env).returncode
        except KeyboardInterrupt:
            returncode = 130
        seconds = time.perf_counter() - started
        from huggingface_hub import constants as hub_constants

        endpoint = env.get("HF_ENDPOINT") or hub_constants.ENDPOINT
        capture = reconcile(read_log(log), hub_cache=Path(env["HF_HUB_CACHE"]), hf_home=Path(env["HF_HOME"]),
                            torch_home=Path(env["TORCH_HOME"]), endpoint=endpoint)
        match_registries(capture)
        run = CaptureRun(command, returncode, capture, seconds)
        run.stored = import_into_store(capture, store)
    finally:
        if keep is None:
            remove_tree(work)
    return run


def import_into_store(capture: Capture, store) -> int:  # type: ignore[no-untyped-def]
    """Every captured file into the store, verified; a Hub file kept in git is also
    remembered under its git id (what the build knows it by before downloading)."""
    count = 0
    for h in capture.hub:
        for f in h.files:
            if f.etag and len(f.etag) == 64 and f.etag != f.sha256:
                raise CaptureError(f"{h.repo_id}@{h.commit[:12]}: {f.name} in the capture's Hub cache "
                                   f"does not match its etag (sha256 {f.sha256}, etag {f.etag}); "
                                   "nothing was imported for it: capture again")
            _add(store, f.local, f.sha256)
            count += 1
            if f.etag and len(f.etag) == 40 and git_blob_sha1(store.blob_path(f.sha256)) == f.etag:
                store.remember_alias("git-sha1", f.etag, f.sha256)
    for c in capture.checkpoints:
        _add(store, c.file.local, c.file.sha256)
        count += 1
    return count


def _add(store, path: Path, sha256: str) -> None:  # type: ignore[no-untyped-def]
    if store.has(sha256, path.stat().st_size):
        return
    # move=False: a Hub cache blob may stand for several snapshot entries; the folder
    # goes away as a whole afterwards.
    store.add_file(path, expected_sha256=sha256, move=False)


def masked(argv: list[str]) -> list[str]:
    """``argv`` with every credential this machine holds replaced by ``***``."""
    from builder.credentials import machine_secrets
    from runtime.redact import REDACTED

    secrets = [value for _kind, value in machine_secrets()]
    out = []
    for word in argv:
        for value in secrets:
            word = word.replace(value, REDACTED)
        out.append(word)
    return out


def write_outputs(run: CaptureRun, *, name: str, spec_out: Path, force: bool) -> tuple[Path, Path]:
    """The spec and its capture record (``NAME.capture.json``), checked for secrets and
    validated before either is written; atomically."""
    from builder.capture.spec_writer import spec_text
    from builder.credentials import refuse_secrets
    from builder.spec import parse_spec

    record_path = spec_out.with_name(spec_out.stem + ".capture.json")
    if spec_out.exists() and not force:
        raise CaptureError(f"{spec_out} exists; pass --force to replace it, or --spec-out elsewhere")
    command = masked(run.command)
    text = spec_text(run.capture, name=name, command=command)
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    parse_spec(tomllib.loads(text), spec_out)  # raises SpecError naming the field
    record = {
        "command": command, "exit_code": run.returncode, "seconds": round(run.seconds, 3),
        "captured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0],
        **run.capture.to_json(),
    }
    record_text = json.dumps(record, indent=2) + "\n"
    if run.returncode != 0:
        text = (f"# WARNING: the command exited with {run.returncode}: this spec holds what it fetched "
                "before that and may be incomplete.\n") + text
    refuse_secrets([(str(spec_out), text.encode()), (str(record_path), record_text.encode())],
                   action="nothing was written")
    spec_out.parent.mkdir(parents=True, exist_ok=True)
    for path, data in ((spec_out, text), (record_path, record_text)):
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(data)
        os.replace(tmp, path)
    return spec_out, record_path
