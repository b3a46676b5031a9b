"""emotion-vit's model: log-mel spectrogram image -> ViT -> valence/arousal (see
runtime.stacks.emotion_vit for the recipe and the commands)."""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from runtime.emotion.commands import OFFSET_OPTION
from runtime.emotion.model import EmotionStack, from_pretrained_complete

#: The backbone, by its Hub repo id (so any artifact id in a spec matches; the
#: catalogue's bundles/emotion-vit.toml calls it vit-base-in21k and declares the
#: ImageNet-1k fine-tuned ViT-B/16 as its fallback).
DEFAULT_MODEL = "google/vit-base-patch16-224-in21k"


def prepare(pretrained: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Backbone config, image size and normalisation from the bundle; mel parameters from options."""
    from transformers import AutoConfig

    backbone_config = AutoConfig.from_pretrained(pretrained)
    image_size, mean, std = _image_processing(pretrained, backbone_config)
    seconds = opts["seconds"]
    return {
        "backbone_config": json.loads(backbone_config.to_json_string()),
        "image": {"size": image_size, "mean": mean, "std": std},
        "mel": {
            "sample_rate": opts["sample_rate"],
            "n_mels": opts["n_mels"],
            "n_fft": opts["n_fft"],
            "hop_length": opts["hop_length"],
            "offset": opts["offset"],
            "duration": seconds,
            "top_db": 80.0,
        },
        "frames": 1 + math.floor(seconds * opts["sample_rate"] / opts["hop_length"]),
    }


def _image_processing(pretrained: Path, backbone_config) -> tuple[int, list[float], list[float]]:
    # The image processor of the checkpoint says how its pixels were normalised
    # (in21k: mean 0.5, std 0.5). Without one, use the config's size and say so.
    if (pretrained / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(pretrained)
        size = (
            processor.size.get("height")
            or processor.size.get("shortest_edge")
            or backbone_config.image_size
        )
        return (
            int(size),
            [float(v) for v in processor.image_mean],
            [float(v) for v in processor.image_std],
        )
    print(
        f"emotion-vit: {pretrained} has no preprocessor_config.json; using image size "
        f"{backbone_config.image_size} and mean/std 0.5",
        file=sys.stderr,
    )
    return int(backbone_config.image_size), [0.5] * 3, [0.5] * 3


def build(config: dict[str, Any], pretrained: Path | None):
    """EmotionViT: backbone weights from ``pretrained`` (or from a checkpoint later, when None)."""
    from transformers import ViTConfig, ViTModel

    from runtime.emotion.regressor import EmotionViT

    if pretrained is not None:
        # No pooler: the head reads the [CLS] token, and DDP needs every trainable
        # parameter to take part in the forward pass.
        backbone = from_pretrained_complete(ViTModel, pretrained, add_pooling_layer=False)
    else:
        backbone = ViTModel(ViTConfig.from_dict(config["backbone_config"]), add_pooling_layer=False)
    return EmotionViT(
        backbone,
        width=backbone.config.hidden_size,
        dropout=config["dropout"],
        image=config["image"],
        top_db=config["mel"]["top_db"],
    )


def features(config: dict[str, Any]):
    from runtime.data.audio import MelParams, log_mel_of_file

    params = MelParams(**config["mel"])
    # A partial, not a lambda: DataLoader workers started by spawn/forkserver pickle it.
    compute = functools.partial(log_mel_of_file, params=params)
    return params.as_dict(), compute, config["frames"], -params.top_db


STACK = EmotionStack("emotion-vit", DEFAULT_MODEL, prepare, build, features, options=[
    click.option("--sample-rate", default=22050, show_default=True, help="Decode audio at this rate."),
    click.option("--n-mels", default=128, show_default=True),
    click.option("--n-fft", default=2048, show_default=True),
    click.option("--hop-length", default=512, show_default=True),
    OFFSET_OPTION,
    click.option("--seconds", default=30.0, show_default=True, help="Seconds of audio per song."),
])
