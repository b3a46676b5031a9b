"""Mixed-precision policy: which autocast dtype, and whether a GradScaler is needed.

The rule (DESIGN.md): bf16 autocast on compute capability >= 8.0 (A100, H100,
L4, RTX 30xx+), fp16 autocast with a GradScaler below (T4, V100), fp32 on CPU.
``torch.cuda.is_bf16_supported()`` is not used to decide: it answers True on a
T4 (sm_75), where bf16 is emulated and slower than fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from runtime.errors import PrecisionError

if TYPE_CHECKING:
    import torch

PrecisionName = Literal["auto", "bf16", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")


@dataclass
class PrecisionPolicy:
    """How a training run computes: device, autocast dtype, GradScaler.

    Attributes:
        device: where the model and batches live.
        dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``), or None for fp32.
        scaler: a ``torch.amp.GradScaler`` for fp16, else None (bf16 and fp32
            have the range of fp32 and need no loss scaling).
    """

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @property
    def name(self) -> str:
        """ "bf16", "fp16" or "fp32"."""
        import torch

        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes (a no-op for fp32)."""
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def choose_device(requested: str = "auto") -> torch.device:
    """The device to train on: ``cuda:LOCAL_RANK`` when CUDA is there, else CPU.

    Args:
        requested: "auto", "cpu", "cuda" or "cuda:N".
    """
    import torch

    from runtime import constants

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", constants.local_rank())
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", constants.local_rank())
    return device


def best_cuda_precision(device: torch.device) -> str:
    """ "bf16" on compute capability >= 8.0, else "fp16"."""
    import torch

    major, _minor = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def choose_precision(
    device: torch.device | str = "auto", requested: str = "auto"
) -> PrecisionPolicy:
    """Pick the autocast dtype and GradScaler for a device.

    Args:
        device: a ``torch.device`` or a string for :func:`choose_device`.
        requested: "auto" (the rule in the module docstring), or "bf16", "fp16",
            "fp32" to force one. fp16 and bf16 work on CPU too (tests use them
            to exercise the scaler path with ``GradScaler("cpu")``).

    Returns:
        A :class:`PrecisionPolicy`; fp16 comes with a fresh GradScaler.

    Raises:
        PrecisionError: an unknown name, or bf16 forced on a GPU older than sm_80.
    """
    import torch

    if requested not in PRECISIONS:
        raise PrecisionError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if not isinstance(device, torch.device):
        device = choose_device(device)
    name = requested
    if name == "auto":
        name = best_cuda_precision(device) if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type == "cuda" and best_cuda_precision(device) != "bf16":
        raise PrecisionError(
            f"bf16 requested on {torch.cuda.get_device_name(device)} (compute capability "
            f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}), which has no "
            "fast bf16; use --precision fp16 (with loss scaling) or auto"
        )
    if name == "fp32":
        return PrecisionPolicy(device=device, dtype=None, scaler=None)
    if name == "bf16":
        return PrecisionPolicy(device=device, dtype=torch.bfloat16, scaler=None)
    return PrecisionPolicy(
        device=device, dtype=torch.float16, scaler=torch.amp.GradScaler(device.type)
    )
