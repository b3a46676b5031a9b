"""`bundle publish --as model` against the Kaggle API stand-in (real kaggle client), and
bundles mounted as Kaggle Models found by the runtime, offline and strict."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.publish.kaggle_models import publish_model
from runtime.manifest import read_manifest
from tests.fixtures.kaggleserver import KEY, TOKEN, USERNAME
from tests.test_kaggle import (
    SNAP,
    assert_mounted_bundle_is_complete,
    files_v1,
    make_bundle,
    run_cli,
)

ROOT = Path(__file__).resolve().parents[1]
HANDLE = f"{USERNAME}/tiny-bundle-test/pytorch/default"


def model_calls(server, method: str) -> list:
    return [c for c in server.calls if c.method == method]


def test_first_publish_creates_the_model_and_its_variation_with_every_file(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path / "v1", files_v1())
    os.chmod(bundle, 0o555)  # read-only, as after a build

    code, out, err = run_cli(str(bundle), "--as", "model", "--json")

    assert code == 0, err
    report = json.loads(out)
    assert report["action"] == "create" and report["dataset"] == HANDLE
    digest = read_manifest(bundle).digest
    (model,) = model_calls(kaggle_env, "CreateModel")
    assert model.body["ownerSlug"] == USERNAME and model.body["slug"] == "tiny-bundle-test"
    assert model.body["title"] == "Tiny bundle for tests" and model.body["isPrivate"] is True
    assert digest in model.body["description"]
    (instance,) = model_calls(kaggle_env, "CreateModelInstance")
    body = instance.body["body"]
    assert body["instanceSlug"] == "default" and body["framework"] == "MODEL_FRAMEWORK_PY_TORCH"
    assert body["licenseName"] == "Other"  # the spec's "other", in Kaggle Models' words
    assert digest in body["overview"]
    # The first cell, as it arrives (the client bleach-cleans Usage: nothing to escape in it).
    assert "/kaggle/input/tiny-bundle-test/pytorch/default/[0-9]*/wheels" in body["usage"]
    assert "&gt;" not in body["usage"] and "&amp;" not in body["usage"]
    inst = kaggle_env.model_instance(HANDLE)
    # Every file at its path, as kagglehub uploads (no archive for Kaggle to unpack).
    manifest = read_manifest(bundle)
    listed = [f.path for a in manifest.artifacts for f in a.files] + [f.path for f in manifest.extra_files]
    assert sorted(inst.versions[0].files) == sorted(["README.md", "bundle.json", *listed])
    assert not [name for name in inst.versions[0].files if name.endswith(".zip")]
    mounted = kaggle_env.mount_model(HANDLE, tmp_path / "kaggle" / "input")
    assert mounted == tmp_path / "kaggle/input/tiny-bundle-test/pytorch/default/1"
    assert_mounted_bundle_is_complete(mounted, bundle)
    os.chmod(bundle, 0o755)


def test_same_digest_publishes_nothing_and_a_changed_bundle_is_a_new_version(kaggle_env, tmp_path):
    first = make_bundle(tmp_path / "v1", files_v1())
    assert publish_model(first, quiet=True).action == "create"
    kaggle_env.calls.clear()
    assert publish_model(first, quiet=True).action == "unchanged"
    assert not {"StartBlobUpload", "PUT", "CreateModel", "CreateModelInstance",
                "CreateModelInstanceVersion"} & set(kaggle_env.methods())

    changed = files_v1()
    changed[f"{SNAP}/model.safetensors"] = os.urandom(4096)
    second = make_bundle(tmp_path / "v2", changed, version="1.1.0")
    code, out, err = run_cli(str(second), "--as", "model", "-m", "retrained")
    assert code == 0, err
    assert "added a version to" in out and HANDLE in out
    (version,) = model_calls(kaggle_env, "CreateModelInstanceVersion")
    digest = read_manifest(second).digest
    notes = version.body["body"]["versionNotes"]
    assert notes.startswith("retrained") and digest in notes and "1.1.0" in notes
    assert digest in kaggle_env.model_instance(HANDLE).overview  # where the next run reads it
    assert_mounted_bundle_is_complete(kaggle_env.mount_model(HANDLE, tmp_path / "in"), second)

    kaggle_env.calls.clear()
    code, out, err = run_cli(str(second), "--as", "model")
    assert code == 0 and "already holds digest" in out and "nothing uploaded" in out
    assert len(kaggle_env.model_instance(HANDLE).versions) == 2


def _changed(tmp_path: Path, version: str = "1.1.0") -> Path:
    changed = files_v1()
    changed[f"{SNAP}/model.safetensors"] = os.urandom(4096)
    return make_bundle(tmp_path / f"v{version}", changed, version=version)


def test_a_version_made_before_its_record_failed_is_finished_by_a_rerun_without_uploading(
        kaggle_env, tmp_path):
    first = make_bundle(tmp_path / "v1", files_v1())
    assert publish_model(first, quiet=True).action == "create"
    second = _changed(tmp_path)
    # The version is made; the overview update that records it answers 500.
    kaggle_env.fault("UpdateModelInstance", "500", "backend error", after=1)
    code, out, err = run_cli(str(second), "--as", "model")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert f"version 2 of {HANDLE} holds this bundle, but recording it" in line
    assert "backend error" in line and "Run the same command again to finish; it uploads nothing" in line
    assert len(kaggle_env.model_instance(HANDLE).versions) == 2
    assert_mounted_bundle_is_complete(kaggle_env.mount_model(HANDLE, tmp_path / "in"), second)

    kaggle_env.calls.clear()
    code, out, err = run_cli(str(second), "--as", "model")
    assert code == 0, err
    assert "version 2 already holds digest" in out and "recorded it in the variation's overview" in out
    assert not {"StartBlobUpload", "PUT", "CreateModelInstanceVersion"} & set(kaggle_env.methods())
    assert len(kaggle_env.model_instance(HANDLE).versions) == 2  # no duplicate version 3
    assert read_manifest(second).digest in kaggle_env.model_instance(HANDLE).overview
    assert "pending:" not in kaggle_env.model_instance(HANDLE).overview
    assert publish_model(second, quiet=True).action == "unchanged"


def test_a_failed_upload_of_a_new_version_is_uploaded_again_by_the_rerun(kaggle_env, tmp_path):
    first = make_bundle(tmp_path / "v1", files_v1())
    publish_model(first, quiet=True)
    second = _changed(tmp_path)
    kaggle_env.fault("CreateModelInstanceVersion", "500", "try later")
    code, out, err = run_cli(str(second), "--as", "model")
    assert code == 1 and "try later" in err
    assert len(kaggle_env.model_instance(HANDLE).versions) == 1
    # Version 1 still holds the first bundle: not "unchanged" for it, nor for the second.
    assert publish_model(first, quiet=True).action == "unchanged"
    result = publish_model(second, quiet=True)
    assert result.action == "version" and len(kaggle_env.model_instance(HANDLE).versions) == 2
    assert publish_model(second, quiet=True).action == "unchanged"


def test_an_existing_model_gets_a_new_variation_under_the_handle_given(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path / "v1", files_v1())
    publish_model(bundle, quiet=True)
    handle = f"{USERNAME}/tiny-bundle-test/transformers/fp16"
    result = publish_model(bundle, handle=handle, quiet=True, license_name="Apache 2.0")
    assert result.action == "create variation" and result.dataset == handle
    assert len(model_calls(kaggle_env, "CreateModel")) == 1
    body = model_calls(kaggle_env, "CreateModelInstance")[-1].body["body"]
    assert body["framework"] == "MODEL_FRAMEWORK_TRANSFORMERS" and body["licenseName"] == "Apache 2.0"
    assert kaggle_env.model_instance(handle).versions[0].number == 1


@pytest.mark.parametrize(("method", "kind", "message"), [
    ("CreateModelInstance", "error", "License name is not recognised"),
    ("CreateModel", "500", "Model service unavailable"),
])
def test_refusals_end_nonzero_with_the_servers_message(kaggle_env, tmp_path, method, kind, message):
    kaggle_env.fault(method, kind, message, times=3)
    code, out, err = run_cli(str(make_bundle(tmp_path, files_v1())), "--as", "model")
    assert code != 0 and message in err and "Traceback" not in err + out


def test_a_refused_upload_fails_loudly_and_makes_no_variation(kaggle_env, tmp_path):
    kaggle_env.fault("PUT", "500", "blob store down")
    code, out, err = run_cli(str(make_bundle(tmp_path, files_v1())), "--as", "model")
    assert code != 0 and "refused the bytes of" in err and "nothing was published" in err
    assert "CreateModelInstance" not in kaggle_env.methods()


def test_no_credential_reaches_anything_the_model_publish_produces(kaggle_env, tmp_path, capfd):
    secrets = [KEY, TOKEN, base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()]
    code, out, err = run_cli(str(make_bundle(tmp_path / "v1", files_v1())), "--as", "model", "--json")
    assert code == 0, err
    changed = files_v1()
    changed["notebooks/tiny.ipynb"] = b'{"cells": [2]}'
    code2, out2, err2 = run_cli(str(make_bundle(tmp_path / "v2", changed)), "--as", "model")
    assert code2 == 0, err2
    captured = capfd.readouterr()
    haystacks = [out, err, out2, err2, captured.out, captured.err]
    haystacks += [json.dumps(c.body) for c in kaggle_env.calls if c.method != "IntrospectToken"]
    uploaded = b"".join(kaggle_env.uploads)
    for secret in secrets:
        assert secret.encode() not in uploaded
        assert not [h[:200] for h in haystacks if secret in h]


def test_datasets_stay_the_default_and_options_of_the_other_target_are_refused(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path, files_v1())
    code, out, err = run_cli(str(bundle))
    assert code == 0, err
    assert len(model_calls(kaggle_env, "CreateDataset")) == 1 and not model_calls(kaggle_env, "CreateModel")
    assert run_cli(str(bundle), "--handle", HANDLE)[0] == 2
    assert run_cli(str(bundle), "--as", "model", "--dataset", "a/b")[0] == 2
    code, out, err = run_cli(str(bundle), "--as", "model", "--handle", "Alice/x/pytorch/v")
    assert code != 0 and "owner" in err


# --- the runtime: bundles mounted as Kaggle Models ------------------------------------------

FIND_AND_LOAD = """
import json, sys
import runtime
act = runtime.activate(strict=True)
from transformers import ViTModel
model = ViTModel.from_pretrained("org/km-vit")   # unmodified loading code
print("RESULT " + json.dumps({"bundles": [[b.name, b.version, str(b.path)] for b in act.bundles],
                               "hidden": model.config.hidden_size}))
"""


def test_bundles_mounted_as_kaggle_models_are_found_offline_and_the_highest_version_is_used(
        kaggle_env, bundle_factory, hub, tmp_path):
    from transformers import ViTConfig, ViTModel

    from runtime.constants import DEFAULT_SEARCH_ROOTS
    from tests.fixtures.bundles import make_read_only

    made = []
    for version, hidden in (("1.0.0", 32), ("1.1.0", 48)):
        folder = tmp_path / f"vit-{hidden}"
        ViTModel(ViTConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(folder)
        made.append(bundle_factory(f'''
            [bundle]
            name = "km-bundle"
            version = "{version}"
            title = "Kaggle Models bundle"

            [[artifact]]
            id = "km-vit"
            source = "hf"
            repo = "org/km-vit"
            ''', hf={"org/km-vit": folder}))
    handle = f"{USERNAME}/km-bundle/pytorch/default"
    assert publish_model(made[0], quiet=True).action == "create"
    assert publish_model(made[1], quiet=True).action == "version"

    # Versions 1 and 2 attached in the older layout; version 2 alone in the newer one.
    older, newer = tmp_path / "a" / "kaggle" / "input", tmp_path / "b" / "kaggle" / "input"
    for v in (1, 2):
        kaggle_env.mount_model(handle, older, version=v)
    kaggle_env.mount_model(handle, newer, version=2, layout="models-owner")
    make_read_only(tmp_path / "a")
    make_read_only(tmp_path / "b")

    for base, want in ((older, older / "km-bundle/pytorch/default/2"),
                       (newer, newer / f"models/{USERNAME}/km-bundle/pytorch/default/2")):
        roots = os.pathsep.join(str(base.parent.parent) + p for p in DEFAULT_SEARCH_ROOTS
                                if p.startswith("/kaggle/input"))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BUNDLE_PATH": "", "OFFLINE_BUNDLE_SEARCH_ROOTS": roots,
               "HF_ENDPOINT": "https://huggingface.co"}
        proc = subprocess.run([sys.executable, "-c", FIND_AND_LOAD], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(proc.stdout.split("RESULT ", 1)[1])
        assert result["bundles"] == [["km-bundle", "1.1.0", str(want)]]
        assert result["hidden"] == 48  # version 2's weights, loaded from the mount
        doctor = subprocess.run([sys.executable, "-m", "builder", "doctor"], env=env, capture_output=True,
                                text=True, timeout=300)
        assert "Kaggle Model" in doctor.stdout and "pytorch/default, version 2" in doctor.stdout, doctor.stdout
        if base == older:
            assert "also attached: version 1, not used" in doctor.stdout


def test_doctor_says_which_copy_loads_when_a_bundle_is_attached_as_dataset_and_as_model(
        kaggle_env, tmp_path, monkeypatch):
    """The older version attached as a dataset, the newer as a Kaggle Model: a run loads the
    dataset's copy (found first), and doctor says so instead of praising the model's."""
    from click.testing import CliRunner

    from builder.cli import main
    from runtime.constants import DEFAULT_SEARCH_ROOTS
    from tests.test_kaggle import DATASET

    older = make_bundle(tmp_path / "v1", files_v1(), version="1.0.0")
    newer = make_bundle(tmp_path / "v2", {**files_v1(), "notebooks/tiny.ipynb": b'{"v": 2}'},
                        version="1.1.0")
    assert run_cli(str(older))[0] == 0  # the dataset
    assert publish_model(newer, quiet=True).action == "create"  # the model
    kaggle_input = tmp_path / "kaggle" / "input"
    dataset_copy = kaggle_env.mount(DATASET, kaggle_input / "datasets" / DATASET)
    model_copy = kaggle_env.mount_model(HANDLE, kaggle_input, layout="models-owner")
    roots = os.pathsep.join(str(tmp_path) + p for p in DEFAULT_SEARCH_ROOTS if p.startswith("/kaggle/input"))
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", roots)
    monkeypatch.delenv("BUNDLE_PATH", raising=False)

    result = CliRunner().invoke(main, ["doctor", "--json"])
    report = json.loads(result.stdout)
    by_path = {b["path"]: b for b in report["bundles"]}
    assert by_path[str(dataset_copy)]["shadowed"] is None  # what a run loads
    hidden = by_path[str(model_copy)]["shadowed"]
    assert hidden["by"] == str(dataset_copy) and hidden["by_version"] == "1.0.0"
    assert set(hidden["artifacts"]) == set(by_path[str(model_copy)]["artifacts"])
    text = CliRunner().invoke(main, ["doctor"]).stdout
    assert f"NOT USED: every artifact it holds is loaded from {dataset_copy} (version 1.0.0" in text


def test_a_refused_model_publish_points_at_the_model_owner_not_a_dataset(kaggle_env, tmp_path):
    kaggle_env.fault("GetModel", "403", "Permission denied")
    code, out, err = run_cli(str(make_bundle(tmp_path, files_v1())), "--as", "model",
                             "--handle", "someone-else/tiny-bundle-test")
    assert code == 1
    assert "Permission denied" in err and "the model's owner (--handle" in err
    assert "dataset" not in err.strip().splitlines()[-1]
