"""Runs at the start of every Python process of ``bundle capture -- COMMAND`` and of
``bundle run --strict -- COMMAND`` (this folder is put first on PYTHONPATH), before
any of the command's code, then hands over to the interpreter's own sitecustomize.

- ``$OFFLINE_BUNDLE_CAPTURE_LOG`` set: record what the process fetches (runtime.netlog).
- ``$OFFLINE_BUNDLE_STRICT_CHILD=1``: ``runtime.activate(strict=True)``, so a script
  that never calls it is strict too: a connection off this machine is refused with an
  error naming the host and the URL.

Not a package module: a plain file found by name (``import sitecustomize``).
"""

import os
import sys


def _start() -> None:
    try:
        from runtime import constants
    except Exception:  # noqa: BLE001 - not importable in this interpreter: nothing to start
        return
    if constants.capture_log():
        try:
            from runtime import netlog

            netlog.install_from_env()
        except Exception as exc:  # never stop the user's program; say it is not recorded
            sys.stderr.write(f"offline-bundle: bundle capture cannot record in this process "
                             f"({sys.executable}: {exc!r}); what it downloads is found in the "
                             "caches only\n")
    elif constants.strict_child():
        try:
            import runtime

            runtime.activate(strict=True, require_bundle=False)
        except Exception as exc:
            try:
                from runtime import guard

                guard.install()
            except Exception:
                sys.stderr.write(f"offline-bundle: strict mode could not start in {sys.executable} "
                                 f"({exc!r}); this process is NOT guarded\n")
                return
            sys.stderr.write(f"offline-bundle: runtime.activate(strict=True) failed ({exc}); "
                             "network connections are still refused\n")


def _chain() -> None:
    """Run the sitecustomize this one shadows (a distribution's, a conda env's), if any."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_start()
_chain()
