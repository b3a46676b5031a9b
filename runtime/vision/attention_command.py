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
    from runtime.vision.images import checked, gather_images, image_transform, load_rgb
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
    paths = checked(gather_images(inputs), skip_bad_files=False)
    names = output_names(paths)
    for path in paths:
        image = load_rgb(path)
        stem = out / names[path]
        stem.parent.mkdir(parents=True, exist_ok=True)
        batch = transform(image).unsqueeze(0).to(dev)
        with torch.no_grad(), AttentionRecorder(model) as recorder:
            model(batch)
        maps = recorder.maps()  # (layers, 1, heads, tokens, tokens)
        rollout = attention_rollout(maps, head_fusion=head_fusion, discard_ratio=discard_ratio)
        files = [save_overlay(image, rollout[0], Path(f"{stem}_rollout.png"))]
        if layer_grid:
            files.append(save_layer_grid(image, maps[:, 0], Path(f"{stem}_layers.png")))
        if save_maps:
            target = Path(f"{stem}_attention.pt")
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


def output_names(paths: list[Path]) -> dict[Path, str]:
    """A distinct output name per input: the file name without its suffix, with as many of
    its parent folders as it takes to tell it from the others (``flood/tile_000`` and
    ``no_flood/tile_000``), and the suffix where only that differs (``a_png``, ``a_jpg``).
    Written under --out as sub-folders, so no input's maps overwrite another's."""
    from collections import Counter

    unique = list(dict.fromkeys(Path(p) for p in paths))
    same_but_suffix = Counter(p.with_suffix("") for p in unique)
    parts: dict[Path, tuple[str, ...]] = {}
    for p in unique:
        base = p.with_suffix("")
        if same_but_suffix[base] > 1:
            base = base.with_name(f"{base.name}_{p.suffix.lstrip('.')}")
        parts[p] = base.parts[1:] if base.is_absolute() else base.parts
    names: dict[Path, str] = {}
    pending, depth = unique, 1
    while pending:
        candidate = {p: "/".join(parts[p][-depth:]) for p in pending}
        counts = Counter(candidate.values())
        undecided = []
        for p in pending:
            if counts[candidate[p]] == 1 or depth >= len(parts[p]):
                names[p] = candidate[p]
            else:
                undecided.append(p)
        pending, depth = undecided, depth + 1
    return names
