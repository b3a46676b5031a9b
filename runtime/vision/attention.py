"""Attention maps for torchvision Vision Transformers, captured with hooks.

torchvision's ``EncoderBlock.forward`` calls its ``nn.MultiheadAttention`` as
``self.self_attention(x, x, x, need_weights=False)`` and drops the weights. The
:class:`AttentionRecorder` registers, on every block's ``self_attention``:

- a forward pre-hook (``with_kwargs=True``) that turns ``need_weights=True`` and
  ``average_attn_weights=False`` on (keyword or positional, whichever the call uses);
- a forward hook that keeps the second output, the per-head attention weights.

The block still uses only the first output, so the model's outputs do not change
(up to float rounding: ``need_weights=True`` takes the non-fused attention path).

Map shape: ``recorder.maps()`` is a tensor of shape
``(num_layers, batch, num_heads, tokens, tokens)`` with ``tokens = 1 + (S/P)**2``
for image size S and patch size P: token 0 is the class token, then patches in
row-major order. Row i holds where token i attends; each row sums to 1.
ViT-B/16 at 224: ``(12, B, 12, 197, 197)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# Positional slots of nn.MultiheadAttention.forward(query, key, value,
# key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal).
_NEED_WEIGHTS_POS = 4
_AVERAGE_POS = 6


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if layers is None:
        raise TypeError(
            f"{type(model).__name__} is not a torchvision VisionTransformer "
            "(no encoder.layers); attention maps need a ViT (--arch vit_b_16)"
        )
    return [block.self_attention for block in layers]


def _force_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    args = list(args)
    for pos, name, value in (
        (_NEED_WEIGHTS_POS, "need_weights", True),
        (_AVERAGE_POS, "average_attn_weights", False),
    ):
        if len(args) > pos:
            args[pos] = value
        else:
            kwargs[name] = value
    return tuple(args), kwargs


class AttentionRecorder:
    """Context manager that records per-layer, per-head attention of a torchvision ViT.

    Example::

        with AttentionRecorder(model) as rec:
            logits = model(images)
        maps = rec.maps()          # (layers, batch, heads, tokens, tokens)

    Args:
        model: a ``torchvision.models.VisionTransformer`` (any size).
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = _attention_modules(model)
        self._weights: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list[Any] = []

    def __enter__(self) -> AttentionRecorder:
        for index, module in enumerate(self.modules):
            self._handles.append(module.register_forward_pre_hook(_force_weights, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._keeper(index)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _keeper(self, index: int):
        def keep(_module: nn.Module, _args: tuple, output: tuple) -> None:
            self._weights[index] = output[1].detach().float()

        return keep

    def maps(self) -> torch.Tensor:
        """The attention of the last forward pass: ``(layers, batch, heads, tokens, tokens)``."""
        import torch

        if any(w is None for w in self._weights):
            raise RuntimeError("no forward pass was recorded; call the model inside the block")
        return torch.stack(self._weights)  # type: ignore[arg-type]


def attention_rollout(
    maps: torch.Tensor, *, head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much the class token draws on each patch.

    Per layer the heads are fused, the residual connection is added as an identity
    (``0.5 * A + 0.5 * I``), rows are renormalised, and the layers are multiplied
    from the first to the last.

    Args:
        maps: ``(layers, batch, heads, tokens, tokens)`` from :class:`AttentionRecorder`.
        head_fusion: "mean", "max" or "min" over heads.
        discard_ratio: fraction of the weakest attention weights dropped per layer
            (the class-token column is kept), which sharpens the map.

    Returns:
        ``(batch, grid, grid)``: the class token's rolled-out attention over the
        patch grid, scaled to [0, 1] per image.
    """
    import torch

    layers, batch, _heads, tokens, _ = maps.shape
    grid = int(round((tokens - 1) ** 0.5))
    if grid * grid != tokens - 1:
        raise ValueError(f"{tokens - 1} patch tokens do not form a square grid")
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be mean, max or min, got {head_fusion!r}")
    eye = torch.eye(tokens, dtype=maps.dtype, device=maps.device)
    result = eye.expand(batch, tokens, tokens).clone()
    for layer in range(layers):
        attn = fuse[head_fusion](maps[layer])  # (batch, tokens, tokens)
        if discard_ratio > 0:
            # Drop the weakest weights; the identity added below keeps every row non-zero.
            threshold = attn.reshape(batch, -1).quantile(discard_ratio, dim=1)
            attn = torch.where(attn < threshold[:, None, None], torch.zeros_like(attn), attn)
        attn = 0.5 * attn + 0.5 * eye
        attn = attn / attn.sum(dim=-1, keepdim=True)
        result = attn @ result
    cls_to_patches = result[:, 0, 1:].reshape(batch, grid, grid)
    low = cls_to_patches.amin(dim=(1, 2), keepdim=True)
    high = cls_to_patches.amax(dim=(1, 2), keepdim=True)
    return (cls_to_patches - low) / (high - low).clamp_min(1e-12)


def save_overlay(
    image: Any, heat: torch.Tensor, path: Path, *, alpha: float = 0.5, colormap: str = "jet"
) -> Path:
    """Write `image` with the heat map `heat` (``(h, w)``, values in [0, 1]) blended on top.

    Args:
        image: a PIL image (any size; the heat map is resized to it).
        heat: the map, e.g. one image of :func:`attention_rollout`.
        path: the PNG to write (parent folders are created).
        alpha: weight of the heat map in the blend.
        colormap: a matplotlib colormap name.

    Returns:
        `path`.
    """
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    rgb = image.convert("RGB")
    heat_img = Image.fromarray((heat.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8))
    heat_img = heat_img.resize(rgb.size, Image.Resampling.BILINEAR)
    colours = colormaps[colormap](np.asarray(heat_img) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(rgb) / 255.0 + alpha * colours
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((blended * 255).round().astype(np.uint8)).save(path)
    return path


def save_layer_grid(
    image: Any, maps: torch.Tensor, path: Path, *, layers: Sequence[int] | None = None
) -> Path:
    """Write a PNG grid: one row per layer, one column per head, class-token attention.

    Args:
        image: the PIL image the maps belong to (shown in the first column).
        maps: ``(layers, heads, tokens, tokens)`` for one image.
        path: the PNG to write.
        layers: which layers to show (default: all).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    num_layers, heads, tokens, _ = maps.shape
    grid = int(round((tokens - 1) ** 0.5))
    chosen = list(layers) if layers is not None else list(range(num_layers))
    fig, axes = plt.subplots(
        len(chosen), heads + 1, figsize=(1.2 * (heads + 1), 1.2 * len(chosen)), squeeze=False
    )
    for row, layer in enumerate(chosen):
        axes[row][0].imshow(image.convert("RGB"))
        axes[row][0].set_ylabel(f"L{layer}", fontsize=6)
        for head in range(heads):
            cls = maps[layer, head, 0, 1:].reshape(grid, grid).cpu().numpy()
            axes[row][head + 1].imshow(cls, cmap="jet")
            if row == 0:
                axes[row][head + 1].set_title(f"h{head}", fontsize=6)
    for ax in (a for r in axes for a in r):
        ax.set_xticks([])
        ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
