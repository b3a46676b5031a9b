"""emotion-distill end to end, offline: a tiny emotion-vit teacher trained from a
read-only bundle, a conditional spectrogram GAN, a real timm MobileViT student
whose weights come from the same bundle (through the Hub stand-in and the real
builder), distillation and the teacher/student report."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from runtime.stacks import emotion_distill, emotion_vit, get_stack
from runtime.train.checkpoint import read_checkpoint
from tests import test_emotion_stacks as emotion_stacks_tests
from tests.fixtures.bundles import activated
from tests.test_emotion_stacks import FAST, VIT_FEATURES, invoke

# Their module fixtures, shared: a tiny ViT (+ image processor) and the synthetic DEAM set.
tiny_models = emotion_stacks_tests.tiny_models
deam = emotion_stacks_tests.deam

pytestmark = pytest.mark.slow

STUDENT = (
    "mobilevit_xxs.cvnets_in1k"  # the real timm MobileViT, random weights "published" as timm/...
)
SPEC = f"""
[bundle]
name = "emotion-distill-test"
version = "1.0.0"
stacks = ["emotion-vit", "emotion-distill"]

[[artifact]]
id = "vit-base-in21k"
source = "hf"
repo = "google/vit-base-patch16-224-in21k"
include = ["*.json", "*.safetensors"]

[[artifact]]
id = "mobilevit-xxs"
source = "timm"
model = "{STUDENT}"
"""
# 32x32 student inputs: MobileViT's last stage is 1x1 there, and a step costs ~3x less than at 64.
STUDENT_OPTS = ["--student", "mobilevit_xxs", "--image-size", "32"]
CPU = ["--no-progress", "--device", "cpu", "--batch-size", "8"]  # train-gan and evaluate

_built: dict[str, Path] = {}


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    """timm's real mobilevit_xxs (random init) saved the way timm's Hub repos are."""
    import timm
    from timm.models import save_for_hf

    folder = tmp_path_factory.mktemp("mobilevit")
    torch.manual_seed(0)
    save_for_hf(timm.create_model(STUDENT, pretrained=False), str(folder), safe_serialization=True)
    for path in folder.rglob("*"):
        path.chmod(0o644)  # save_for_hf writes 0600
    return folder


@pytest.fixture
def teacher_bundle(bundle_factory, tiny_models, tiny_student, deam, tmp_path_factory):
    """(read-only bundle, teacher best.pt): emotion-vit trained offline from the bundle, once."""
    if not _built:
        bundle = bundle_factory(
            SPEC,
            hf={
                "google/vit-base-patch16-224-in21k": tiny_models["vit"],
                f"timm/{STUDENT}": tiny_student,
            },
        )
        out = tmp_path_factory.mktemp("teacher")
        with activated(bundle, strict=True):
            invoke(
                emotion_vit.cli,
                ["train", "--data", deam.root, "--out", out, "--epochs", 12, "--lr", "1e-3",
                 "--backbone-lr", "1e-3", *VIT_FEATURES, *FAST],
            )  # fmt: skip
        _built.update(bundle=bundle, teacher=out / "best.pt")
    return _built["bundle"], _built["teacher"]


def test_gan_distill_evaluate_offline_from_the_bundle(teacher_bundle, deam, tmp_path):
    from builder.cli import main as bundle_cli

    bundle, teacher = teacher_bundle
    timings = {}

    # 1. The GAN: a few steps with every stabiliser on, finite losses, samples written.
    gan_out = tmp_path / "gan"
    started = time.perf_counter()
    with activated(bundle, strict=True):
        gan = json.loads(
            invoke(
                emotion_distill.cli,
                [
                    "train-gan",
                    "--teacher",
                    teacher,
                    "--data",
                    deam.root,
                    "--out",
                    gan_out,
                    "--size",
                    32,
                    "--z-dim",
                    16,
                    "--width",
                    8,
                    "--epochs",
                    3,
                    "--sample-every",
                    1,
                    "--g-steps",
                    2,
                    "--d-steps",
                    1,
                    "--noise-start",
                    0.2,
                    "--json",
                    *CPU,
                ],
            )  # fmt: skip
        )
    timings["gan"] = time.perf_counter() - started
    rows = list(csv.DictReader(open(gan_out / "gan_curves.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
        assert 0 < float(row["d_real"]) < 1 and 0 < float(row["d_fake"]) < 1
    noise = [float(r["noise_std"]) for r in rows]
    assert noise[0] > noise[1] > noise[2] >= 0  # instance noise decays over training
    assert gan["g_updates"] == 2 * gan["d_updates"] > 0  # generator/discriminator update ratio
    assert (gan_out / "gan_curves.png").stat().st_size > 0
    assert sorted(p.name for p in (gan_out / "samples").iterdir()) == [
        "epoch_001.png", "epoch_002.png", "epoch_003.png"
    ]  # fmt: skip
    generator = read_checkpoint(gan_out / "generator.pt")  # weights_only=True
    assert generator["config"]["gan"]["d_lr"] < generator["config"]["gan"]["g_lr"]

    # 2. Distillation through `bundle run`, student weights from the read-only bundle,
    #    training set enlarged with GAN samples, all three loss terms on.
    student_out = tmp_path / "student"
    started = time.perf_counter()
    with activated(bundle, strict=True):
        result = CliRunner().invoke(
            bundle_cli,
            ["run", "emotion-distill", "distill", "--teacher", str(teacher), "--data",
             str(deam.root), "--out", str(student_out), *STUDENT_OPTS, "--gan",
             str(gan_out / "generator.pt"), "--gan-samples", "16", "--feature-weight", "0.5",
             "--epochs", "8", "--lr", "3e-3", "--backbone-lr", "3e-3", "--json", *FAST],
            catch_exceptions=False,
        )  # fmt: skip
    timings["distill"] = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    print("timings", timings, "summary", {k: v for k, v in summary.items() if k != "history"})
    assert summary["pretrained_student"] and summary["student"] == STUDENT
    assert summary["gan_samples"] == 16
    # GAN and student saw the teacher's training songs only, never its validation songs.
    n_val = summary["history"][0]["val_samples"]
    assert gan["train_songs"] == summary["train_songs"] == len(deam.labels) - n_val
    parts = summary["loss_parts"]  # every term logged per epoch; the label term goes down
    assert [p["epoch"] for p in parts] == list(range(1, 9))
    assert all(set(p) == {"epoch", "supervised", "output", "feature"} for p in parts)
    assert parts[-1]["supervised"] < parts[0]["supervised"]
    # The untrained student (random head) is no better than guessing; the distilled one is.
    assert summary["best_val_ccc_mean"] > summary["initial_val_ccc_mean"] + 0.25
    assert summary["best_val_ccc_mean"] > 0.3

    # 3. evaluate: same validation split, figures consistent with the two models.
    report = json.loads(
        invoke(
            emotion_distill.cli,
            [
                "evaluate",
                "--teacher",
                teacher,
                "--student",
                student_out / "best.pt",
                "--data",
                deam.root,
                "--latency-runs",
                3,
                "--json",
                *CPU,
            ],
        )  # fmt: skip
    )
    assert Path(report["report"]) == student_out / "distill_report.json"
    assert json.loads(Path(report["report"]).read_text())["compression"] == report["compression"]
    assert Path(report["chart"]).stat().st_size > 0
    t, s = report["teacher"], report["student"]
    assert s["ccc_mean"] == pytest.approx(summary["best_val_ccc_mean"], abs=1e-5)
    assert t["ccc_mean"] == pytest.approx(summary["teacher_val_ccc_mean"], abs=1e-5)
    assert report["retention"] == pytest.approx(s["ccc_mean"] / t["ccc_mean"])
    teacher_model = emotion_vit.STACK.build(read_checkpoint(teacher)["config"], None)
    assert t["params"] == sum(p.numel() for p in teacher_model.parameters())
    import timm

    backbone = timm.create_model(STUDENT, pretrained=False, num_classes=0)
    head = 320 * 2 + (320 * 512 + 512) + (512 * 128 + 128) + (128 * 2 + 2)  # LayerNorm + 3 Linear
    assert s["params"] == sum(p.numel() for p in backbone.parameters()) + head
    assert report["compression"] == pytest.approx(t["params"] / s["params"])
    assert s["checkpoint_bytes"] == (student_out / "best.pt").stat().st_size
    assert 0 < s["weights_bytes"] < s["checkpoint_bytes"]  # no optimiser state, no projector
    assert s["cpu_ms_per_clip"] > 0 and t["cpu_ms_per_clip"] > 0
    assert (t["gpu_ms_per_clip"] is None) == (not torch.cuda.is_available())
    assert report["samples"] == summary["history"][0]["val_samples"]


def test_student_backbone_holds_exactly_the_bundled_weights(teacher_bundle, tiny_student):
    from safetensors.torch import load_file

    from runtime.distill.student import build_student, student_config, student_weights

    bundle, _ = teacher_bundle
    with activated(bundle, strict=True):
        weights = student_weights("mobilevit_xxs")  # untagged name: timm's default tag
        config = student_config(
            weights.name, image_size=32, dropout=0.0, teacher_dim=None, top_db=80.0
        )
        model = build_student(config, weights)
    assert weights.name == STUDENT and weights.file.is_relative_to(bundle)
    saved = load_file(tiny_student / "model.safetensors")
    state = model.backbone.state_dict()
    assert set(saved) - set(state) == {"head.fc.weight", "head.fc.bias"}  # classifier left out
    assert all(torch.equal(state[k], saved[k]) for k in state)


def test_declared_student_weights_missing_is_a_one_line_error_not_random_weights(
    bundle_factory, tiny_models, tiny_student, teacher_bundle, deam, tmp_path
):
    _, teacher = teacher_bundle
    bundle = bundle_factory(
        SPEC,
        hf={
            "google/vit-base-patch16-224-in21k": tiny_models["vit"],
            f"timm/{STUDENT}": tiny_student,
        },
        read_only=False,
    )
    (weights,) = bundle.glob(
        "hf/models--timm--mobilevit_xxs.cvnets_in1k/snapshots/*/model.safetensors"
    )
    weights.unlink()  # declared in bundle.json, gone from the folder
    with activated(bundle, strict=True):
        result = CliRunner().invoke(
            emotion_distill.cli,
            ["distill", "--teacher", str(teacher), "--data", str(deam.root), "--out",
             str(tmp_path / "o"), *STUDENT_OPTS, *FAST],
        )  # fmt: skip
    assert result.exit_code != 0
    assert "mobilevit-xxs" in result.output and STUDENT in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "--no-pretrained-student" in result.output  # the way out is named
    assert not (tmp_path / "o" / "last.pt").exists()

    # Random student weights only when asked for, and recorded as such.
    with activated(bundle, strict=True):
        summary = json.loads(
            invoke(
                emotion_distill.cli,
                [
                    "distill",
                    "--teacher",
                    teacher,
                    "--data",
                    deam.root,
                    "--out",
                    tmp_path / "o",
                    *STUDENT_OPTS,
                    "--no-pretrained-student",
                    "--epochs",
                    1,
                    "--json",
                    *FAST,
                ],
            )  # fmt: skip
        )
    assert summary["pretrained_student"] is False
    assert read_checkpoint(tmp_path / "o" / "last.pt")["config"]["pretrained"] is False


def test_ccc_loss_is_one_minus_the_ccc_the_reports_use():
    from runtime.distill.losses import ccc_loss
    from runtime.train.metrics import ccc

    torch.manual_seed(0)
    target = torch.rand(50, 2) * 2 - 1
    pred = 0.6 * target + 0.2 + 0.1 * torch.randn(50, 2)
    assert float(ccc_loss(pred, target)) == pytest.approx(
        1 - float(ccc(pred, target).mean()), abs=1e-5
    )


def test_distillation_loss_weights_each_term_and_features_compare_directions_only():
    import torch.nn.functional as F

    from runtime.distill.losses import DistillWeights, distillation_loss

    torch.manual_seed(0)
    pred, target, teacher = torch.randn(8, 2), torch.randn(8, 2), torch.randn(8, 2)
    feats = torch.randn(8, 16)
    weights = DistillWeights(supervised=0.5, output=2.0, feature=3.0)
    total, parts = distillation_loss(
        pred, target, teacher, weights=weights, student_features=5 * feats, teacher_features=feats
    )
    assert parts["feature"] == pytest.approx(0.0, abs=1e-6)  # same direction, 5x the scale
    expected = 0.5 * F.mse_loss(pred, target) + 2.0 * F.mse_loss(pred, teacher)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="teacher's width"):
        distillation_loss(pred, target, teacher, weights=weights,
                          student_features=feats, teacher_features=torch.randn(8, 4))  # fmt: skip
    with pytest.raises(ValueError, match="at least one"):
        DistillWeights(supervised=0, output=0, feature=0)


def test_generated_samples_follow_their_condition_and_seed():
    from runtime.data.spectrogram import gan_image_to_db
    from runtime.distill.data import GeneratedSpectrograms
    from runtime.distill.gan import GanShape, Generator, generate

    torch.manual_seed(0)
    gen = Generator(GanShape(size=16, z_dim=8, width=8))
    cond = torch.tensor([[0.5, -0.5], [-0.9, 0.9], [0.0, 0.0]])
    images = generate(gen, cond, seed=3)
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1
    assert torch.equal(images, generate(gen, cond, seed=3))
    assert not torch.equal(images, generate(gen, cond, seed=4))
    spec = gan_image_to_db(images, top_db=80.0)
    assert spec.min() >= -80 and spec.max() <= 0
    dataset = GeneratedSpectrograms(spec, cond, shape=(32, 63))  # the real features' shape
    item, label = dataset[1]
    assert item.shape == (32, 63) and torch.equal(label, cond[1])


def test_shipped_spec_declares_what_the_default_commands_load():
    from builder.spec import load_spec
    from runtime.distill.student import full_model_name

    spec = load_spec(Path(__file__).parent.parent / "bundles" / "emotion-distill.toml")
    by_id = {a.id: a for a in spec.artifacts}
    refs = {a.get("repo") or a.get("model") for a in spec.artifacts}
    distill_needs = get_stack("emotion-distill").artifacts
    assert set(distill_needs) | set(get_stack("emotion-vit").artifacts) <= refs
    assert {"emotion-vit", "emotion-distill"} <= set(spec.stacks)
    # `distill` without --student resolves exactly the timm weights the spec declares.
    (student,) = [a for a in spec.artifacts if a.source == "timm"]
    assert student.get("model") in distill_needs
    assert student.get("model") == full_model_name(emotion_distill.DEFAULT_STUDENT)
    assert by_id["vit-base-in21k"].fallbacks == ["vit-base"]
