"""What the ``attention`` command does: maps for each image, rollout overlay, layer grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.vision.errors import CheckpointError


def write_attention(
    inputs: Sequence[Path],
    out: Path,
    *,
    stack: str,
    checkpoint: Path | None = None,
    image_size: int | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    layer_grid: bool = True,
    save_maps: bool = False,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Write attention overlays for every image in `inputs`.

    Per image ``NAME``: ``NAME_rollout.png`` (rollout over the image),
    ``NAME_layers.png`` with `layer_grid` (class-token attention per layer and
    head) and ``NAME_attention.pt`` with `save_maps` (a ``(layers, heads, tokens,
    tokens)`` float tensor, see :mod:`runtime.vision.attention`).

    Args:
        checkpoint: a ViT ``best.pt`` of `stack`; None uses the pretrained
            ViT-B/16 from the bundle (ImageNet attention).
        image_size: input size without a checkpoint (default 224).

    Returns:
        One record per image: ``{"image", "map_shape", "files"}``.

    Raises:
        CheckpointError: the checkpoint is not a ViT.
    """
    import torch

    from runtime.train.precision import choose_device
    from runtime.vision.architectures import IMAGENET_MEAN, IMAGENET_STD, build_classifier
    from runtime.vision.attention import (
        AttentionRecorder,
        attention_rollout,
        save_layer_grid,
        save_overlay,
    )
    from runtime.vision.images import gather_images, image_transform, load_rgb
    from runtime.vision.inference import load_classifier

    dev = choose_device(device)
    if checkpoint is not None:
        loaded = load_classifier(checkpoint, stack=stack, device=dev)
        if loaded.config["arch"] != "vit_b_16":
            raise CheckpointError(
                f"{checkpoint} holds a {loaded.config['arch']} model; attention maps need a ViT "
                "checkpoint (train with --arch vit_b_16)"
            )
        model, size = loaded.model, int(loaded.config["image_size"])
        mean, std = loaded.config["mean"], loaded.config["std"]
    else:
        size = image_size or 224
        # The head does not take part in attention; a fresh one is fine here.
        model = build_classifier("vit_b_16", num_outputs=1, image_size=size, pretrained=True)
        model.to(dev).eval()
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    transform = image_transform(size, mean, std)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in gather_images(inputs):
        image = load_rgb(path)
        batch = transform(image).unsqueeze(0).to(dev)
        with torch.no_grad(), AttentionRecorder(model) as recorder:
            model(batch)
        maps = recorder.maps()  # (layers, 1, heads, tokens, tokens)
        rollout = attention_rollout(maps, head_fusion=head_fusion, discard_ratio=discard_ratio)
        files = [save_overlay(image, rollout[0], out / f"{path.stem}_rollout.png")]
        if layer_grid:
            files.append(save_layer_grid(image, maps[:, 0], out / f"{path.stem}_layers.png"))
        if save_maps:
            target = out / f"{path.stem}_attention.pt"
            torch.save(maps[:, 0].cpu().contiguous(), target)
            files.append(target)
        records.append(
            {
                "image": str(path),
                "map_shape": [maps.shape[0], *maps.shape[2:]],
                "files": [str(f) for f in files],
            }
        )
    return records
