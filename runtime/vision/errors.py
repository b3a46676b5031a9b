"""Errors of the vision stacks, declared with every runtime error in ``runtime.errors``
and named here too for the vision code that raises them."""

from __future__ import annotations

from runtime.errors import (
    CheckpointError,
    DatasetError,
    MissingWeightsError,
    OptionError,
    UnknownArchitectureError,
    UnsafeWeightsError,
    VisionError,
)

__all__ = ["CheckpointError", "DatasetError", "MissingWeightsError", "OptionError",
           "UnknownArchitectureError", "UnsafeWeightsError", "VisionError"]
