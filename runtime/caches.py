"""Writable places for the caches the stacks' libraries keep, where HOME is not writable.

``docker run --user UID``, ``runuser``, and platforms that give each job a random UID
leave HOME unset, read-only or nonexistent (``/nonexistent``). Libraries then fail in
ways that name the wrong thing: librosa's numba functions stop with "cannot cache
function '__o_fold': no locator available", matplotlib warns about a temporary config
folder on every import. activate() sets, only when the usual folder cannot be written
(and the variable is not set already):

    XDG_CACHE_HOME    ~/.cache: fontconfig, torch kernels and anything else that caches
    NUMBA_CACHE_DIR   numba's compiled functions (librosa)
    TRITON_CACHE_DIR  triton's kernels (torch.compile on a GPU)
    MPLCONFIGDIR      matplotlib's config and font cache (~/.config/matplotlib)

to folders under one private (0700) temporary folder, removed when the process ends.
Nothing here imports a library; a check costs a few ``stat`` calls.
"""

from __future__ import annotations

import os

from runtime import constants


def _writable(path: str) -> bool:
    """True when ``path`` can be written, or created in its nearest existing parent."""
    path = os.path.abspath(path)
    while True:
        if os.path.isdir(path):
            return os.access(path, os.W_OK | os.X_OK)
        if os.path.exists(path):
            return False  # a file where a folder should be
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def unwritable_caches(environ: os._Environ | dict[str, str]) -> dict[str, str]:
    """Variable -> the usual folder it would point at, for every cache that cannot be written."""
    home = constants.home()
    cache_home = constants.xdg_cache_home(environ)
    config_home = constants.xdg_config_home(environ)
    wanted: dict[str, str] = {}
    if not _writable(cache_home):
        wanted["XDG_CACHE_HOME"] = cache_home
        for name, default in (("NUMBA_CACHE_DIR", os.path.join(cache_home, "numba")),
                              ("TRITON_CACHE_DIR", os.path.join(home, ".triton"))):
            if not constants.is_set(name, environ):
                wanted[name] = default
    if not constants.is_set("MPLCONFIGDIR", environ) and not _writable(os.path.join(config_home, "matplotlib")):
        wanted["MPLCONFIGDIR"] = os.path.join(config_home, "matplotlib")
    return wanted


def writable_cache_env(environ: os._Environ | dict[str, str], base: str) -> dict[str, str]:
    """The variables to set (each a new folder under ``base``) for the unwritable caches."""
    env = {}
    for name in unwritable_caches(environ):
        folder = os.path.join(base, name.lower().removesuffix("_dir").removesuffix("_home"))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        env[name] = folder
    return env
