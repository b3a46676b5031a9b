"""The regression head, the EmotionStack record, backbones from the bundle, trained models."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import IncompleteWeightsError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

HEAD_HIDDEN = (512, 128)
SELECT_METRIC = "ccc_mean"


def regression_head(
    in_features: int, *, hidden: tuple[int, ...] = HEAD_HIDDEN, dropout: float = 0.1
) -> nn.Module:
    """LayerNorm -> (Linear -> GELU -> Dropout) per hidden width -> Linear(2) -> tanh.

    The output is (valence, arousal) in [-1, 1], the range the labels are mapped to.
    """
    from torch import nn

    layers: list[nn.Module] = [nn.LayerNorm(in_features)]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
        width = h
    layers += [nn.Linear(width, 2), nn.Tanh()]
    return nn.Sequential(*layers)


def transformer_blocks(backbone) -> list:
    """The encoder blocks of a transformers ViT/AST (``layers`` in 5.x, ``encoder.layer`` in 4.x)."""
    layers = getattr(backbone, "layers", None)
    if layers is None:
        layers = backbone.encoder.layer
    return list(layers)


def backbone_blocks(model) -> tuple[list, list]:
    """``EmotionStack.blocks`` of a transformers ViT/AST backbone: its encoder blocks,
    and its final LayerNorm (trained whatever ``--train-blocks`` says)."""
    return transformer_blocks(model.backbone), [model.backbone.layernorm]


@dataclass
class EmotionStack:
    """What one emotion stack adds to the shared recipe.

    Attributes:
        name: the stack name (``bundle run NAME``).
        default_model: artifact id of the backbone in the stack's bundle spec.
        prepare: ``(pretrained folder, options) -> config``: reads the backbone
            and preprocessing configuration from the bundle and returns plain
            values (stored in checkpoints) that :attr:`build` and
            :attr:`features` understand.
        build: ``(config, pretrained folder or None) -> model``: with a folder
            the backbone weights come from it (``from_pretrained``); with None
            the architecture comes from ``config`` and the weights from a checkpoint.
        features: ``config -> (cache params, compute(path) -> array, frames, pad value)``.
        blocks: ``model -> (transformer blocks, modules always trained)`` for
            partial fine-tuning (default :func:`backbone_blocks`, for HF encoders).
        options: extra click options of ``train`` (feature parameters).
    """

    name: str
    default_model: str
    prepare: Callable[[Path, dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Any], Path | None], nn.Module]
    features: Callable[
        [dict[str, Any]], tuple[dict, Callable[[Path], np.ndarray], int | None, float]
    ]
    options: list[Callable] = field(default_factory=list)
    blocks: Callable[[nn.Module], tuple[list, list]] = backbone_blocks


def resolve_model(name: str) -> tuple[Path, dict[str, Any]]:
    """A local folder as is; otherwise an artifact of the attached bundles; and its provenance.

    Activates the bundles first (offline mode for every library) unless the
    caller already did.

    Returns:
        (the folder, its provenance record: bundle, artifact, ref@commit, sha256s,
        fallback taken; or, for a folder of the user's, its path and sha256s).

    Raises:
        runtime.ArtifactNotFoundError: no attached bundle holds ``name``.
    """
    from runtime import provenance

    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder, provenance.of_local(folder)
    import runtime

    if runtime.current() is None:
        runtime.activate()
    resolved = runtime.resolve_with_provenance(name)
    return resolved.path, resolved.provenance


def from_pretrained_complete(model_class, folder: Path, **kwargs):
    """``model_class.from_pretrained(folder)``, refusing weights left at random init.

    transformers only reports missing keys; a backbone with any of them would
    train from partly random weights without saying so.

    Raises:
        IncompleteWeightsError: naming the folder and the first missing keys.
    """
    # transformers prints a multi-line "LOAD REPORT" for checkpoint weights the model
    # does not use; the stack leaves the pooler out on purpose, so say that in one
    # line instead. Missing weights are an error (below), not a report.
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(folder, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise IncompleteWeightsError(
            f"{folder}: the checkpoint lacks {len(missing)} weight(s) of {model_class.__name__} "
            f"(e.g. {', '.join(missing[:3])}); they would stay randomly initialised. "
            "Check that the artifact is the model the stack expects."
        )
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        parts = sorted({k.split(".", 1)[0] for k in unused})
        print(f"{model_class.__name__}: left out on purpose: {', '.join(parts)} "
              f"({len(unused)} tensor(s) of the checkpoint the stack does not use)",
              file=sys.stderr, flush=True)
    return model


def provenance_lines(config: dict[str, Any], checkpoint: str | Path | None = None) -> list[str]:
    """The log lines saying which checkpoint and which backbone a run uses."""
    from runtime.provenance import lines

    head = [f"checkpoint: {Path(checkpoint).resolve()}"] if checkpoint is not None else []
    return head + lines(config.get("provenance"))


def load_trained(stack: EmotionStack, checkpoint: str | Path, device):
    """The model of a checkpoint written by ``train``, in eval mode, and its config.

    The architecture comes from the checkpoint's config and every weight from
    the checkpoint (loaded strictly), so no bundle is needed.
    """
    from runtime.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

    config = read_checkpoint(checkpoint)["config"]
    if config.get("stack") != stack.name:
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained by stack {config.get('stack')!r}, not {stack.name!r}; "
            f"use `bundle run {config.get('stack')} ...`"
        )
    model = stack.build(config, None)
    load_checkpoint(checkpoint, model=model)
    return model.to(device).eval(), config
