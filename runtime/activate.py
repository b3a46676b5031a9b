"""`runtime.activate()` / `runtime.deactivate()`: switch every library to the attached bundles.

activate() locates the bundles, reads their manifests, size-checks their files,
builds the merged writable view (runtime.view), points the environment at it and
patches the constants that huggingface_hub & co. read once at import. With
strict=True it also turns on the network guard (runtime.guard). It is cheap to
call again: the same Activation comes back while the attached bundles are unchanged.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from runtime import constants, state
from runtime.catalog import AttachedBundle, Problem, attach_all
from runtime.errors import (
    BundleIntegrityWarning,
    NoBundleWarning,
    UnsupportedVersionWarning,
    log_warning,
)
from runtime.locate import locate_with_stats
from runtime.state import Activation
from runtime.view import VIEW_HF, VIEW_TORCH, build_view

#: Packages whose import-time copies of HF_HUB_OFFLINE / HF_HUB_CACHE activate() updates.
#: huggingface_hub.constants is the one that matters (transformers 5.x, timm and
#: diffusers read it through `huggingface_hub.constants` or `is_offline_mode()`),
#: the others hold `from huggingface_hub.constants import HF_HUB_OFFLINE` copies.
PATCHED_PACKAGES = (
    "huggingface_hub",
    "transformers",
    "diffusers",
    "timm",
    "datasets",
    "sentence_transformers",
    "peft",
    "accelerate",
)
#: Import-time copies of the offline flag and the cache path. transformers 4.x keeps
#: its own in transformers.utils.hub (`_is_offline_mode`, which is_offline_mode()
#: returns, and TRANSFORMERS_CACHE, the default cache_dir of every from_pretrained),
#: so importing it before activate() sent loads to the old cache, online.
_OFFLINE_ATTRS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "_is_offline_mode")
_CACHE_ATTRS = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "PYTORCH_TRANSFORMERS_CACHE",
    "PYTORCH_PRETRAINED_BERT_CACHE",
    "DIFFUSERS_CACHE",
)
#: Deprecated cache variables transformers 4.x still reads at import: when a user set
#: one, it would win over HF_HUB_CACHE, so activate() points it at the view too.
_LEGACY_CACHE_ENV = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE")


_LOCK = threading.Lock()


class _State:
    """What the current activation changed, so deactivate() can undo exactly that."""

    key: tuple | None = None
    saved_env: dict[str, str | None] = {}
    #: (module, attribute) -> (value before activate(), module loaded before the first activate())
    saved_attrs: dict[tuple[str, str], tuple[Any, bool]] = {}
    patched_once = False
    #: every view cache path set this session (to recognise our values in late imports)
    view_caches: set[str] = set()
    temp_views: list[Path] = []
    atexit_registered = False
    #: writable cache folders for an unwritable HOME (runtime.caches), made once per process
    cache_env: dict[str, str] | None = None
    cache_base: Path | None = None


def _bundles_key(found: list[tuple[Path, os.stat_result]]) -> tuple:
    # A bundle attached, removed or rebuilt shows in its bundle.json's identity, mtime and size.
    key = tuple(
        (str(folder), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) for folder, st in found
    )
    return (key, constants.view_dir_setting())


def _default_view_parent() -> str | None:
    """A RAM-backed folder when there is one, else the temp dir (None).

    The view holds only symlinks and empty marker files, so memory is the right
    place: on a loaded VM disk each mkdir/symlink costs 0.1-0.3 ms, on tmpfs ~5 us,
    which decides whether activate() with hundreds of mounted datasets takes 10 or
    100 ms.
    """
    for candidate in (constants.xdg_runtime_dir(), "/dev/shm"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def _temp_root() -> str:
    # tempfile costs ~5 ms to import; activate() is on every notebook's first line.
    return constants.temp_root()


def _private_dir(parent: Path, prefix: str = "offline-bundle-view-") -> Path:
    """A fresh 0700 folder under `parent` (what tempfile.mkdtemp does)."""
    for _ in range(100):
        path = parent / f"{prefix}{os.urandom(6).hex()}"
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a unique view folder under {parent}")


def _uninstall_guard() -> None:
    guard = sys.modules.get("runtime.guard")  # imported only once strict mode was used
    if guard is not None:
        guard.uninstall()


def _new_view_dir() -> Path:
    parent: Path | str | None = constants.view_dir()
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    else:
        parent = _default_view_parent()
    view = _private_dir(Path(parent) if parent is not None else Path(_temp_root()))
    _State.temp_views.append(view)
    if not _State.atexit_registered:
        atexit.register(_remove_views)
        _State.atexit_registered = True
    return view


def _remove_views() -> None:
    while _State.temp_views:
        shutil.rmtree(_State.temp_views.pop(), ignore_errors=True)


def _cache_env() -> dict[str, str]:
    """NUMBA_CACHE_DIR, MPLCONFIGDIR, ... where HOME cannot hold them (runtime.caches)."""
    if _State.cache_env is None:
        from runtime import caches

        environment = constants.environment()
        wanted = caches.unwritable_caches(environment)
        env: dict[str, str] = {}
        if wanted:
            base = _private_dir(Path(_temp_root()), prefix="offline-bundle-caches-")
            _State.cache_base = base
            env = caches.writable_cache_env(environment, str(base))
            atexit.register(_remove_caches)
        _State.cache_env = env
    return dict(_State.cache_env)


def _remove_caches() -> None:
    if _State.cache_base is not None:
        shutil.rmtree(_State.cache_base, ignore_errors=True)
    _State.cache_base, _State.cache_env = None, None


def _set_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        if key not in _State.saved_env:
            _State.saved_env[key] = constants.env_value(key)
        os.environ[key] = value


def _patch_imported(view: Path) -> list[str]:
    """Update import-time copies of the offline flags and cache path in loaded libraries."""
    values: dict[str, Any] = {a: True for a in _OFFLINE_ATTRS}
    values.update({a: str(view / VIEW_HF) for a in _CACHE_ATTRS})
    _State.view_caches.add(str(view / VIEW_HF))
    # Modules loaded before the first activate() keep their own values to go back to;
    # those imported since read our environment, so they go back to the restored one.
    pre_existing = not _State.patched_once
    patched: list[str] = []
    for mod_name, module, attr, old in _loaded_constants():
        value = values[attr]
        if (mod_name, attr) not in _State.saved_attrs:
            _State.saved_attrs[(mod_name, attr)] = (old, pre_existing)
        setattr(module, attr, value)
        patched.append(f"{mod_name}.{attr}")
    # torch.hub.set_dir() beats TORCH_HOME; follow it only if someone set it.
    hub = sys.modules.get("torch.hub")
    if hub is not None and getattr(hub, "_hub_dir", None) is not None:
        _State.saved_attrs.setdefault(("torch.hub", "_hub_dir"), (hub._hub_dir, True))
        hub._hub_dir = str(view / VIEW_TORCH / "hub")
        patched.append("torch.hub._hub_dir")
    _State.patched_once = True
    return patched


def _loaded_constants() -> list[tuple[str, Any, str, Any]]:
    """(module name, module, attribute, value) of every offline flag / cache path copy loaded."""
    found = []
    for mod_name, module in list(sys.modules.items()):
        if module is None or mod_name.split(".", 1)[0] not in PATCHED_PACKAGES:
            continue
        namespace = getattr(module, "__dict__", {})  # never trigger a lazy module's __getattr__
        for attr in (*_OFFLINE_ATTRS, *_CACHE_ATTRS):
            value = namespace.get(attr)
            expected = bool if attr in _OFFLINE_ATTRS else str
            if attr in namespace and isinstance(value, expected):
                found.append((mod_name, module, attr, value))
    return found


def _env_values() -> dict[str, Any]:
    """What huggingface_hub & co. would read from the current environment at import."""
    return constants.hf_library_env()


def _restore_imported() -> None:
    """Put back what _patch_imported changed; call after the environment is restored."""
    from_env = _env_values()
    for mod_name, module, attr, value in _loaded_constants():
        old, pre_existing = _State.saved_attrs.get((mod_name, attr), (None, False))
        if pre_existing:
            setattr(module, attr, old)
        elif value is True or value in _State.view_caches:
            # Imported while activated: it read our environment; give it the restored one.
            setattr(module, attr, from_env[attr])
    hub = sys.modules.get("torch.hub")
    if hub is not None and ("torch.hub", "_hub_dir") in _State.saved_attrs:
        hub._hub_dir = _State.saved_attrs[("torch.hub", "_hub_dir")][0]
    _State.saved_attrs = {}
    _State.patched_once = False
    _State.view_caches = set()


def activate(strict: bool | None = None, verify: str | None = None,
             require_bundle: bool | None = None) -> Activation:
    """Attach every bundle found and switch all libraries to offline loading from them.

    Call it first in a notebook, before or after importing transformers/timm/torch::

        import runtime
        runtime.activate()          # or activate(strict=True) to forbid any network access
        model = ViTModel.from_pretrained("google/vit-base-patch16-224-in21k")  # from the bundle

    Args:
        strict: also refuse every network connection to a non-loopback host with
            `OfflineViolation`, naming the host and the artifact the code wanted.
            Stays on until deactivate(), even if a later call passes strict=False.
            None (the default): strict when $OFFLINE_BUNDLE_STRICT is 1, which
            `bundle run --strict` sets for every process it starts.
        verify: "quick" checks that every listed file is there with its size (one
            lstat each; a same-size replacement passes). "full" also hashes every
            file against its sha256 in bundle.json, before any library can open
            one, and refuses files bundle.json does not list; it reads every byte
            (about the speed of sha256sum; see bench/verify.py). None (the default):
            $OFFLINE_BUNDLE_VERIFY, else "quick".
        require_bundle: raise NoBundleError when no bundle is found. None (the
            default): in strict mode, unless $OFFLINE_BUNDLE_REQUIRE_BUNDLE is 0 (for
            notebooks that mix online and offline cells); otherwise only a warning.

    Returns:
        The Activation: bundles, artifacts, problems found by the quick size check,
        environment set. Calling again returns the same object until the set of
        attached bundles changes.

    Raises:
        NoBundleError: strict mode (or require_bundle=True) and no bundle was found;
            the message names the search roots used. Nothing was activated.
        BundleIntegrityError: verify="full" found a file missing, truncated, changed,
            unlisted or a symlink; nothing was activated.
        ValueError: verify is neither "quick" nor "full".

    Warns:
        BundleIntegrityWarning: a listed file is missing or has the wrong size.
        NoBundleWarning: no bundle was found at all.
    """
    if constants.capture_log():
        return _capture_mode()
    if strict is None:
        strict = constants.env_flag(constants.ENV_STRICT)
    if verify is None:
        verify = constants.verify_mode()
    if verify not in constants.VERIFY_MODES:
        raise ValueError(
            f"runtime.activate(verify={verify!r}): use \"quick\" (sizes) or \"full\" (sha256 of "
            f"every file); ${constants.ENV_VERIFY} sets the default"
        )
    if require_bundle is None:
        require_bundle = strict and constants.bundle_required_in_strict_mode()
    with _LOCK:
        return _activate(strict, verify, require_bundle)


def _capture_mode() -> Activation:
    """Under ``bundle capture``: attach nothing and leave the network on, so that the run
    fetches (and the capture records) everything it needs, bundles or not."""
    act = state.current()
    if act is None:
        note = ("bundle capture is recording this run: runtime.activate() attaches no bundle "
                "and leaves the network on")
        log_warning(f"runtime.activate(): {note}")
        act = Activation(bundles=[], view=None, env={}, strict=False, notes=[note])
        state.set_current(act)
    return act


def _verify_full(bundles: list[AttachedBundle], problems: list[Problem]) -> None:
    """Hash every file of `bundles`; raise BundleIntegrityError unless all is as listed."""
    from runtime.errors import BundleIntegrityError
    from runtime.integrity import verify_bundles

    report = verify_bundles(bundles, quick=False, progress=True)
    found = [p for p in problems if p not in report.problems] + report.problems
    if found:
        shown = "\n  ".join(str(p) for p in found[:10])
        more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
        raise BundleIntegrityError(
            f"runtime.activate(verify=\"full\"): {len(found)} file(s) are not what bundle.json "
            f"says; nothing was activated:\n  {shown}{more}\nRe-attach or rebuild the bundle "
            "(bundle build), then check it with `bundle verify BUNDLE_DIR`.",
            problems=tuple(found),
        )


def _activate(strict: bool, verify: str = "quick", require_bundle: bool = False) -> Activation:
    found = locate_with_stats()
    folders = [folder for folder, _ in found]
    key = _bundles_key(found)
    act = state.current()
    was_strict = act is not None and act.strict
    if act is None or key != _State.key or act.view is None or not act.view.is_dir():
        if act is not None:
            # The attached set changed: a new view; the saved originals stay as they are.
            _remove_views()
        bundles, problems = attach_all(folders)
        if require_bundle and not bundles:
            _raise_no_bundle(problems)
        if verify == "full":
            _verify_full(bundles, problems)  # before a view exists: nothing can load yet
        view = _new_view_dir()
        notes = build_view(bundles, view)
        env = {name: "1" for name in constants.OFFLINE_ENV}
        env["HF_HUB_CACHE"] = str(view / VIEW_HF)
        env["TORCH_HOME"] = str(view / VIEW_TORCH)
        for name in _LEGACY_CACHE_ENV:
            if constants.is_present(name) or name in _State.saved_env:
                env[name] = str(view / VIEW_HF)
        env.update(_cache_env())
        act = Activation(bundles=bundles, view=view, env=env, strict=strict, problems=problems,
                         notes=notes, verified=verify)
        state.set_current(act)
        _State.key = key
        _warn_about(act)
        _warn_about_versions()
    elif verify == "full" and act.verified != "full":
        _verify_full(act.bundles, act.problems)
        act.verified = "full"
    elif require_bundle and not act.bundles:
        _raise_no_bundle(act.problems)
    # Every loader's miss becomes MissingFromBundleError (runtime.loaders).
    from runtime import loaders

    loaders.install(lambda: act.bundles if (act := state.current()) else [])
    # Re-applied every call: a library imported since the last call still gets patched.
    _set_env(act.env)
    act.patched = _patch_imported(act.view)
    # Strict mode is sticky: a stack calling activate() must not undo the user's
    # activate(strict=True); only deactivate() lifts it.
    strict = strict or was_strict
    act.strict = strict
    if strict:
        from runtime import guard

        guard.install(hint=_strict_hint)
    else:
        _uninstall_guard()
    return act


def _raise_no_bundle(problems: list[Problem]) -> None:
    from runtime.errors import NoBundleError
    from runtime.missing import no_bundle_text

    unusable = "".join(f"\n  skipped: {p}" for p in problems[:5])
    raise NoBundleError(
        f"runtime.activate(strict=True): {no_bundle_text()}.{unusable}\nTo go on without a "
        f"bundle (a notebook that mixes online and offline cells), call "
        f"runtime.activate(strict=True, require_bundle=False) or set "
        f"{constants.ENV_REQUIRE_BUNDLE}=0."
    )


def _warn_about_versions() -> None:
    from runtime.versions import imported_too_old

    for text in imported_too_old():
        message = f"runtime.activate(): {text}"
        log_warning(message)
        warnings.warn(message, UnsupportedVersionWarning, stacklevel=4)


def _warn_about(act: Activation) -> None:
    if not act.bundles and not act.problems:
        from runtime.missing import search_roots_brief

        message = (
            f"runtime.activate(): no bundle found (looked in {search_roots_brief()}); "
            "libraries are offline with an empty cache. Attach the bundle or set BUNDLE_PATH."
        )
        log_warning(message)
        warnings.warn(message, NoBundleWarning, stacklevel=4)
    if act.problems:
        shown = "\n  ".join(str(p) for p in act.problems[:5])
        more = f"\n  ... and {len(act.problems) - 5} more" if len(act.problems) > 5 else ""
        message = (
            f"runtime.activate(): {len(act.problems)} problem(s) in the attached bundles "
            f"(quick size check):\n  {shown}{more}\nRun runtime.verify() for details."
        )
        log_warning(message)
        warnings.warn(message, BundleIntegrityWarning, stacklevel=4)


def _strict_hint(host: str, port: int | None, clues: dict[str, str]) -> str:
    from runtime.resolve import forgotten_artifact_hint

    bundles = act.bundles if (act := state.current()) else []
    return forgotten_artifact_hint(host, port, clues, bundles)


def deactivate() -> None:
    """Undo activate(): restore the environment and patched constants, drop strict mode and the view."""
    _uninstall_guard()
    loaders = sys.modules.get("runtime.loaders")
    if loaders is not None:
        loaders.uninstall()
    for key, old in _State.saved_env.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    _State.saved_env = {}
    _restore_imported()
    _remove_views()
    _remove_caches()
    state.set_current(None)
    _State.key = None
