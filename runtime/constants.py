"""Every environment variable and fixed location the project reads, in one place.

Read with the functions below at call time (not at import), so that tests and
notebooks can change the environment before calling into the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

# --- Environment variables -------------------------------------------------

#: os.pathsep-separated folders, each a bundle or a folder of bundles; searched first.
ENV_BUNDLE_PATH = "BUNDLE_PATH"
#: Overrides the built-in search roots of `runtime.locate()` (os.pathsep-separated
#: glob patterns such as "/kaggle/input/*"); used by tests and unusual mounts.
ENV_SEARCH_ROOTS = "OFFLINE_BUNDLE_SEARCH_ROOTS"
#: Where `bundle build` keeps its content-addressed store.
ENV_STORE = "OFFLINE_BUNDLE_STORE"
#: Where `runtime.activate()` builds its writable merged view of the bundles.
ENV_VIEW_DIR = "OFFLINE_BUNDLE_VIEW_DIR"
#: Extra hosts (comma-separated names or IP addresses) that strict mode lets
#: connections reach besides loopback, e.g. a local metrics server.
ENV_ALLOW_HOSTS = "OFFLINE_BUNDLE_ALLOW_HOSTS"

#: "1" makes `runtime.activate()` strict when its caller passes no `strict`
#: (`bundle run --strict` sets it for the processes it starts; torchrun ranks).
ENV_STRICT = "OFFLINE_BUNDLE_STRICT"
#: set by `bundle run --strict -- COMMAND`: every Python child activates strict mode
#: at start-up (runtime/_site/sitecustomize.py), whether or not it calls activate()
ENV_STRICT_CHILD = "OFFLINE_BUNDLE_STRICT_CHILD"
#: set by `bundle capture`: the file runtime.netlog records into; activate() attaches
#: nothing and leaves the network on while it is set
ENV_CAPTURE_LOG = "OFFLINE_BUNDLE_CAPTURE_LOG"
ENV_CAPTURE_MIRRORS = "OFFLINE_BUNDLE_CAPTURE_MIRRORS"

#: "0" lets `runtime.activate(strict=True)` go on when no bundle is found (a warning
#: instead of NoBundleError), for notebooks that mix online and offline cells.
ENV_REQUIRE_BUNDLE = "OFFLINE_BUNDLE_REQUIRE_BUNDLE"
#: "full" makes `runtime.activate()` hash every bundle file before any library can
#: open one (default "quick": sizes only); for notebooks that cannot pass verify=.
ENV_VERIFY = "OFFLINE_BUNDLE_VERIFY"
VERIFY_MODES = ("quick", "full")

# Variables `runtime.activate()` sets so that unmodified library code stays offline.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

# --- Library versions --------------------------------------------------------

#: The oldest versions of the libraries the runtime works with: activate(), unmodified
#: from_pretrained / hf_hub_download / snapshot_download / timm / torchvision loading
#: from a bundle, strict mode, `bundle doctor`. `.ci/compat.sh` proves them on every CI
#: run (the table in docs/runtime.md); pyproject's `libraries` extra declares the same
#: (tests/test_compat_declared.py keeps the two equal). Python: 3.10 to 3.12.
MIN_LIBRARY_VERSIONS = {
    "huggingface_hub": "0.24.7",
    "transformers": "4.44.2",
    "timm": "0.9.16",
    "torch": "2.4.1",
    "torchvision": "0.19.1",
}

# --- Bundle format ---------------------------------------------------------

MANIFEST_NAME = "bundle.json"
KAGGLE_METADATA_NAME = "dataset-metadata.json"
README_NAME = "README.md"
#: Files at the top of a bundle that are derived from bundle.json and therefore
#: not listed in it (nor covered by its digest).
GENERATED_FILES = frozenset({MANIFEST_NAME, KAGGLE_METADATA_NAME, README_NAME})
MANIFEST_FORMAT = 1

HF_DIR = "hf"
TORCH_CHECKPOINTS_DIR = "torch/hub/checkpoints"
FILES_DIR = "files"
WHEELS_DIR = "wheels"
NOTEBOOKS_DIR = "notebooks"

# --- Default search roots, in the order of DESIGN.md -----------------------

#: Kaggle Models' framework folders (/kaggle/input/MODEL/FRAMEWORK/VARIATION/VERSION/):
#: kagglesdk's ModelFramework names, lower case, without underscores
KAGGLE_MODEL_FRAMEWORKS = (
    "pytorch", "transformers", "other", "keras", "tensorflow2", "tensorflow1", "jax", "flax",
    "tflite", "tfjs", "onnx", "gguf", "ggml", "scikitlearn", "gemmacpp", "maxtext", "pax",
    "triton", "tensorrtllm", "vllm", "coral", "mxnet", "api",
)
#: A search root whose last part is this glob names version folders: of the versions
#: found under one parent, only the highest that holds a bundle is used (Kaggle Models).
VERSION_GLOB = "[0-9]*"

DEFAULT_SEARCH_ROOTS = (
    "/kaggle/input/*",  # older Kaggle mount: /kaggle/input/SLUG/
    "/kaggle/input/datasets/*/*",  # newer Kaggle mount: /kaggle/input/datasets/OWNER/SLUG/
    # Kaggle Models, newer mount: /kaggle/input/models/OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/
    f"/kaggle/input/models/*/*/*/*/{VERSION_GLOB}",
    # Kaggle Models: /kaggle/input/MODEL/FRAMEWORK/VARIATION/VERSION/ (a literal framework
    # keeps the glob from listing every folder of a competition's data)
    *(f"/kaggle/input/*/{fw}/*/{VERSION_GLOB}" for fw in KAGGLE_MODEL_FRAMEWORKS),
    "/opt/bundles/*",  # Docker image
    "/content/drive/MyDrive/bundles/*",  # Colab Drive
    "./bundles-dist/*",  # `bundle build` default output
)


def bundle_path_entries() -> list[Path]:
    """Folders named by $BUNDLE_PATH, in order, empty entries dropped."""
    raw = os.environ.get(ENV_BUNDLE_PATH, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def search_roots() -> tuple[str, ...]:
    """Glob patterns searched after $BUNDLE_PATH."""
    raw = os.environ.get(ENV_SEARCH_ROOTS)
    if raw is None:
        return DEFAULT_SEARCH_ROOTS
    return tuple(p for p in raw.split(os.pathsep) if p.strip())


def store_dir() -> Path:
    """The content-addressed store: $OFFLINE_BUNDLE_STORE or the user cache dir."""
    raw = os.environ.get(ENV_STORE)
    if raw:
        return Path(raw).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "offline-bundle" / "store"


def allowed_hosts() -> frozenset[str]:
    """Hosts strict mode allows besides loopback ($OFFLINE_BUNDLE_ALLOW_HOSTS), lower-cased."""
    raw = os.environ.get(ENV_ALLOW_HOSTS, "")
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


def env_flag(name: str) -> bool:
    """True when the variable holds 1, true, yes or on (any case)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def view_dir() -> Path | None:
    """Where activate() builds its merged view; None means a fresh temp dir."""
    raw = os.environ.get(ENV_VIEW_DIR)
    return Path(raw).expanduser() if raw else None
