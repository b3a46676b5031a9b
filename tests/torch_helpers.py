"""Test helpers for code that runs torch.

``one_thread``: tiny models and tensors run fastest on one thread, and the CI
machine's two cores are shared by other test runs. A module uses it with::

    from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

    pytestmark = pytest.mark.usefixtures("one_thread")
"""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """torch on one thread for the test, the previous count restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
