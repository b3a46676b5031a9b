"""Shared test set-up. Fixtures live in tests/fixtures/, one module per stand-in."""

import os
import sys

import pytest

# Nothing in the suite may reach a real hub or phone home.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

pytest_plugins = [
    "tests.fixtures.fileserver",
    "tests.fixtures.hubserver",
    "tests.fixtures.bundles",
    "tests.fixtures.kaggleserver",
]


@pytest.fixture(autouse=True)
def _no_activation_leaks_between_tests():
    """`bundle run` (through CliRunner) activates the runtime in this process, as it
    would in a real one that then exits. Undo it after each test, so the offline
    switches, the strict-mode guard and the view never leak into the next test."""
    strict = os.environ.get("OFFLINE_BUNDLE_STRICT")
    yield
    state = sys.modules.get("runtime.state")
    if state is not None and state.current() is not None:
        sys.modules["runtime.activate"].deactivate()  # the module; runtime.activate is the function
    # `bundle run --strict` sets OFFLINE_BUNDLE_STRICT for the rest of its process (its ranks,
    # workers and children inherit it); this process is the test session: put it back.
    if strict is None:
        os.environ.pop("OFFLINE_BUNDLE_STRICT", None)
    else:
        os.environ["OFFLINE_BUNDLE_STRICT"] = strict
