"""Shared test set-up. Fixtures live in tests/fixtures/, one module per stand-in."""

import os

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
