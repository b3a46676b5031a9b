"""Every environment variable and fixed location the runtime reads, in one place.

Read with the functions below at call time (not at import), so that tests and
notebooks can change the environment before calling into the runtime. No other
runtime module reads ``os.environ``: it asks a function here (the builder's own
variables are in ``builder/constants.py``; docs/environment.md lists them all).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
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

#: The Hub revision a spec means when it names none (and what unpinned loading code asks for).
DEFAULT_REVISION = "main"

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
    return Path(xdg_cache_home()).expanduser() / "offline-bundle" / "store"


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


# --- Variables of the platform and of other libraries ------------------------------

def env_value(name: str) -> str | None:
    """The value of variable ``name``, None when unset or empty (a spec's ``env:VAR``
    header, one of the names below)."""
    return os.environ.get(name) or None


def environment() -> dict[str, str]:
    """A copy of every variable: a child process's starting environment, the secrets scan."""
    return dict(os.environ)


def is_present(name: str) -> bool:
    """Whether variable ``name`` is set at all (empty included)."""
    return name in os.environ


def home() -> str:
    return os.path.expanduser("~")


def xdg_cache_home(environ: Mapping[str, str] | None = None) -> str:
    """$XDG_CACHE_HOME, else ~/.cache (in ``environ`` when given, e.g. a child's)."""
    env = os.environ if environ is None else environ
    return env.get("XDG_CACHE_HOME") or os.path.join(home(), ".cache")


def xdg_config_home(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("XDG_CONFIG_HOME") or os.path.join(home(), ".config")


def xdg_runtime_dir() -> str | None:
    return env_value("XDG_RUNTIME_DIR")


def temp_root() -> str:
    """$TMPDIR, $TEMP or $TMP, else /tmp (what tempfile picks, without importing it)."""
    for name in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(name):
            return os.environ[name]
    return "/tmp"


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether variable ``name`` holds a non-empty value (in ``environ`` when given)."""
    return bool((os.environ if environ is None else environ).get(name))


def hf_home() -> str:
    """$HF_HOME, else $XDG_CACHE_HOME/huggingface, as huggingface_hub resolves it."""
    default = os.path.join(xdg_cache_home(), "huggingface")
    return os.path.expandvars(os.path.expanduser(os.environ.get("HF_HOME", default)))


def hf_library_env() -> dict[str, object]:
    """What huggingface_hub, transformers and diffusers read from the environment at import:
    their offline switches and cache folders (the chain of legacy variables included)."""

    def true(name: str) -> bool:
        return os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"}

    hub_offline = true("HF_HUB_OFFLINE") or true("TRANSFORMERS_OFFLINE")
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home(), "hub"))
    hub_cache = os.path.expandvars(os.path.expanduser(os.environ.get("HF_HUB_CACHE", legacy)))
    bert = os.environ.get("PYTORCH_PRETRAINED_BERT_CACHE", hub_cache)
    pytorch = os.environ.get("PYTORCH_TRANSFORMERS_CACHE", bert)
    return {
        "HF_HUB_OFFLINE": hub_offline,
        "TRANSFORMERS_OFFLINE": hub_offline,
        "HF_DATASETS_OFFLINE": true("HF_DATASETS_OFFLINE") or hub_offline,
        "_is_offline_mode": hub_offline,
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": legacy,
        "PYTORCH_PRETRAINED_BERT_CACHE": bert,
        "PYTORCH_TRANSFORMERS_CACHE": pytorch,
        "TRANSFORMERS_CACHE": os.environ.get("TRANSFORMERS_CACHE", pytorch),
        "DIFFUSERS_CACHE": hub_cache,
    }


def hf_token() -> str | None:
    """$HF_TOKEN (the token a user exported)."""
    return env_value("HF_TOKEN")


def hf_token_files() -> list[str]:
    """Where huggingface_hub keeps a token: $HF_TOKEN_PATH, $HF_HOME/token, ~/.huggingface/token."""
    files = [env_value("HF_TOKEN_PATH"), os.path.join(hf_home(), "token"),
             os.path.join(home(), ".huggingface", "token")]
    return [f for f in dict.fromkeys(files) if f]


def kaggle_config_dirs() -> list[str]:
    """Where the kaggle client looks for kaggle.json, in its order."""
    dirs = [env_value("KAGGLE_CONFIG_DIR"), os.path.join(home(), ".kaggle"),
            os.path.join(xdg_config_home(), "kaggle")]
    return [d for d in dict.fromkeys(dirs) if d]


# --- torchrun -------------------------------------------------------------------------

def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# --- Settings of our own, read by name ---------------------------------------------------

def view_dir_setting() -> str | None:
    """$OFFLINE_BUNDLE_VIEW_DIR as set (activate() keys its cache on it)."""
    return os.environ.get(ENV_VIEW_DIR)


def bundle_path() -> str:
    """$BUNDLE_PATH as set ('' when unset)."""
    return os.environ.get(ENV_BUNDLE_PATH, "")


def verify_mode() -> str:
    """$OFFLINE_BUNDLE_VERIFY, lower-cased; "quick" when unset."""
    return os.environ.get(ENV_VERIFY, "").strip().lower() or "quick"


def bundle_required_in_strict_mode() -> bool:
    """False only when $OFFLINE_BUNDLE_REQUIRE_BUNDLE is 0."""
    return os.environ.get(ENV_REQUIRE_BUNDLE, "").strip() != "0"


def capture_log() -> str | None:
    """$OFFLINE_BUNDLE_CAPTURE_LOG: the file `bundle capture` records into."""
    return env_value(ENV_CAPTURE_LOG)


def capture_mirrors() -> list[list[str]]:
    import json

    return json.loads(os.environ.get(ENV_CAPTURE_MIRRORS) or "[]")


def strict_child() -> bool:
    """$OFFLINE_BUNDLE_STRICT_CHILD is 1: every Python child starts strict."""
    return os.environ.get(ENV_STRICT_CHILD) == "1"


@contextlib.contextmanager
def temporarily(name: str, value: str) -> Iterator[None]:
    """Set variable ``name`` for the block, then put back what was there."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
