"""Every loader fails the same way under activate(): MissingFromBundleError, never
a library's "check your internet connection".

Under `runtime.activate()` the libraries are offline, so a file no bundle holds
reaches the user as whatever each library makes of a cache miss: transformers'
"We couldn't connect to 'https://huggingface.co'", huggingface_hub's "Please check
your connection", diffusers' "does not appear to have a file named". This module
wraps the functions where they look files up and turns those misses into one
error of ours (runtime.missing composes the message):

* ``huggingface_hub`` ``hf_hub_download`` / ``snapshot_download``: a miss becomes a
  MissingFromBundleError that is also huggingface_hub's LocalEntryNotFoundError,
  so callers probing optional files (processor configs, safetensors before .bin)
  behave exactly as with a plain cache; a file bundle.json lists but the bundle
  lost or truncated (activate() keeps it out of the view) is a plain
  MissingFromBundleError: a hard error even for an optional probe;
* the entry points of transformers, diffusers and timm that turn such a miss into
  their own OSError: the error of ours inside it comes out instead; where they
  raise without one (no weights file of any name), the misses recorded during the
  call are named;
* ``torch.hub.load_state_dict_from_url`` (torchvision ``weights=``, timm URL
  weights): a checkpoint missing from the view is named before torch.hub would
  try to download it.

The wrappers are installed when the modules are imported (a post-import hook on
``sys.meta_path``) or at activate() for modules already imported, including the
references other modules of those libraries hold. Outside activate() they call
straight through. Nothing here imports a library itself.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from runtime.errors import MissingFromBundleError

#: module -> (attribute, kind) to wrap; "Class.method" for (class)methods.
TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "huggingface_hub.file_download": (("hf_hub_download", "hub_file"),),
    "huggingface_hub._snapshot_download": (("snapshot_download", "hub_snapshot"),),
    "transformers.utils.hub": (("cached_file", "entry"), ("cached_files", "entry")),
    "transformers.configuration_utils": (("PretrainedConfig.get_config_dict", "entry"),),
    "transformers.modeling_utils": (("PreTrainedModel.from_pretrained", "entry"),),
    "transformers.tokenization_utils_base": (("PreTrainedTokenizerBase.from_pretrained", "entry"),),
    "transformers.image_processing_base": (("ImageProcessingMixin.get_image_processor_dict", "entry"),),
    "transformers.feature_extraction_utils": (
        ("FeatureExtractionMixin.get_feature_extractor_dict", "entry"),),
    "transformers.processing_utils": (("ProcessorMixin.get_processor_dict", "entry"),),
    "diffusers.utils.hub_utils": (("_get_model_file", "entry"),),
    "diffusers.configuration_utils": (("ConfigMixin.load_config", "entry"),),
    "diffusers.models.modeling_utils": (("ModelMixin.from_pretrained", "entry"),),
    "diffusers.pipelines.pipeline_utils": (("DiffusionPipeline.from_pretrained", "entry"),
                                           ("DiffusionPipeline.download", "entry")),
    "timm.models._hub": (("load_state_dict_from_hf", "entry"),),
    "torch.hub": (("load_state_dict_from_url", "torch_hub"),),
}
#: Packages whose modules may hold a reference to a wrapped function (`from X import f`).
_HOLDERS = {
    "huggingface_hub": ("huggingface_hub", "transformers", "diffusers", "timm", "peft",
                        "sentence_transformers", "accelerate", "datasets", "open_clip"),
    "torch": ("torch", "torchvision", "timm"),
}
_MARK = "_offline_bundle_wrapped"


class _State:
    active = False
    bundles: Callable[[], list] = staticmethod(lambda: [])
    finder: Any = None


_tls = threading.local()


def install(bundles: Callable[[], list]) -> None:
    """Turn the wrappers on; `bundles()` gives the attached bundles at error time."""
    _State.bundles = bundles
    _State.active = True
    if _State.finder is None:
        _State.finder = _PostImportFinder()
        sys.meta_path.insert(0, _State.finder)
    for name in TARGETS:
        module = sys.modules.get(name)
        if module is not None:
            patch_module(module)


def uninstall() -> None:
    """Turn the wrappers off (they stay in place and call straight through)."""
    _State.active = False


# --- installing ------------------------------------------------------------------


class _PostImportFinder:
    """Wraps the loader of a target module so patch_module runs right after it executes."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in TARGETS:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader:
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        patch_module(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, get_resource_reader ...
        return getattr(self._loader, name)


def patch_module(module: Any) -> None:
    """Wrap the targets of `module` and every reference to them in the libraries' modules."""
    for attr, kind in TARGETS.get(module.__name__, ()):
        owner_name, _, name = attr.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        if owner is None:
            continue
        raw = owner.__dict__.get(name) if owner_name else getattr(owner, name, None)
        if raw is None:
            continue  # not in this version of the library
        method = isinstance(raw, (classmethod, staticmethod))
        func = raw.__func__ if method else raw
        if getattr(func, _MARK, False) or not callable(func):
            continue
        wrapped = _WRAPPERS[kind](func)
        setattr(wrapped, _MARK, True)
        setattr(owner, name, type(raw)(wrapped) if method else wrapped)
        if not owner_name:
            _replace_references(module.__name__.split(".", 1)[0], func, wrapped)


def _replace_references(package: str, old: Any, new: Any) -> None:
    families = _HOLDERS.get(package, (package,))
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".", 1)[0] not in families:
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if value is old:
                namespace[key] = new
            elif type(value) is functools.partial and value.func is old:  # no __class__ lookups
                # timm holds partial(hf_hub_download, library_name="timm", ...)
                namespace[key] = functools.partial(new, *value.args, **value.keywords)


# --- what the wrappers raise ---------------------------------------------------------


def _bundles() -> list:
    try:
        return list(_State.bundles())
    except Exception:  # the error message must never fail for want of a bundle list
        return []


@functools.cache
def _hub_classes() -> tuple[type, type]:
    """(the hub's "not in the local cache" error, our error that is also one)."""
    from huggingface_hub.utils import LocalEntryNotFoundError

    class HubMissingFromBundleError(MissingFromBundleError, LocalEntryNotFoundError):
        """MissingFromBundleError that huggingface_hub's callers see as a cache miss."""

    HubMissingFromBundleError.__module__ = "runtime.errors"
    return LocalEntryNotFoundError, HubMissingFromBundleError


def _arguments(func: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name: positional ones by the signature's order, then the
    keywords (leniently: callers pass keywords a version no longer declares, e.g. proxies)."""
    import inspect

    try:
        params = [p.name for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return dict(zip(params, args, strict=False)) | kwargs  # *args beyond the named ones


def _record_miss(error: MissingFromBundleError) -> None:
    misses = getattr(_tls, "misses", None)
    if misses is not None:
        misses.append(error)


def _hub_error(func: Callable, args: tuple, kwargs: dict, snapshot: bool) -> MissingFromBundleError:
    from runtime import missing

    a = _arguments(func, args, kwargs)
    filename = None
    if not snapshot:
        filename = str(a.get("filename", ""))
        if a.get("subfolder"):
            filename = f"{a['subfolder'].strip('/')}/{filename}"
    error = missing.hub_file(str(a.get("repo_id", "")), filename, revision=a.get("revision"),
                             repo_type=a.get("repo_type"), bundles=_bundles())
    _record_miss(error)
    if error.reason == "broken":
        return error  # listed but damaged: a hard error, even for a probe of an optional file
    return _hub_classes()[1](str(error), **error.info())


def _wrap_hub(snapshot: bool) -> Callable[[Callable], Callable]:
    def wrap(func: Callable) -> Callable:
        local_miss = _hub_classes()[0]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not _State.active:
                return func(*args, **kwargs)
            try:
                result = func(*args, **kwargs)
            except MissingFromBundleError:
                raise
            except local_miss:
                raise _hub_error(func, args, kwargs, snapshot) from None
            if snapshot:
                _check_snapshot(func, args, kwargs)
            return result

        return wrapper

    return wrap


def _check_snapshot(func: Callable, args: tuple, kwargs: dict) -> None:
    """A snapshot whose bundle copy lost a file the call asked for is an error, not a gap."""
    import fnmatch

    from runtime import constants, missing

    a = _arguments(func, args, kwargs)
    repo_id = str(a.get("repo_id", ""))
    folder = (f"{constants.HF_DIR}/{a.get('repo_type') or 'model'}s--"
              f"{repo_id.replace('/', '--')}/snapshots/")
    patterns = a.get("allow_patterns")
    patterns = [patterns] if isinstance(patterns, str) else list(patterns or ["*"])
    for bundle in _bundles():
        for problem in bundle.problems:
            if problem.kind in ("missing", "size") and problem.path.startswith(folder):
                name = problem.path[len(folder):].split("/", 1)[-1]
                if any(fnmatch.fnmatch(name, p) for p in patterns):
                    raise missing.hub_file(repo_id, name, revision=a.get("revision"),
                                           repo_type=a.get("repo_type"), bundles=_bundles())


def _ours(error: BaseException) -> MissingFromBundleError | None:
    """The MissingFromBundleError a library wrapped in its own error, if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MissingFromBundleError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


#: What a library raises when it gives up after files were not found (transformers 4.x
#: offline even trips over its own None: AttributeError).
_GAVE_UP = (OSError, AttributeError, TypeError, ValueError)


def _from_misses(misses: list[MissingFromBundleError], last: MissingFromBundleError | None = None,
                 gave_up: BaseException | None = None) -> MissingFromBundleError:
    """One error naming every file of one repo the call looked for and no bundle gave: the
    repo of `last` (the error that ended the call), else of the last miss. `gave_up`: the
    library's own exception, named by type (its text may be the wrong advice)."""
    from runtime import missing

    last = last or misses[-1]
    broken = next((m for m in misses if m.reason == "broken" and m.repo_id == last.repo_id), None)
    if broken is not None:  # a damaged copy explains the failure better than any absence
        return MissingFromBundleError(str(broken), **broken.info())
    files = list(dict.fromkeys(m.filename for m in misses
                               if m.repo_id == last.repo_id and m.filename))
    if last.repo_id is None or len(files) <= 1:
        error = MissingFromBundleError(str(last), **last.info())
    else:
        error = missing.hub_file(last.repo_id, files[-1], revision=last.revision, repo_type=None,
                                 bundles=_bundles(), looked_for=files)
    if gave_up is not None:
        error.args = (f"{error.args[0]} (The library stopped with {type(gave_up).__name__} "
                      "after these lookups; it is chained below.)",)
    return error


def _wrap_entry(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _State.active:
            return func(*args, **kwargs)
        outer = getattr(_tls, "misses", None) is None
        if outer:
            _tls.misses = []
        try:
            return func(*args, **kwargs)
        except MissingFromBundleError as e:
            if outer and e.reason != "broken" and len(_tls.misses) > 1:
                raise _from_misses(_tls.misses, e) from None  # timm: safetensors, then .bin
            raise
        except Exception as e:
            ours = _ours(e)
            if ours is not None:
                # The library's own text ("couldn't connect", "check your connection") is
                # wrong advice offline: ours alone, as the plain (hard) error.
                raise MissingFromBundleError(str(ours), **ours.info()) from None
            if outer and _tls.misses and isinstance(e, _GAVE_UP):
                # It raised without ours inside (no weights file of any name, no
                # tokenizer file): the files it looked for are the story.
                raise _from_misses(_tls.misses, gave_up=e) from e
            raise
        finally:
            if outer:
                _tls.misses = None

    return wrapper


def _wrap_torch_hub(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _State.active:
            _check_checkpoint(func, args, kwargs)
        return func(*args, **kwargs)

    return wrapper


def _check_checkpoint(func: Callable, args: tuple, kwargs: dict) -> None:
    """Raise MissingFromBundleError when torch.hub would download a file into the view."""
    from urllib.parse import urlsplit

    from runtime.state import current

    act = current()
    if act is None or act.view is None:
        return
    a = _arguments(func, args, kwargs)
    url = str(a.get("url", ""))
    import torch.hub

    folder = a.get("model_dir") or os.path.join(torch.hub.get_dir(), "checkpoints")
    name = a.get("file_name") or os.path.basename(urlsplit(url).path)
    view = os.path.realpath(act.view)
    if not os.path.realpath(folder).startswith(view + os.sep):
        return  # a model_dir of the caller's own: not ours to judge
    if not os.path.exists(os.path.join(folder, name)):
        from runtime import missing

        raise missing.url_file(url, name, _bundles())


_WRAPPERS: dict[str, Callable[[Callable], Callable]] = {
    "hub_file": _wrap_hub(snapshot=False),
    "hub_snapshot": _wrap_hub(snapshot=True),
    "entry": _wrap_entry,
    "torch_hub": _wrap_torch_hub,
}
