"""Load checkpoint files safely and put them into our networks, with errors that help.

- ``.safetensors`` files load with safetensors (no pickle, memory-mapped);
- ``.pt`` / ``.pth`` files load with ``torch.load(weights_only=True)``: tensors and
  plain containers only, never arbitrary pickled code;
- a ``NAME.safetensors`` next to ``NAME.pt`` is preferred (a converted copy);
- networks are built on the ``meta`` device and take the loaded tensors as they
  are (``assign=True``), so a 550 M-parameter model is never randomly initialised.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from runtime.errors import CheckpointError


def load_state_dict(path: str | Path, *, artifact: str = "") -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` on the CPU.

    Args:
        path: a .safetensors, .pt or .pth file.
        artifact: the bundle artifact id, for error messages.

    Returns:
        name → tensor.

    Raises:
        CheckpointError: the file is missing, unreadable, holds pickled code, or is not a state dict.
    """
    path = Path(path)
    where = f"artifact {artifact!r} " if artifact else ""
    sibling = path.with_suffix(".safetensors")
    if path.suffix != ".safetensors" and sibling.is_file():
        path = sibling
    if not path.is_file():
        raise CheckpointError(f"{where}file {path} does not exist; rebuild the bundle or check the path")
    hint = ("Pass the network's weights (a .pt state dict such as 256x256_diffusion_uncond.pt or "
            "DDRM's celeba_hq.ckpt, or a .safetensors file), or rebuild the bundle.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from runtime.train.checkpoint import describe_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{where}file {path} is not a safetensors file of tensors: it "
                                  f"is {describe_file(path)}. {hint}") from exc
    else:
        from runtime.train.checkpoint import CheckpointError as FileError
        from runtime.train.checkpoint import safe_torch_load

        try:
            # torch's own text is left out: it suggests weights_only=False.
            state = safe_torch_load(path, what=f"{where}file", expected="a checkpoint of tensors",
                                    hint=hint)
        except FileError as exc:
            raise CheckpointError(str(exc)) from None
    if isinstance(state, dict) and set(state) == {"state_dict"}:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}file {path} is not a state dict of tensors")
    return state


def build_and_load(
    factory: Callable[[], nn.Module],
    state: dict[str, torch.Tensor],
    *,
    artifact: str,
    path: str | Path,
    hint: str = "",
) -> nn.Module:
    """Build ``factory()`` on the meta device and load ``state`` into it, strictly.

    Raises:
        CheckpointError: keys or shapes differ; the message lists the first differences
            and ends with ``hint`` (e.g. which flags describe the architecture).
    """
    with torch.device("meta"):
        model = factory()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = describe_mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        where = f"artifact {artifact!r} ({path})" if artifact else str(path)
        raise CheckpointError(
            f"{where} does not fit the network: {problems}"
            + (f"; {hint}" if hint else "")
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def describe_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], limit: int = 3) -> str:
    """'' when equal; else a short account of missing keys, unexpected keys and shape differences."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {found[k]} != {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def convert_to_safetensors(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write ``src`` (a .pt state dict) as safetensors next to it or at ``dst``; returns the new path.

    Loading then skips pickle entirely and memory-maps the tensors.
    """
    from safetensors.torch import save_file

    src = Path(src)
    dst = Path(dst) if dst else src.with_suffix(".safetensors")
    state = load_state_dict(src)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    return dst
