"""`bundle build` end to end against the local Hub stand-in and file server.

Real models (tiny, random-initialised) are saved with the real libraries, served
over HTTP by the stand-ins, built into bundles with the real builder, and loaded
back with the real loading code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from runtime.manifest import read_manifest
from tests.fixtures.bundles import activated

MNV3_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"
TIMM_MODEL = "test_vit.r160_in1k"


# --- tiny models -------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_vit_folder(tmp_path_factory) -> Path:
    """A random-initialised ViT saved with save_pretrained (config.json + model.safetensors)."""
    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )
    ViTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_timm_folder(tmp_path_factory) -> Path:
    """timm's own tiny test model, saved the way timm's Hub repos are (save_for_hf)."""
    import timm
    from timm.models import save_for_hf

    folder = tmp_path_factory.mktemp("tiny-timm")
    model = timm.create_model(TIMM_MODEL, pretrained=False)
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_tv_weights() -> bytes:
    """A torchvision state dict file (mobilenet_v3_small, random init), as bytes."""
    import torch
    import torchvision

    buf = io.BytesIO()
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=10).state_dict(), buf)
    return buf.getvalue()


def write_spec(folder: Path, text: str, name: str = "spec.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).strip() + "\n")
    return path


def cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def build_args(spec: Path, tmp_path: Path, *more) -> list:
    """`bundle build SPEC` into tmp_path/out with a store of its own, no progress bars."""
    return ["build", spec, "--out", tmp_path / "out", "--store", tmp_path / "store", "--no-progress", *more]


def store_blobs(store: Path) -> set[str]:
    return {p.name for p in (store / "blobs").rglob("*") if p.is_file()}


# --- hf ----------------------------------------------------------------------


HF_SPEC = """
[bundle]
name = "tiny-hf"
version = "1.0.0"
title = "Tiny ViT test bundle"

[[artifact]]
id = "vit"
source = "hf"
repo = "org/tiny-vit"
"""


def test_hf_artifact_is_snapshotted_into_the_hub_cache_layout(bundle_factory, tiny_vit_folder):
    bundle = bundle_factory(HF_SPEC, hf={"org/tiny-vit": tiny_vit_folder})

    art = read_manifest(bundle).artifact("vit")
    commit = art.commit
    snap = bundle / "hf/models--org--tiny-vit/snapshots" / commit
    assert art.path == snap.relative_to(bundle).as_posix()
    assert (bundle / "hf/models--org--tiny-vit/refs/main").read_bytes() == commit.encode()
    for name in ("config.json", "model.safetensors"):
        assert (snap / name).read_bytes() == (tiny_vit_folder / name).read_bytes()
    assert not any(p.is_symlink() for p in bundle.rglob("*"))
    assert json.loads((bundle / "dataset-metadata.json").read_text()) == {
        "id": "tiny-hf", "title": "Tiny ViT test bundle", "licenses": [{"name": "other"}],
    }
    assert 'runtime.resolve("vit")' in (bundle / "README.md").read_text()

    # huggingface_hub finds the snapshot offline through refs/main, with no request.
    from huggingface_hub import hf_hub_download

    found = hf_hub_download("org/tiny-vit", "config.json", cache_dir=bundle / "hf",
                            local_files_only=True)
    assert Path(found) == snap / "config.json"
    from transformers import ViTModel

    assert ViTModel.from_pretrained(snap).config.hidden_size == 32


def test_hub_500_on_a_file_is_retried_and_the_build_succeeds(
    hub, tiny_vit_folder, tmp_path, bundle_store
):
    hub.add_repo("org/flaky-vit", tiny_vit_folder)
    hub.fault("/org/flaky-vit/resolve/*/model.safetensors", "500", times=2)
    spec = write_spec(tmp_path, HF_SPEC.replace("org/tiny-vit", "org/flaky-vit"))
    result = cli(*build_args(spec, tmp_path))
    assert result.exit_code == 0, result.output
    gets = [r for r in hub.requests_for("/org/flaky-vit/resolve/") if r.method == "GET"
            and r.path.endswith("model.safetensors")]
    assert len(gets) == 3  # two 500s, then the file
    assert cli("verify", tmp_path / "out/tiny-hf").exit_code == 0


def test_rerun_of_an_unchanged_build_asks_no_server_and_keeps_bundle_json(
    hub, file_server, tiny_vit_folder, tiny_tv_weights, tmp_path
):
    hub.add_repo("org/rerun-vit", tiny_vit_folder)
    file_server.add("/rerun/mnv3-047dcff4.pth", tiny_tv_weights)
    spec = write_spec(tmp_path, f"""
        [bundle]
        name = "rerun"
        version = "1.0.0"

        [[artifact]]
        id = "vit"
        source = "hf"
        repo = "org/rerun-vit"

        [[artifact]]
        id = "weights"
        source = "url"
        url = "{file_server.url}/rerun/mnv3-047dcff4.pth"
        sha256 = "{hashlib.sha256(tiny_tv_weights).hexdigest()}"
        """)
    args = build_args(spec, tmp_path)
    assert cli(*args).exit_code == 0
    first = json.loads((tmp_path / "out/rerun/bundle.json").read_text())
    hub_before, files_before = len(hub.requests), len(file_server.requests)

    started = time.monotonic()
    result = cli(*args, "--json")
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert len(hub.requests) == hub_before and len(file_server.requests) == files_before
    report = json.loads(result.stdout)
    assert report["fetched_bytes"] == 0 and report["resolved_from_lock"] == 2
    second = json.loads((tmp_path / "out/rerun/bundle.json").read_text())
    first.pop("created"), second.pop("created")
    assert first == second
    assert elapsed < 1.0
    assert report["unchanged"] is True  # the folder already was this build: left alone
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["rerun"]

    # A file deleted from the bundle comes back from the store, still with no request.
    (tmp_path / "out/rerun/files/weights/mnv3-047dcff4.pth").unlink()
    repaired = cli(*args, "--json")
    assert repaired.exit_code == 0 and json.loads(repaired.stdout)["unchanged"] is False
    assert len(hub.requests) == hub_before and len(file_server.requests) == files_before
    assert cli("verify", tmp_path / "out/rerun").exit_code == 0


def test_refresh_after_one_hub_file_changed_fetches_only_that_file(
    hub, tiny_vit_folder, tmp_path
):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_vit_folder, repo)
    for i in range(5):  # small files the Hub keeps in git: no sha256, only a git id
        (repo / f"extra-{i}.json").write_text(json.dumps({"i": i}))
    hub.add_repo("org/moving-vit", repo)
    spec = write_spec(tmp_path, HF_SPEC.replace("org/tiny-vit", "org/moving-vit"))
    assert cli(*build_args(spec, tmp_path)).exit_code == 0

    # The same store, a fresh output folder (no build lock): nothing is fetched again.
    fresh = cli("build", spec, "--out", tmp_path / "out2", "--store", tmp_path / "store",
                "--no-progress", "--json")
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout)["fetched_files"] == 0

    # Upstream changes one small file; --refresh fetches that one and nothing else.
    (repo / "extra-3.json").write_text(json.dumps({"i": "changed"}))
    hub.add_repo("org/moving-vit", repo)
    refreshed = cli(*build_args(spec, tmp_path, "--refresh", "--json"))
    assert refreshed.exit_code == 0, refreshed.output
    assert json.loads(refreshed.stdout)["fetched_files"] == 1
    snap = Path(read_manifest(tmp_path / "out/tiny-hf").artifact("vit").path)
    assert json.loads((tmp_path / "out/tiny-hf" / snap / "extra-3.json").read_text()) == {"i": "changed"}
    assert cli("verify", tmp_path / "out/tiny-hf").exit_code == 0


# --- timm and torchvision --------------------------------------------------------


def test_timm_model_builds_and_loads_offline_with_pretrained_true(
    bundle_factory, tiny_timm_folder
):
    import timm
    import torch

    bundle = bundle_factory(f"""
        [bundle]
        name = "tiny-timm"
        version = "1.0.0"

        [[artifact]]
        id = "student"
        source = "timm"
        model = "{TIMM_MODEL}"
        """, hf={f"timm/{TIMM_MODEL}": tiny_timm_folder})
    art = read_manifest(bundle).artifact("student")
    assert art.ref == TIMM_MODEL and f"timm/{TIMM_MODEL}" in art.aliases
    assert sorted(Path(f.path).name for f in art.files) == ["config.json", "main", "model.safetensors"]

    reference = timm.create_model(TIMM_MODEL, pretrained=False)
    reference.load_state_dict(
        __import__("safetensors.torch").torch.load_file(tiny_timm_folder / "model.safetensors")
    )
    with activated(bundle, strict=True):
        model = timm.create_model(TIMM_MODEL, pretrained=True)
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_torchvision_weights_through_a_mirror(file_server, tiny_tv_weights, tmp_path):
    import torch

    sha = hashlib.sha256(tiny_tv_weights).hexdigest()
    file_server.add("/tv-mirror/models/mobilenet_v3_small-047dcff4.pth", tiny_tv_weights)
    spec = write_spec(tmp_path, f"""
        [bundle]
        name = "tiny-tv"
        version = "1.0.0"

        [[artifact]]
        id = "mnv3"
        source = "torchvision"
        weights = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        sha256 = "{sha}"   # test weights are not torchvision's: pin them
        """)
    result = cli(*build_args(spec, tmp_path, "--mirror",
                             f"https://download.pytorch.org/={file_server.url}/tv-mirror/"))
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "out/tiny-tv"
    art = read_manifest(bundle).artifact("mnv3")
    assert art.path == "torch/hub/checkpoints/mobilenet_v3_small-047dcff4.pth"
    assert art.aliases == ["mobilenet_v3_small-047dcff4.pth"]
    state = torch.load(bundle / art.path, weights_only=True)
    assert "features.0.0.weight" in state


def test_torchvision_hash_prefix_rejects_other_bytes(file_server, tiny_tv_weights, tmp_path):
    # No pinned sha256: the -047dcff4 in the file name is checked, as torch.hub does.
    file_server.add("/tv-bad/models/mobilenet_v3_small-047dcff4.pth", tiny_tv_weights)
    spec = write_spec(tmp_path, """
        [bundle]
        name = "bad-tv"
        version = "1.0.0"

        [[artifact]]
        id = "mnv3"
        source = "torchvision"
        weights = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        """)
    result = cli(*build_args(spec, tmp_path, "--mirror",
                             f"https://download.pytorch.org/={file_server.url}/tv-bad/"))
    assert result.exit_code != 0
    assert "mnv3" in result.stderr and "047dcff4" in result.stderr
    assert not (tmp_path / "out/bad-tv").exists()
    assert store_blobs(tmp_path / "store") == set()


# --- url sources, integrity -------------------------------------------------------


def test_permanently_corrupt_url_fails_naming_it_and_leaves_nothing(file_server, tmp_path):
    good, bad = os.urandom(50_000), os.urandom(60_000)
    file_server.add("/corrupt/good.bin", good)
    file_server.add("/corrupt/ckpt.pt", bad)
    file_server.fault("/corrupt/ckpt.pt", "corrupt", times=1000)
    spec = write_spec(tmp_path, f"""
        [bundle]
        name = "corrupt"
        version = "1.0.0"

        [[artifact]]
        id = "good"
        source = "url"
        url = "{file_server.url}/corrupt/good.bin"
        sha256 = "{hashlib.sha256(good).hexdigest()}"

        [[artifact]]
        id = "adm-256"
        source = "url"
        url = "{file_server.url}/corrupt/ckpt.pt"
        sha256 = "{hashlib.sha256(bad).hexdigest()}"
        """)
    store = tmp_path / "store"
    result = cli(*build_args(spec, tmp_path))
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    # One line for the download that was tried again after wrong bytes, then the error.
    assert len(lines) == 2 and "downloading it again" in lines[0]
    assert lines[1].startswith("Error: ") and "adm-256" in lines[1]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out/corrupt").exists()
    assert store_blobs(store) == {hashlib.sha256(good).hexdigest()}
    assert not any((store / "partial").iterdir()) if (store / "partial").exists() else True


def test_url_without_sha256_needs_trust_on_first_use(file_server, tmp_path):
    data = os.urandom(1000)
    file_server.add("/tofu/x.bin", data)
    spec = write_spec(tmp_path, f"""
        [bundle]
        name = "tofu"
        version = "1.0.0"

        [[artifact]]
        id = "x"
        source = "url"
        url = "{file_server.url}/tofu/x.bin"
        """)
    args = build_args(spec, tmp_path)
    refused = cli(*args)
    assert refused.exit_code != 0 and "'x'" in refused.stderr and "sha256" in refused.stderr
    trusted = cli(*args, "--trust-on-first-use")
    assert trusted.exit_code == 0, trusted.output
    assert "TRUSTING FIRST USE" in trusted.stderr
    entry = read_manifest(tmp_path / "out/tofu").artifact("x")
    assert entry.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert entry.path == "files/x/x.bin"


# --- verify ---------------------------------------------------------------------


def test_verify_catches_flipped_byte_missing_and_extra_files(bundle_factory, tiny_vit_folder, tmp_path):
    built = bundle_factory(HF_SPEC, hf={"org/tiny-vit": tiny_vit_folder})
    assert cli("verify", built).exit_code == 0
    # Work on a copy: bundle files are hard links to the shared store's blobs.
    bundle = tmp_path / "copy"
    shutil.copytree(built, bundle)
    for p in bundle.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    snap = bundle / read_manifest(bundle).artifact("vit").path
    data = bytearray((snap / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (snap / "model.safetensors").write_bytes(bytes(data))
    (snap / "config.json").unlink()
    (snap / "notes.txt").write_text("not in the manifest")
    (bundle / "link.json").symlink_to(snap / "preprocessor_config.json")  # dangling, too

    result = cli("verify", bundle)
    assert result.exit_code == 1
    out = result.stdout
    assert "bad" in out and "model.safetensors" in out and "sha256" in out
    assert "missing" in out and "config.json" in out
    assert "extra" in out and "notes.txt" in out
    assert "symlink" in out and "link.json" in out
    quick = cli("verify", bundle, "--quick", "--json")
    report = json.loads(quick.stdout)
    assert quick.exit_code == 1 and report["bad"] == []  # same size: --quick cannot see the flip
    assert [Path(p).name for p in report["missing"]] == ["config.json"]


# --- concurrency -------------------------------------------------------------------


def test_two_builds_sharing_a_store_at_the_same_time_both_verify(
    hub, file_server, tiny_vit_folder, tmp_path
):
    hub.add_repo("org/shared-vit", tiny_vit_folder)
    big = os.urandom(3 << 20)
    file_server.add("/concurrent/big.bin", big)
    sha = hashlib.sha256(big).hexdigest()
    specs = []
    for name in ("one", "two"):
        specs.append(write_spec(tmp_path, f"""
            [bundle]
            name = "{name}"
            version = "1.0.0"

            [[artifact]]
            id = "vit-{name}"
            source = "hf"
            repo = "org/shared-vit"

            [[artifact]]
            id = "big"
            source = "url"
            url = "{file_server.url}/concurrent/big.bin"
            sha256 = "{sha}"
            """, name=f"{name}.toml"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "builder", "build", str(s), "--out", str(tmp_path / "out"),
             "--store", str(tmp_path / "store"), "--no-progress"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for s in specs
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for name in ("one", "two"):
        assert cli("verify", tmp_path / "out" / name).exit_code == 0
    assert (tmp_path / "out/one/files/big/big.bin").stat().st_ino == (
        tmp_path / "out/two/files/big/big.bin").stat().st_ino  # one blob, linked twice


# --- ls ----------------------------------------------------------------------------


def test_ls_lists_artifacts_of_a_bundle_and_of_a_spec(bundle_factory, tiny_vit_folder, tmp_path):
    bundle = bundle_factory(HF_SPEC, hf={"org/tiny-vit": tiny_vit_folder})
    table = cli("ls", bundle)
    assert table.exit_code == 0
    assert "vit" in table.stdout and "org/tiny-vit" in table.stdout and "hf" in table.stdout
    rows = json.loads(cli("ls", bundle, "--json").stdout)
    assert rows[0]["files"] == 3 and rows[0]["revision"] == "main" and len(rows[0]["commit"]) == 40
    spec_rows = json.loads(cli("ls", write_spec(tmp_path, HF_SPEC), "--json").stdout)
    assert spec_rows[0]["ref"] == "org/tiny-vit" and spec_rows[0]["files"] is None


# --- wheels and notebooks ------------------------------------------------------------

LOCAL_WHEELS = Path("/opt/pypi/files")


@pytest.mark.skipif(not (LOCAL_WHEELS / "tomli_w-1.2.0-py3-none-any.whl").is_file(),
                    reason="no local wheel mirror")
def test_wheels_and_notebooks_are_listed_and_a_rerun_reuses_the_wheelhouse(tmp_path):
    spec = write_spec(tmp_path, f"""
        [bundle]
        name = "with-wheels"
        version = "1.0.0"
        stacks = ["emotion-vit"]

        [wheels]
        requirements = ["tomli_w==1.2.0"]
        include_self = false
        no_index = true
        find_links = ["{LOCAL_WHEELS}"]
        """)
    args = build_args(spec, tmp_path)
    first = cli(*args)
    assert first.exit_code == 0, first.output
    bundle = tmp_path / "out/with-wheels"
    manifest = read_manifest(bundle)
    paths = [f.path for f in manifest.extra_files]
    assert "wheels/tomli_w-1.2.0-py3-none-any.whl" in paths
    assert "notebooks/emotion-vit.ipynb" in paths
    assert cli("verify", bundle).exit_code == 0
    before = json.loads((bundle / "bundle.json").read_text())

    started = time.monotonic()
    again = cli(*args)
    elapsed = time.monotonic() - started  # no pip run: the wheels come from the store
    assert again.exit_code == 0, again.output
    after = json.loads((bundle / "bundle.json").read_text())
    before.pop("created"), after.pop("created")
    assert before == after and elapsed < 1.0


def test_pinned_commit_include_patterns_and_rebuild_over_a_read_only_bundle(
    hub, tiny_vit_folder, tmp_path
):
    from tests.fixtures.bundles import make_read_only

    commit = hub.add_repo("org/pinned-vit", tiny_vit_folder)
    spec = write_spec(tmp_path, f"""
        [bundle]
        name = "pinned"
        version = "1.0.0"

        [[artifact]]
        id = "vit-config"
        source = "hf"
        repo = "org/pinned-vit"
        revision = "{commit}"
        include = ["*.json"]
        """)
    args = build_args(spec, tmp_path)
    assert cli(*args).exit_code == 0
    bundle = tmp_path / "out/pinned"
    art = read_manifest(bundle).artifact("vit-config")
    assert art.revision == art.commit == commit
    # Code that names no revision asks for main: main of this bundle is the pinned commit.
    assert (bundle / "hf/models--org--pinned-vit/refs/main").read_text() == commit
    assert sorted(Path(f.path).name for f in art.files) == ["config.json", "main"]

    make_read_only(bundle)  # as on a Kaggle mount
    spec.write_text(spec.read_text().replace('["*.json"]', '["*.json", "*.safetensors"]'))
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert (bundle / "hf/models--org--pinned-vit/snapshots" / commit / "model.safetensors").is_file()
    assert cli("verify", bundle).exit_code == 0


def test_building_in_a_process_switched_offline_says_so(hub, tiny_vit_folder, tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub.add_repo("org/tiny-vit", tiny_vit_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = cli(*build_args(write_spec(tmp_path, HF_SPEC), tmp_path))
    assert result.exit_code == 1
    assert "artifact 'vit'" in result.stderr and "HF_HUB_OFFLINE" in result.stderr


def test_a_size_no_disk_holds_is_refused_before_any_request(tmp_path):
    from builder.pipeline import build
    from builder.spec import SpecError

    spec = tmp_path / "huge.toml"
    spec.write_text(textwrap.dedent("""
        [bundle]
        name = "huge"
        version = "1.0.0"

        [[artifact]]
        id = "weights"
        source = "url"
        url = "https://example.invalid/w.bin"
        sha256 = "%s"
        size = 99999999999999999999999999
        """ % ("0" * 64)))
    with pytest.raises(SpecError) as err:
        build(spec, out_dir=tmp_path / "out", store_dir=tmp_path / "store", progress=False)
    assert "artifact 'weights'" in str(err.value) and "field 'size'" in str(err.value)
    assert "more than any disk holds" in str(err.value)
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


def test_a_build_whose_artifact_does_not_resolve_leaves_no_store_skeleton(tmp_path):
    from builder.errors import BuildError
    from builder.pipeline import build

    spec = tmp_path / "tv.toml"
    spec.write_text('[bundle]\nname = "tv"\nversion = "1.0.0"\n\n[[artifact]]\nid = "w"\n'
                    'source = "torchvision"\nweights = "No_Such_Weights.IMAGENET1K_V1"\n')
    with pytest.raises(BuildError, match="has no weights 'No_Such_Weights.IMAGENET1K_V1'"):
        build(spec, out_dir=tmp_path / "out", store_dir=tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()  # no aliases/, blobs/, layout


def test_a_folder_built_before_the_rename_keeps_its_resolved_plan(hub, tiny_vit_folder, tmp_path):
    from builder.pipeline import build

    commit = hub.add_repo("org/renamed-lock", tiny_vit_folder)
    spec = tmp_path / "spec.toml"
    spec.write_text('[bundle]\nname = "renamed"\nversion = "1.0.0"\n\n[[artifact]]\nid = "vit"\n'
                    'source = "hf"\nrepo = "org/renamed-lock"\n')
    out, store = tmp_path / "out", tmp_path / "store"
    build(spec, out_dir=out, store_dir=store, progress=False)
    assert (out / ".renamed.resolved.json").is_file() and (out / ".renamed.building.lock").exists()
    (out / ".renamed.resolved.json").rename(out / ".renamed.lock.json")  # as an older build left it
    hub.requests.clear()
    report = build(spec, out_dir=out, store_dir=store, progress=False)
    assert report.fetched_files == 0 and not hub.requests  # the plan was reused: no server asked
    assert (out / ".renamed.resolved.json").is_file() and not (out / ".renamed.lock.json").exists()
    assert commit in (out / ".renamed.resolved.json").read_text()
