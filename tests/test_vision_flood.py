"""`flood`: binary detection, threshold chosen on validation and kept with the checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from tests.test_vision_data import colour_classes, flood_tiles
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_best_f1_threshold_lies_between_validation_scores_not_on_one():
    import torch

    from runtime.vision.reports import best_f1_threshold, binary_metrics

    probs = torch.tensor([0.1, 0.4, 0.35, 0.8])
    targets = torch.tensor([0, 0, 1, 1])
    # The best cut is >= 0.35 (TP 2, FP 1 -> F1 0.8; >= 0.4: F1 0.5; >= 0.8: F1 0.67); the
    # threshold is the midpoint to the next score below, 0.1: the same calls, off the sample.
    threshold = best_f1_threshold(probs, targets)
    assert threshold == pytest.approx((0.35 + 0.1) / 2)
    assert threshold not in probs.tolist()
    metrics = binary_metrics(probs, targets, threshold)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(1.0)
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    # Separable scores (ROC-AUC 1): a positive scored a little below the lowest validation
    # positive is still found; a threshold on that positive would have lost it.
    separable = torch.tensor([0.05, 0.2, 0.62, 0.7, 0.9])
    labels = torch.tensor([0, 0, 1, 1, 1])
    cut = best_f1_threshold(separable, labels)
    assert cut == pytest.approx((0.62 + 0.2) / 2)
    assert binary_metrics(torch.tensor([0.6, 0.15]), torch.tensor([1, 0]), cut)["recall"] == 1.0
    # No score below the best cut: the midpoint to 0.
    assert best_f1_threshold(torch.tensor([0.3, 0.9]), torch.tensor([1, 1])) == pytest.approx(0.15)


def test_train_keeps_the_threshold_and_predict_and_evaluate_use_it(tmp_path):
    import torch

    from runtime.stacks.flood import cli

    data = flood_tiles(tmp_path / "tiles", per_class=24)
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["train", "--data", str(data), "--out", str(run), "--arch", "unet_cnn",
         "--image-size", "32", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3",
         "--no-progress", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    val = summary["val"]
    assert summary["classes"] == ["flood", "no_flood"]  # flood sorts first: index 0 positive
    assert val["f1"] >= 0.8 and val["roc_auc"] >= 0.9
    assert {"precision", "recall", "accuracy", "threshold"} <= set(val)

    checkpoint = torch.load(run / "best.pt", weights_only=True)
    threshold = checkpoint["metrics"]["val_threshold"]
    assert val["threshold"] == pytest.approx(threshold)
    assert checkpoint["config"]["positive_class"] == "flood"
    with open(run / "confusion_matrix.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == ["not flood", "flood"]

    result = runner.invoke(
        cli, ["predict", str(data), "--checkpoint", str(run / "best.pt"), "--json"]
    )
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert len(predictions) == 48
    for p in predictions:
        assert (p["label"] == "flood") == (p["probabilities"]["flood"] >= threshold)
    right = sum(p["label"] == ("flood" if "/flood/" in p["path"] else "no_flood")
                for p in predictions)  # fmt: skip
    assert right / 48 >= 0.8

    result = runner.invoke(
        cli, ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(data),
              "--out", str(tmp_path / "eval"), "--threshold", "0", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    everything_flood = json.loads(result.stdout)
    assert everything_flood["threshold"] == 0 and everything_flood["recall"] == 1.0
    assert everything_flood["precision"] == pytest.approx(0.5)


def test_binary_stack_needs_two_class_folders_and_the_positive_one(tmp_path):
    from runtime.stacks.flood import cli

    three = colour_classes(tmp_path / "three", classes=3, per_class=2, size=8)
    result = CliRunner().invoke(
        cli, ["train", "--data", str(three), "--out", str(tmp_path / "r"), "--arch", "unet_cnn"]
    )
    assert result.exit_code == 1
    assert "exactly two class folders" in result.output and str(three) in result.output

    two = colour_classes(tmp_path / "two", classes=2, per_class=2, size=8)
    result = CliRunner().invoke(
        cli, ["train", "--data", str(two), "--out", str(tmp_path / "r"), "--arch", "unet_cnn"]
    )
    assert result.exit_code == 1
    assert "'flood'" in result.output and "--positive-class" in result.output
