"""What users hit with real data and real machines (issue 25), each with real files.

An unwritable HOME (``docker run --user``, ``runuser``), broken files in a large data
set, the download's top folder passed as the data set, float or multi-band rasters,
files that are not what an option expects, and the run's outputs (checkpoint sizes,
curves after a resume).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures.bundles import activated
from tests.synthetic_deam import make_deam
from tests.test_runtime_support import NOBODY, nobody_skip_reason, run_as_nobody
from tests.test_vision_data import colour_classes, flood_tiles

VIT_SPEC = """
[bundle]
name = "emotion-vit-real"
version = "1.0.0"

[[artifact]]
id = "vit-base-in21k"
source = "hf"
repo = "google/vit-base-patch16-224-in21k"
include = ["*.json", "*.safetensors"]
"""
VIT_FEATURES = ["--sample-rate", "16000", "--n-mels", "32", "--n-fft", "512", "--hop-length",
                "256", "--seconds", "2"]
FAST = ["--workers", "0", "--dropout", "0", "--no-progress", "--device", "cpu", "--batch-size", "8"]
CNN = ["--arch", "unet_cnn", "--image-size", "32", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    root = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64)).save_pretrained(root)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # save_pretrained writes 0600
    return root


@pytest.fixture
def vit_bundle(bundle_factory, tiny_vit) -> Path:
    return bundle_factory(VIT_SPEC, hf={"google/vit-base-patch16-224-in21k": tiny_vit})


def _world_readable(*folders: Path) -> None:
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


# --- 3. an unprivileged user whose HOME does not exist ----------------------------


@pytest.mark.slow
def test_audio_and_image_stacks_train_and_predict_as_nobody_with_home_nonexistent(
    vit_bundle, tmp_path
):
    """What `docker run --user 1234` gives: no writable HOME. librosa's numba functions
    need a cache folder and matplotlib a config folder; activate() finds writable ones."""
    if reason := nobody_skip_reason():
        pytest.skip(reason)
    import shutil

    deam = make_deam(tmp_path / "deam", n_songs=12, seconds=2.0, audio_format="mp3")
    tiles = colour_classes(tmp_path / "tiles", classes=2, per_class=6, size=32)
    _world_readable(deam.root, tiles)
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.chown(runs, *NOBODY)
    env = {"HOME": "/nonexistent", "BUNDLE_PATH": "{base}/bundle", "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
           "OMP_NUM_THREADS": "1"}
    binds = {"bundle": vit_bundle, "deam": deam.root, "tiles": tiles, "runs": runs}

    def run(module: str, *args: str):
        proc = run_as_nobody("", list(args), binds=binds, env=env, timeout=400,
                             argv0=[sys.executable, "-m", f"runtime.stacks.{module}", "--strict"])
        assert proc.returncode == 0, f"{module} {args[0]}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
        assert "cannot cache function" not in proc.stderr and "MPLCONFIGDIR" not in proc.stderr
        return proc

    run("emotion_vit", "train", "--data", "{base}/deam", "--out", "{base}/runs/vit", "--epochs", "1",
        "--val-fraction", "0.25", *VIT_FEATURES, *FAST)
    predicted = run("emotion_vit", "predict", "--checkpoint", "{base}/runs/vit/best.pt",
                    "{base}/deam/DEAM_audio/MEMD_audio", "--format", "json", "--device", "cpu",
                    "--no-progress")
    rows = json.loads(predicted.stdout)
    assert len(rows) == 12 and all(-1 <= r["valence"] <= 1 for r in rows)
    run("landcover", "train", "--data", "{base}/tiles", "--out", "{base}/runs/lc", "--epochs", "1",
        *CNN)
    assert (runs / "lc" / "curves.png").stat().st_size > 0  # matplotlib drew, as nobody
    predicted = run("landcover", "predict", "--checkpoint", "{base}/runs/lc/best.pt", "{base}/tiles",
                    "--json")
    assert len(json.loads(predicted.stdout)) == 12


@pytest.mark.slow
def test_an_error_of_the_environment_is_not_called_a_decode_failure(tmp_path):
    """A numba cache folder that cannot be written fails librosa, not the file: the error
    passes as it is, and never as "cannot decode audio file"."""
    if reason := nobody_skip_reason():
        pytest.skip(reason)
    deam = make_deam(tmp_path / "deam", n_songs=2, seconds=1.0, audio_format="mp3")
    _world_readable(deam.root)
    script = ("import sys\nfrom runtime.data.audio import AudioDecodeError, load_audio\n"
              "try:\n    load_audio(sys.argv[1], sample_rate=16000)\n"
              "except AudioDecodeError as e:\n    print('DECODE', e)\n"
              "except Exception as e:\n    print('OTHER', type(e).__name__, e)\n")
    song = next(iter(deam.audio.values())).relative_to(deam.root)
    proc = run_as_nobody(script, ["{base}/deam/" + song.as_posix()], binds={"deam": deam.root},
                         env={"HOME": "/nonexistent", "NUMBA_CACHE_DIR": "/proc/no-cache-here"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OTHER RuntimeError") and "cannot cache function" in proc.stdout


# --- 4. every bad file named, once, before training --------------------------------


def test_unreadable_songs_are_all_named_before_training_and_can_be_left_out(vit_bundle, tmp_path):
    from runtime.data import audio
    from runtime.stacks import emotion_vit

    deam = make_deam(tmp_path / "deam", n_songs=24, seconds=2.0, audio_format="mp3")
    songs = sorted(deam.audio.values())
    songs[3].write_bytes(b"")                                  # an empty file
    songs[7].write_text("<html>404 Not Found</html>" * 40)     # a download that went wrong
    songs[11].write_bytes(os.urandom(3000))                    # noise
    args = ["train", "--data", str(deam.root), "--epochs", "1", "--val-fraction", "0.25",
            *VIT_FEATURES, *FAST]
    before = audio.DECODE_CALLS
    with activated(vit_bundle, strict=True):
        failed = CliRunner().invoke(emotion_vit.cli, [*args, "--out", str(tmp_path / "a")])
    assert failed.exit_code == 1
    message = failed.output.strip().splitlines()[-1]
    assert message.startswith("Error: 3 of 24 audio files cannot be read: ")
    for bad in (songs[3], songs[7], songs[11]):
        assert str(bad) in message
    assert "empty (0 bytes)" in message and "(text, not audio)" in message
    assert "--skip-bad-files" in message and "Traceback" not in failed.output
    assert audio.DECODE_CALLS - before == 24  # one pass over the data set, each file once

    with activated(vit_bundle, strict=True):
        ok = CliRunner().invoke(emotion_vit.cli, [*args, "--out", str(tmp_path / "b"),
                                                  "--skip-bad-files", "--json"])
    assert ok.exit_code == 0, ok.output
    assert "warning: leaving out 3 of 24 audio files that cannot be read" in ok.stderr
    assert json.loads(ok.stdout)["best_checkpoint"].endswith("best.pt")


def _float_tiff(path: Path, bands: int, size: int = 16) -> Path:
    """A float32 GeoTIFF-like chip (no geo tags needed to be unreadable as RGB): ``bands``
    samples per pixel, dB-like values, as Sen1Floods11's S1Hand chips are."""
    data = (np.random.default_rng(0).normal(-15, 5, (size, size, bands))).astype("<f4").tobytes()
    entries = [(256, 3, 1, size), (257, 3, 1, size), (258, 3, 1, 32), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, bands), (278, 3, 1, size),
               (279, 4, 1, len(data)), (284, 3, 1, 1), (339, 3, 1, 3)]
    if bands > 1:
        entries[2] = (258, 3, 1, 32)  # one BitsPerSample value read for all samples
    ifd_offset = 8 + len(data)
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) if kind == 4
        else struct.pack("<HHIHH", tag, kind, count, value, 0)
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_offset) + data + ifd)
    return path


def test_unreadable_or_non_8_bit_images_are_all_named_before_training(tmp_path):
    from runtime.stacks.landcover import cli

    data = colour_classes(tmp_path / "tiles", classes=3, per_class=8, size=32)
    (data / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (data / "class_1" / "empty.jpg").write_bytes(b"")
    _float_tiff(data / "class_2" / "s1hand.tif", bands=1)
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                                      "--epochs", "1", *CNN])
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: 3 of 27 images cannot be read: ")
    assert "broken.png" in message and "empty (0 bytes)" in message
    assert "s1hand.tif" in message and "a 32-bit float image (1 band(s), TIFF)" in message
    assert not (tmp_path / "r").exists()  # refused before anything was written

    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                                      "--epochs", "1", "--skip-bad-files", *CNN, "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: leaving out 3 of 27 images" in result.stderr
    predicted = CliRunner().invoke(cli, ["predict", str(data / "class_2"), "--checkpoint",
                                         str(tmp_path / "r" / "best.pt"), "--json"])
    assert predicted.exit_code == 1 and "1 of 9 images cannot be read" in predicted.output


def test_a_multi_band_float_raster_is_refused_with_what_it_is(tmp_path):
    from runtime.stacks.flood import cli

    data = flood_tiles(tmp_path / "tiles", per_class=6)
    chip = _float_tiff(data / "flood" / "S1Hand_chip.tif", bands=2)
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                                      "--epochs", "1", *CNN])
    assert result.exit_code == 1
    assert str(chip) in result.output and "Traceback" not in result.output
    assert ("32-bit float" in result.output or "multi-band" in result.output)


# --- 5. data that would train a meaningless model ---------------------------------


def test_the_downloads_top_folder_is_refused_with_the_folder_that_holds_the_classes(tmp_path):
    """EuroSAT's download unpacks to EuroSAT/2750/<Class>/: --data EuroSAT is one class."""
    from runtime.stacks.landcover import cli

    top = tmp_path / "EuroSAT"
    colour_classes(top / "2750", classes=3, per_class=4, size=16)
    result = CliRunner().invoke(cli, ["train", "--data", str(top), "--out", str(tmp_path / "r"),
                                      "--epochs", "1", *CNN])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "1 class folder(s) (2750); a classifier needs at least two" in line
    assert f"pass --data {top / '2750'}" in line
    assert not (tmp_path / "r").exists()


# --- 7. a file that is not what the option expects: one line ------------------------


def _truncated_checkpoint(tmp_path: Path) -> Path:
    import torch

    full = io.BytesIO()
    torch.save({"format": 1, "model": {"w": torch.zeros(64, 64)}}, full)
    path = tmp_path / "cut.pt"
    path.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    return path


class _NotATensor:
    pass


@pytest.mark.parametrize("kind", ["json", "truncated", "pickle-with-code", "empty"])
def test_init_encoder_and_checkpoint_that_are_not_such_files_get_one_line(tmp_path, kind):
    import pickle

    from runtime.stacks.flood import cli

    data = flood_tiles(tmp_path / "tiles", per_class=4)
    if kind == "json":
        bad = tmp_path / "encoder.json"
        bad.write_text(json.dumps({"widths": [16, 32]}))
        looks = "JSON text"
    elif kind == "truncated":
        bad = _truncated_checkpoint(tmp_path)
        looks = "cut short or damaged"
    elif kind == "pickle-with-code":
        bad = tmp_path / "evil.pt"
        bad.write_bytes(pickle.dumps({"x": _NotATensor()}))
        looks = "refused: loading them could run code"
    else:
        bad = tmp_path / "empty.pt"
        bad.write_bytes(b"")
        looks = "empty (0 bytes)"
    runner = CliRunner()
    init = runner.invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                               "--init-encoder", str(bad), "--epochs", "1", *CNN])
    scored = runner.invoke(cli, ["predict", str(data), "--checkpoint", str(bad)])
    for result, what in ((init, f"--init-encoder {bad} is not a masked-ssl encoder.pt"),
                         (scored, f"checkpoint {bad} is not a checkpoint written by")):
        assert result.exit_code == 1
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert what in lines[0] and looks in lines[0]
        assert "weights_only=False" not in result.output and "Traceback" not in result.output


# --- 8. outputs: checkpoint sizes, curves after a resume ----------------------------


def test_best_pt_is_the_model_and_last_pt_resumes_with_whole_epochs_in_the_curves(tmp_path):
    from runtime.stacks.landcover import cli
    from runtime.train.checkpoint import read_checkpoint

    data = colour_classes(tmp_path / "tiles", classes=3, per_class=8, size=32)
    run = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(cli, ["train", "--data", str(data), "--out", str(run), "--epochs", "2",
                                *CNN])
    assert first.exit_code == 0, first.output
    best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
    assert best["optimizer"] is None and best["scheduler"] is None and best["resumable"] is False
    assert best["config"]["provenance"] == last["config"]["provenance"]
    assert last["optimizer"] is not None
    # AdamW keeps two moments per weight: best.pt is about a third of last.pt.
    assert (run / "best.pt").stat().st_size < 0.5 * (run / "last.pt").stat().st_size

    refused = runner.invoke(cli, ["train", "--data", str(data), "--out", str(run), "--epochs", "3",
                                  "--resume", str(run / "best.pt"), *CNN])
    assert refused.exit_code == 1
    assert f"--resume {run / 'last.pt'}" in refused.output and "Traceback" not in refused.output

    resumed = runner.invoke(cli, ["train", "--data", str(data), "--out", str(run), "--epochs", "3",
                                  "--resume", str(run / "last.pt"), *CNN])
    assert resumed.exit_code == 0, resumed.output
    with open(run / "curves.csv") as fh:
        epochs = [row["epoch"] for row in csv.DictReader(fh)]
    assert epochs == ["1", "2", "3"]
    assert zipfile.is_zipfile(run / "best.pt")  # torch's format, loadable with weights_only
