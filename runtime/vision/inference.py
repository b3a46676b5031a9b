"""A trained classifier of `landcover` / `flood`: rebuilt from its checkpoint, evaluated on a
data folder, or run on images (the binary threshold is the one stored at training)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.provenance import say_loaded
from runtime.vision.classify import (
    METRICS_NAME,
    Task,
    forward_for,
    loader_workers,
    log,
    report_labels,
    score,
)
from runtime.vision.errors import CheckpointError, DatasetError

if TYPE_CHECKING:
    import torch
    from torch import nn



@dataclass
class LoadedClassifier:
    """A trained classifier rebuilt from its checkpoint, with what it needs to run."""

    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, float]
    path: Path
    #: where the checkpoint came from (runtime.provenance: a file's sha256, or the bundle
    #: and artifact it was resolved from)
    origin: dict[str, Any] | None = None

    @property
    def task(self) -> Task:
        return Task(
            kind=self.config["task"],
            stack=self.config["stack"],
            positive_class=self.config.get("positive_class"),
        )

    @property
    def threshold(self) -> float | None:
        return self.metrics.get("val_threshold") if self.config["task"] == "binary" else None


def load_classifier(
    path: Path, *, stack: str, device: torch.device | None = None
) -> LoadedClassifier:
    """Rebuild the model of a ``train`` checkpoint (no pretrained weights needed).

    ``path`` is the file, or the id of a checkpoint artifact of the attached bundles
    (runtime.provenance.resolve_checkpoint).

    Raises:
        CheckpointError: missing file, or a checkpoint of another stack.
        ArtifactNotFoundError: no such file, nor an artifact of that name.
    """
    from runtime.resolve import resolve_checkpoint
    from runtime.train.checkpoint import load_checkpoint, read_checkpoint
    from runtime.vision.architectures import build_classifier

    found = resolve_checkpoint(path)
    path = found.path
    state = read_checkpoint(path)
    config = state.get("config") or {}
    if config.get("stack") != stack:
        raise CheckpointError(
            f"{path} was written by {config.get('stack') or 'another program'!s}, not {stack} "
            f"train; pass a best.pt written by `bundle run {stack} train`"
        )
    widths = tuple(config["widths"]) if config.get("widths") else None
    model = build_classifier(
        config["arch"],
        num_outputs=int(config["num_outputs"]),
        image_size=int(config["image_size"]),
        pretrained=False,
        widths=widths,
        in_channels=int(config.get("in_channels", 3)),
    )
    record = load_checkpoint(path, model=model)
    say_loaded(model, path, config, device, log)
    return LoadedClassifier(model=model, config=config, metrics=record.metrics, path=Path(path),
                            origin=found.provenance)


def evaluate(
    checkpoint: Path,
    data: Path,
    out: Path,
    *,
    stack: str,
    batch_size: int = 64,
    device: str = "auto",
    threshold: float | None = None,
    workers: int | None = None,
    skip_bad_files: bool = False,
) -> dict[str, Any]:
    """Score a checkpoint on a folder-per-class dataset; write metrics and confusion matrix.

    Args:
        checkpoint: ``best.pt`` from ``train``.
        data: ``DATA/CLASS/*`` with the class folders used in training.
        out: receives ``metrics.json``, ``confusion_matrix.csv`` and ``.png``.
        threshold: binary only; default the threshold stored in the checkpoint.

    Raises:
        CheckpointError, DatasetError.
    """
    from torch.utils.data import DataLoader

    from runtime.train.loop import collect_predictions
    from runtime.train.precision import choose_device, choose_precision
    from runtime.vision.images import labelled_folder
    from runtime.vision.reports import write_confusion_matrix, write_json

    dev = choose_device(device)
    loaded = load_classifier(checkpoint, stack=stack, device=dev)
    cfg, task = loaded.config, loaded.task
    if cfg.get("data_layout") == "sen1floods11":
        return _evaluate_chips(loaded, data, out, batch_size=batch_size, device=dev,
                               threshold=threshold, skip_bad_files=skip_bad_files)
    dataset = labelled_folder(
        data, image_size=int(cfg["image_size"]), mean=cfg["mean"], std=cfg["std"],
        skip_bad_files=skip_bad_files, log=log,
    )
    if list(dataset.classes) != list(cfg["classes"]):
        raise DatasetError(
            f"{data}: class folders {dataset.classes} differ from the checkpoint's {cfg['classes']}"
        )
    positive = cfg["classes"].index(task.positive_class) if task.kind == "binary" else None
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=loader_workers(workers, dev))
    policy = choose_precision(dev, "fp32")
    logits, targets = collect_predictions(
        loaded.model, loader, forward=forward_for(task, positive), policy=policy
    )
    if task.kind == "binary" and threshold is None:
        # Never pick the threshold on the data being scored: that would flatter the F1.
        threshold = loaded.threshold if loaded.threshold is not None else 0.5
    metrics, counts = score(task, logits, targets, int(cfg["num_outputs"]), threshold=threshold)
    write_confusion_matrix(counts, report_labels(task, cfg["classes"]), out)
    summary = {"checkpoint": str(loaded.path.resolve()), "data": str(data),
               "samples": len(dataset), **metrics, "provenance": cfg.get("provenance"),
               "checkpoint_provenance": loaded.origin}
    write_json(Path(out) / METRICS_NAME, summary)
    return summary


def _evaluate_chips(loaded: LoadedClassifier, data: Path, out: Path, *, batch_size: int,
                    device: Any, threshold: float | None, skip_bad_files: bool) -> dict[str, Any]:
    """A --task classify model of Sen1Floods11 chips, scored on every held-out split."""
    from torch.utils.data import DataLoader

    from runtime.train.loop import collect_predictions
    from runtime.train.precision import choose_precision
    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.reports import write_confusion_matrix, write_json

    cfg, task = loaded.config, loaded.task
    dataset = s1f.load(data, bands=cfg["bands"])
    held_out = {name: chips for name, chips in dataset.splits.items() if name != "train" and chips}
    held_out = s1f.screen(held_out, cfg["bands"], skip_bad_files=skip_bad_files, log=log,
                         action="evaluate").splits
    positive = cfg["classes"].index(task.positive_class)
    policy = choose_precision(device, "fp32")
    if threshold is None:
        threshold = loaded.threshold if loaded.threshold is not None else 0.5
    splits = {}
    for name, chips in held_out.items():
        if not chips:
            continue
        tiles = s1f.TileSet(chips, cfg["bands"], cfg["mean"], cfg["std"],
                            image_size=int(cfg["image_size"]), threshold=cfg["water_fraction"])
        logits, targets = collect_predictions(
            loaded.model, DataLoader(tiles, batch_size=batch_size),
            forward=forward_for(task, positive), policy=policy)
        metrics, counts = score(task, logits, targets, 1, threshold=threshold)
        write_confusion_matrix(counts, report_labels(task, cfg["classes"]), Path(out) / name)
        splits[name] = {"samples": len(tiles), **metrics}
    summary = {"checkpoint": str(Path(loaded.path).resolve()), "data": str(data),
               "split_source": dataset.split_source, "splits": splits,
               "provenance": cfg.get("provenance"), "checkpoint_provenance": loaded.origin}
    write_json(Path(out) / METRICS_NAME, summary)
    return summary


@dataclass
class Prediction:
    """One image's prediction."""

    path: str
    label: str
    confidence: float
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def predict(
    checkpoint: Path,
    inputs: Sequence[Path],
    *,
    stack: str,
    batch_size: int = 64,
    device: str = "auto",
    threshold: float | None = None,
    skip_bad_files: bool = False,
    out: Path | None = None,
) -> list[Prediction]:
    """Predict the class of every image in `inputs` (files or folders).

    Binary checkpoints call an image positive when its probability reaches the
    threshold (default: the one chosen on validation and stored in the checkpoint).
    With ``out``, the predictions are written there as CSV, and ``OUT.provenance.json``
    beside it says which checkpoint (file sha256, or bundle and artifact) made them.
    """
    import torch
    from torch.utils.data import DataLoader

    from runtime.train.precision import choose_device
    from runtime.vision.images import ImageFiles, checked, gather_images, image_transform

    dev = choose_device(device)
    loaded = load_classifier(checkpoint, stack=stack, device=dev)
    cfg = loaded.config
    if threshold is None:
        threshold = loaded.threshold
    if cfg.get("data_layout") == "sen1floods11":
        results = _predict_chips(loaded, inputs, device=dev, threshold=threshold,
                                 skip_bad_files=skip_bad_files)
        return _written(results, loaded, out)
    transform = image_transform(int(cfg["image_size"]), cfg["mean"], cfg["std"])
    files = ImageFiles(checked(gather_images(inputs), skip_bad_files=skip_bad_files, log=log,
                               action="predict"),
                       transform)
    classes = list(cfg["classes"])
    results: list[Prediction] = []
    with torch.no_grad():
        for images, paths in DataLoader(files, batch_size=batch_size):
            logits = loaded.model(images.to(dev)).float().cpu()
            for row, path in zip(logits, paths, strict=True):
                results.append(_prediction(loaded.task, row, path, classes, threshold))
    return _written(results, loaded, out)


def _written(results: list[Prediction], loaded: LoadedClassifier, out: Path | None) -> list[Prediction]:
    if out is not None:
        from runtime.provenance import write_beside

        write_predictions_csv(results, out)
        write_beside(out, {"checkpoint": str(loaded.path.resolve()),
                           "checkpoint_provenance": loaded.origin,
                           "provenance": loaded.config.get("provenance")})
    return results


def _predict_chips(loaded: LoadedClassifier, inputs: Sequence[Path], *, device: Any,
                   threshold: float | None, skip_bad_files: bool) -> list[Prediction]:
    """Flood / no_flood per Sen1Floods11 chip (the band files a chip's name leads to); every
    chip is read first, an unreadable one refused (or left out with ``skip_bad_files``)."""
    import torch
    from torch.nn import functional as F

    from runtime.vision import sen1floods11 as s1f
    from runtime.vision.segment import readable_chips

    cfg = loaded.config
    size = int(cfg["image_size"])
    results = []
    with torch.no_grad():
        for files in readable_chips(list(inputs), cfg["bands"], skip_bad_files=skip_bad_files):
            x = torch.from_numpy(s1f.normalise(s1f.read_bands(files, cfg["bands"]), cfg["mean"], cfg["std"]))
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
            row = loaded.model(x.to(device)).float().cpu()[0]
            first = files[s1f.sources(cfg["bands"])[0]]
            results.append(_prediction(loaded.task, row, str(first), list(cfg["classes"]), threshold))
    return results


def _prediction(
    task: Task, logits: torch.Tensor, path: str, classes: list[str], threshold: float | None
) -> Prediction:
    import torch

    if task.kind == "binary":
        p = float(torch.sigmoid(logits[0]))
        positive = str(task.positive_class)
        negative = next(c for c in classes if c != positive)
        is_positive = p >= (0.5 if threshold is None else threshold)
        return Prediction(
            path=path,
            label=positive if is_positive else negative,
            confidence=p if is_positive else 1 - p,
            probabilities={positive: p, negative: 1 - p},
        )
    probs = torch.softmax(logits, dim=0)
    best = int(probs.argmax())
    return Prediction(
        path=path,
        label=classes[best],
        confidence=float(probs[best]),
        probabilities={c: float(v) for c, v in zip(classes, probs.tolist(), strict=True)},
    )


def write_predictions_csv(predictions: Sequence[Prediction], path: Path) -> Path:
    """One row per image: path, label, confidence, then one probability column per class."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = list(predictions[0].probabilities) if predictions else []
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "confidence", *[f"p_{c}" for c in classes]])
        for p in predictions:
            row = [p.path, p.label, f"{p.confidence:.6f}"]
            writer.writerow(row + [f"{p.probabilities[c]:.6f}" for c in classes])
    return path
