"""Errors of the vision stacks. Messages name the file or option and say what to do next."""

from __future__ import annotations


class VisionError(Exception):
    """Base class: a vision stack cannot go on; the message says why and what to do."""


class DatasetError(VisionError):
    """An image folder is missing, empty or not laid out as the stack expects."""


class MissingWeightsError(VisionError):
    """Pretrained torchvision weights are not in any attached bundle."""


class CheckpointError(VisionError):
    """A checkpoint file is missing or was written by another stack or architecture."""


class UnknownArchitectureError(VisionError):
    """An --arch name that the registry does not know."""


class UnsafeWeightsError(VisionError):
    """A weights file holds pickled objects other than tensors: it is not loaded."""


class OptionError(VisionError, ValueError):
    """Option values the stack cannot run with (e.g. an image size the model cannot take)."""
