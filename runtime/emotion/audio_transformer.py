"""emotion-ast's model: AST filterbank features -> Audio Spectrogram Transformer ->
valence/arousal (see runtime.stacks.emotion_ast for the recipe and the commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from runtime.emotion.commands import OFFSET_OPTION
from runtime.emotion.model import EmotionStack, from_pretrained_complete

#: The backbone, by its Hub repo id (any artifact id in a spec matches; the
#: catalogue's bundles/emotion-ast.toml calls it ast-audioset).
DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"


def prepare(pretrained: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Backbone config and feature extractor settings from the bundle."""
    from transformers import ASTFeatureExtractor, AutoConfig

    backbone_config = AutoConfig.from_pretrained(pretrained)
    extractor = ASTFeatureExtractor.from_pretrained(pretrained)
    if (
        extractor.max_length != backbone_config.max_length
        or extractor.num_mel_bins != backbone_config.num_mel_bins
    ):
        raise click.ClickException(
            f"{pretrained}: preprocessor_config.json (max_length {extractor.max_length}, num_mel_bins "
            f"{extractor.num_mel_bins}) does not match config.json (max_length {backbone_config.max_length}, "
            f"num_mel_bins {backbone_config.num_mel_bins}); rebuild the bundle from one repository"
        )
    # By default decode just what the extractor keeps: max_length frames of 10 ms.
    seconds = opts["seconds"] or extractor.max_length / 100 + 0.05
    return {
        "backbone_config": json.loads(backbone_config.to_json_string()),
        "extractor": json.loads(extractor.to_json_string()),
        "audio": {"offset": opts["offset"], "duration": seconds},
    }


def build(config: dict[str, Any], pretrained: Path | None):
    """EmotionAST: backbone weights from ``pretrained`` (or from a checkpoint later, when None)."""
    from transformers import ASTConfig, ASTModel

    from runtime.emotion.regressor import EmotionAST

    if pretrained is not None:
        backbone = from_pretrained_complete(ASTModel, pretrained)
    else:
        backbone = ASTModel(ASTConfig.from_dict(config["backbone_config"]))
    return EmotionAST(
        backbone, width=backbone.config.hidden_size, dropout=config["dropout"]
    )


class ASTFeatures:
    """audio file -> AST filterbank features (max_length, num_mel_bins), float32.

    A class rather than a closure so that DataLoader workers started by
    spawn/forkserver can pickle it.
    """

    def __init__(
        self, extractor_config: dict[str, Any], offset: float, duration: float | None
    ) -> None:
        self.extractor_config, self.offset, self.duration = extractor_config, offset, duration
        self._extractor = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_extractor": None}

    def __call__(self, path: Path):
        import numpy as np

        from runtime.data.audio import load_audio

        if self._extractor is None:
            from transformers import ASTFeatureExtractor

            self._extractor = ASTFeatureExtractor.from_dict(self.extractor_config)
        rate = self._extractor.sampling_rate
        y = load_audio(path, sample_rate=rate, offset=self.offset, duration=self.duration)
        values = self._extractor(y, sampling_rate=rate, return_tensors="np")["input_values"][0]
        return values.astype(np.float32)


def features(config: dict[str, Any]):
    audio = config["audio"]
    params = {"kind": "ast-fbank", "extractor": config["extractor"], **audio}
    # The extractor pads every clip to max_length frames: no further cropping.
    return params, ASTFeatures(config["extractor"], audio["offset"], audio["duration"]), None, 0.0


STACK = EmotionStack("emotion-ast", DEFAULT_MODEL, prepare, build, features, options=[
    OFFSET_OPTION,
    click.option("--seconds", type=float, default=None,
                 help="Seconds of audio per song (default: what the extractor keeps, 10.24 s "
                      "for AudioSet AST)."),
])
