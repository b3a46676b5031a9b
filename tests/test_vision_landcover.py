"""`landcover`: a CNN with torchvision weights from a read-only bundle learns land-cover colours."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from runtime.train.checkpoint import read_checkpoint
from tests.fixtures.bundles import activated
from tests.test_vision_data import (
    MOBILENET_URL,
    colour_classes,
    tiny_mobilenet_weights,
    torchvision_spec,
)
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stack_modules_import_without_torch():
    code = (
        "import sys, runtime.stacks.landcover, runtime.stacks.flood, runtime.stacks.masked_ssl\n"
        "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_train_evaluate_predict_with_bundled_mobilenet_weights(bundle_factory, tmp_path):
    import torch

    from runtime.stacks.landcover import cli
    from runtime.vision.architectures import build_classifier

    data = colour_classes(tmp_path / "eurosat", per_class=12)
    weights = tiny_mobilenet_weights(data)
    bundle = bundle_factory(
        torchvision_spec("landcover-test", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", weights),
        urls={MOBILENET_URL: weights},
    )
    run = tmp_path / "run"
    runner = CliRunner()
    with activated(bundle, strict=True):
        # The stack's model starts from the bundled file, not from a random init.
        model = build_classifier("mobilenet_v3_small", num_outputs=10, image_size=32, pretrained=True)
        served = torch.load(bundle / "torch/hub/checkpoints/mobilenet_v3_small-047dcff4.pth",
                            weights_only=True)  # fmt: skip
        torch.testing.assert_close(model.features[0][0].weight, served["features.0.0.weight"])
        assert model.classifier[-1].out_features == 10  # head replaced

        result = runner.invoke(
            cli,
            ["train", "--data", str(data), "--out", str(run), "--arch", "mobilenet_v3_small",
             "--image-size", "32", "--epochs", "3", "--batch-size", "16", "--lr", "3e-3",
             "--no-progress", "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # Chance is 0.1. MobileNetV3 keeps batch-norm statistics with momentum 0.01, so
    # three short epochs stay well below what longer fine-tuning reaches.
    assert summary["val"]["accuracy"] >= 0.3
    assert summary["val"]["macro_f1"] >= 0.2
    for name in ("best.pt", "last.pt", "metrics.json", "confusion_matrix.csv",
                 "confusion_matrix.png", "curves.csv"):  # fmt: skip
        assert (run / name).is_file(), name
    with open(run / "confusion_matrix.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == [f"class_{k}" for k in range(10)]
    counts = [[int(v) for v in row[1:]] for row in rows[1:]]
    assert sum(map(sum, counts)) == summary["val_samples"] == 20
    correct = sum(counts[k][k] for k in range(10))
    assert correct / 20 == pytest.approx(summary["val"]["accuracy"])
    # What the backbone started from, on record: the bundle's file, by sha256.
    served_sha = hashlib.sha256(
        (bundle / "torch/hub/checkpoints/mobilenet_v3_small-047dcff4.pth").read_bytes()).hexdigest()
    for record in (summary["provenance"]["backbone"],
                   read_checkpoint(run / "best.pt")["config"]["provenance"]["backbone"]):
        assert record["artifact"]["ref"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        assert record["bundle"]["name"] == "landcover-test" and record["fallback"] is None
        assert [f["sha256"] for f in record["files"]] == [served_sha]
    assert "provenance: backbone MobileNet_V3_Small_Weights.IMAGENET1K_V1" in result.stderr

    # evaluate and predict rebuild the model from the checkpoint alone: no bundle needed.
    result = runner.invoke(
        cli, ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(data),
              "--out", str(tmp_path / "eval"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["samples"] == 120 and evaluated["accuracy"] >= 0.3
    assert evaluated["provenance"] == summary["provenance"]
    assert f"checkpoint: {(run / 'best.pt').resolve()}" in result.stderr
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()

    images = [data / "class_2" / "0.png", data / "class_7" / "1.png"]
    result = runner.invoke(
        cli, ["predict", *map(str, images), "--checkpoint", str(run / "best.pt"),
              "--out", str(tmp_path / "preds.csv"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert [p["path"] for p in predictions] == [str(p) for p in images]
    for p in predictions:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    with open(tmp_path / "preds.csv") as fh:
        assert len(list(csv.reader(fh))) == 3


def test_pretrained_weights_missing_from_the_bundle_is_a_one_line_error(bundle_factory, tmp_path):
    from runtime.stacks.landcover import cli

    data = colour_classes(tmp_path / "eurosat", classes=2, per_class=3, size=16)
    weights = b"not used"
    bundle = bundle_factory(
        torchvision_spec("only-mobilenet", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", weights),
        urls={MOBILENET_URL: weights},
    )
    with activated(bundle, strict=True):
        result = CliRunner().invoke(
            cli, ["train", "--data", str(data), "--out", str(tmp_path / "run"),
                  "--arch", "vit_b_16", "--image-size", "32"],
        )  # fmt: skip
    assert result.exit_code == 1
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "ViT_B_16_Weights.IMAGENET1K_V1" in message and "vit_b_16-c867db91.pth" in message
    assert "--no-pretrained" in message


def test_checkpoint_of_another_stack_is_refused(tmp_path):
    from runtime.stacks.flood import cli
    from runtime.train.checkpoint import save_checkpoint
    from runtime.vision.unet import UNetClassifier

    ckpt = save_checkpoint(
        tmp_path / "best.pt", model=UNetClassifier(10), config={"stack": "landcover"}
    )
    data = colour_classes(tmp_path / "d", classes=2, per_class=1, size=8)
    result = CliRunner().invoke(cli, ["predict", str(data), "--checkpoint", str(ckpt)])
    assert result.exit_code == 1
    assert "landcover" in result.output and "flood" in result.output


@pytest.mark.parametrize("arch", ["vit_b_16", "mobilenet_v3_small", "resnet18", "unet_cnn"])
def test_each_architecture_gets_a_new_head_that_trains_at_the_head_rate(arch):
    """The registry's head_prefix must name exactly the replaced head (it gets the full lr)."""
    from runtime.train.optim import param_groups
    from runtime.vision.architectures import build_classifier, get_architecture

    spec = get_architecture(arch)
    model = build_classifier(arch, num_outputs=7, image_size=32, pretrained=False)
    head = [n for n, _ in model.named_parameters() if n.startswith(spec.head_prefix)]
    assert sorted(head) == sorted(f"{spec.head_prefix}{s}" for s in ("weight", "bias"))
    groups = param_groups(
        model, lr=1e-3, backbone_lr=1e-4, is_backbone=lambda n: not n.startswith(spec.head_prefix)
    )
    head_params = sum(p.numel() for g in groups if g["lr"] == 1e-3 for p in g["params"])
    weight = dict(model.named_parameters())[f"{spec.head_prefix}weight"]
    assert weight.shape[0] == 7 and head_params == weight.numel() + 7


class _Payload:
    """Pickles as "call Path.touch(marker)": what a tampered checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_weights_file_with_pickled_code_is_refused_not_run(bundle_factory, tmp_path):
    import io

    import torch

    from runtime.stacks.landcover import cli

    marker = tmp_path / "payload-ran"
    buffer = io.BytesIO()
    torch.save({"features.0.0.weight": _Payload(marker)}, buffer)
    data = buffer.getvalue()
    bundle = bundle_factory(
        torchvision_spec("tampered", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", data),
        urls={MOBILENET_URL: data},
    )
    images = colour_classes(tmp_path / "eurosat", classes=2, per_class=3, size=16)
    with activated(bundle, strict=True):
        result = CliRunner().invoke(
            cli, ["train", "--data", str(images), "--out", str(tmp_path / "run"),
                  "--arch", "mobilenet_v3_small", "--image-size", "32"],
        )  # fmt: skip
    assert result.exit_code == 1
    assert "refusing to load MobileNet_V3_Small_Weights.IMAGENET1K_V1" in result.output
    assert "mobilenet_v3_small-047dcff4.pth" in result.output
    assert not marker.exists()  # torchvision's own weights_only=False would have run it


def test_image_size_the_model_cannot_take_is_a_one_line_error(tmp_path):
    from runtime.stacks.landcover import cli

    data = colour_classes(tmp_path / "eurosat", classes=2, per_class=3, size=8)
    result = CliRunner().invoke(
        cli, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--arch", "unet_cnn",
              "--image-size", "36"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--image-size 36" in result.output and "multiple of 8" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_predict_over_a_folder_with_a_truncated_jpeg_names_it_and_writes_nothing(tmp_path):
    """As a user runs it: `bundle run --strict landcover predict` in a fresh process, from a
    checkpoint (no bundle needed), over a folder where one JPEG was cut short."""
    import io
    import os

    import numpy as np
    from PIL import Image

    from runtime.stacks.landcover import cli

    data = colour_classes(tmp_path / "eurosat", classes=3, per_class=4)
    run = tmp_path / "run"
    trained = CliRunner().invoke(cli, [
        "train", "--data", str(data), "--out", str(run), "--arch", "unet_cnn", "--image-size",
        "32", "--epochs", "1", "--no-progress", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tiles / f"{i}.jpg")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    cut = tiles / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    env = {**os.environ, "OFFLINE_BUNDLE_SEARCH_ROOTS": "", "OMP_NUM_THREADS": "1"}
    env.pop("BUNDLE_PATH", None)
    command = [sys.executable, "-m", "builder", "run", "--strict", "landcover", "predict",
               "--checkpoint", str(run / "best.pt"), str(tiles), "--out", str(tmp_path / "p.csv")]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1, refused.stderr
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: 1 of 4 images cannot be read: ")
    assert f"{cut}: image file is truncated" in message
    assert message.endswith("--skip-bad-files to predict without them")
    assert "Traceback" not in refused.stderr and not (tmp_path / "p.csv").exists()
    skipped = subprocess.run([*command, "--skip-bad-files"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert skipped.returncode == 0, skipped.stderr
    assert f"leaving out 1 of 4 images that cannot be read (--skip-bad-files): {cut}" in skipped.stderr
    with open(tmp_path / "p.csv") as fh:
        assert len(list(csv.reader(fh))) == 4  # header and the three readable tiles
