"""runtime.locate / activate / deactivate / resolve / verify against hand-laid bundles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import runtime
from runtime import constants
from tests.test_runtime_support import hf_art, make_bundle, torch_art

VIT_FILES = {"config.json": b'{"model_type": "vit"}', "model.safetensors": b"\x00" * 64}
AST_FILES = {"config.json": b'{"model_type": "audio-spectrogram-transformer"}',
             "preprocessor_config.json": b"{}", "model.safetensors": b"\x01" * 32}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No bundle visible except those a test points at; activate() undone afterwards."""
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH, raising=False)
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, "")
    monkeypatch.setenv(constants.ENV_VIEW_DIR, str(tmp_path / "views"))
    for name in (*constants.OFFLINE_ENV, "HF_HUB_CACHE", "TORCH_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    runtime.deactivate()


def vit_bundle(folder: Path, **kw) -> Path:
    return make_bundle(folder, "vit", [hf_art("vit-tiny", "org/vit-tiny", VIT_FILES, **kw)])


def use(monkeypatch, *folders: Path) -> None:
    monkeypatch.setenv(constants.ENV_BUNDLE_PATH, os.pathsep.join(map(str, folders)))


# --- locate ----------------------------------------------------------------


def test_locate_follows_bundle_path_then_both_kaggle_mount_styles(isolated, monkeypatch):
    direct = vit_bundle(isolated / "direct")
    shelf = isolated / "shelf"
    in_shelf = vit_bundle(shelf / "b2")
    old_style = vit_bundle(isolated / "kaggle/input/old-slug")
    new_style = vit_bundle(isolated / "kaggle/input/datasets/owner/new-slug")
    use(monkeypatch, direct, shelf)
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, os.pathsep.join([
        str(isolated / "kaggle/input/*"), str(isolated / "kaggle/input/datasets/*/*")]))

    assert runtime.locate() == [direct, in_shelf, old_style, new_style]


def test_locate_finds_a_bundle_one_folder_down_in_a_dataset_but_never_walks_deep(
        isolated, monkeypatch):
    one_down = vit_bundle(isolated / "input/ds1/emotion-vit")  # dataset holding the bundle folder
    vit_bundle(isolated / "input/ds2/a/b")  # too deep: not a bundle mount
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, str(isolated / "input/*"))

    assert runtime.locate() == [one_down]


def test_locate_deduplicates_by_real_path(isolated, monkeypatch):
    real = vit_bundle(isolated / "real")
    (isolated / "alias").symlink_to(real)
    use(monkeypatch, real, isolated / "alias")
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, str(isolated / "*"))

    assert runtime.locate() == [real]


# --- activate --------------------------------------------------------------


def test_activate_sets_offline_env_and_deactivate_restores_it(isolated, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", "/users/own/torch")
    use(monkeypatch, vit_bundle(isolated / "b"))

    act = runtime.activate()

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_CACHE"] == str(act.view / "hf")
    assert os.environ["TORCH_HOME"] == str(act.view / "torch")
    runtime.deactivate()
    assert "HF_HUB_OFFLINE" not in os.environ and "HF_HUB_CACHE" not in os.environ
    assert os.environ["TORCH_HOME"] == "/users/own/torch"
    assert not act.view.exists()
    assert runtime.current() is None


def test_two_bundles_merge_into_one_cache_that_huggingface_hub_and_torch_read(
        isolated, monkeypatch):
    shared_commit = "c" * 40
    first = make_bundle(isolated / "first", "first", [
        hf_art("vit", "org/vit-tiny", VIT_FILES),
        hf_art("enc-cfg", "org/shared", {"config.json": b"{}"}, commit=shared_commit),
        torch_art("mnv3", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "mnv3-abc.pth", b"w1"),
    ])
    second = make_bundle(isolated / "second", "second", [
        hf_art("ast", "org/ast-tiny", AST_FILES),
        hf_art("enc-w", "org/shared", {"model.safetensors": b"w"}, commit=shared_commit),
        torch_art("r18", "ResNet18_Weights.IMAGENET1K_V1", "resnet18-xyz.pth", b"w2"),
    ])
    for b in (first, second):
        subprocess.run(["chmod", "-R", "a-w", str(b)], check=True)
    use(monkeypatch, first, second)

    act = runtime.activate()
    from huggingface_hub import hf_hub_download

    assert Path(hf_hub_download("org/vit-tiny", "config.json")).read_bytes() == VIT_FILES["config.json"]
    assert Path(hf_hub_download("org/ast-tiny", "preprocessor_config.json")).read_bytes() == b"{}"
    # Same commit held by two bundles with different files: both files visible.
    assert Path(hf_hub_download("org/shared", "config.json")).read_bytes() == b"{}"
    assert Path(hf_hub_download("org/shared", "model.safetensors")).read_bytes() == b"w"
    checkpoints = Path(os.environ["TORCH_HOME"]) / "hub/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["mnv3-abc.pth", "resnet18-xyz.pth"]
    # Libraries write markers and locks into the cache: the view takes them, the bundles stay intact.
    marker = act.view / "hf/models--org--vit-tiny/.no_exist" / ("0" * 40) / "processor_config.json"
    marker.parent.mkdir(parents=True)
    marker.touch()
    (act.view / "hf/.locks/models--org--vit-tiny").mkdir()
    assert not (first / "hf/models--org--vit-tiny/.no_exist").exists()
    assert [a.id for a in act.artifacts] == ["vit", "enc-cfg", "mnv3", "ast", "enc-w", "r18"]


def test_activate_patches_constants_of_an_already_imported_huggingface_hub(isolated, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    before_cache = hub_constants.HF_HUB_CACHE
    use(monkeypatch, vit_bundle(isolated / "b"))

    act = runtime.activate()

    assert huggingface_hub.is_offline_mode() is True
    assert hub_constants.HF_HUB_CACHE == str(act.view / "hf")
    assert "huggingface_hub.constants.HF_HUB_OFFLINE" in act.patched
    runtime.deactivate()
    assert hub_constants.HF_HUB_OFFLINE is False and hub_constants.HF_HUB_CACHE == before_cache


def test_activate_is_idempotent_until_the_attached_bundles_change(isolated, monkeypatch):
    first = vit_bundle(isolated / "shelf/a")
    use(monkeypatch, isolated / "shelf")

    act = runtime.activate()
    assert runtime.activate() is act

    make_bundle(isolated / "shelf/b", "other", [hf_art("ast", "org/ast-tiny", AST_FILES)])
    again = runtime.activate()
    assert again is not act and again.view != act.view and not act.view.exists()
    assert [b.path for b in again.bundles] == [first, isolated / "shelf/b"]
    assert (again.view / "hf/models--org--ast-tiny/refs/main").read_text() == \
        hf_art("ast", "org/ast-tiny", {}).revision


def test_activate_reports_truncated_files_without_hashing(isolated, monkeypatch):
    bundle = vit_bundle(isolated / "b")
    weights = next(bundle.glob("hf/*/snapshots/*/model.safetensors"))
    weights.write_bytes(b"\x00" * 10)
    use(monkeypatch, bundle)

    with pytest.warns(runtime.BundleIntegrityWarning, match="model.safetensors"):
        act = runtime.activate()

    assert [(p.kind, p.artifact) for p in act.problems] == [("size", "vit-tiny")]
    assert "INCOMPLETE" in repr(act)


def test_activate_without_any_bundle_warns_and_stays_offline(isolated, caplog):
    with caplog.at_level("WARNING", logger="runtime"):
        with pytest.warns(runtime.NoBundleWarning, match="BUNDLE_PATH"):
            act = runtime.activate()
    assert act.bundles == [] and os.environ["HF_HUB_OFFLINE"] == "1"
    # Logged too (logging is imported only when there is something to log).
    assert [r.name for r in caplog.records] == ["runtime"]
    assert "no bundle found" in caplog.records[0].getMessage()


def test_activation_prints_a_readable_summary(isolated, monkeypatch):
    use(monkeypatch, vit_bundle(isolated / "b"))
    act = runtime.activate()
    text, page = repr(act), act._repr_html_()
    assert "vit 1.0.0" in text and "vit-tiny" in text and "org/vit-tiny" in text
    assert "<table>" in page and "org/vit-tiny" in page


# --- Kaggle unpacking variants -----------------------------------------------


def test_kaggle_unpacking_into_a_nested_folder_is_followed(isolated, monkeypatch):
    bundle = vit_bundle(isolated / "b")
    nested = isolated / "b/hf_tmp"
    (bundle / "hf").rename(nested)
    (bundle / "hf").mkdir()
    nested.rename(bundle / "hf/hf")  # what a "hf.zip holding hf/" unpacks to
    use(monkeypatch, bundle)

    act = runtime.activate()
    from huggingface_hub import hf_hub_download

    assert act.problems == []
    assert runtime.resolve("org/vit-tiny") == next(bundle.glob("hf/hf/*/snapshots/*"))
    assert Path(hf_hub_download("org/vit-tiny", "config.json")).read_bytes() == VIT_FILES["config.json"]


def test_an_archive_left_packed_is_reported_with_the_fix(isolated, monkeypatch):
    bundle = vit_bundle(isolated / "b")
    subprocess.run(["python", "-m", "zipfile", "-c", "hf.zip", "hf"], cwd=bundle, check=True)
    subprocess.run(["rm", "-r", str(bundle / "hf")], check=True)
    use(monkeypatch, bundle)

    with pytest.warns(runtime.BundleIntegrityWarning, match="hf.zip was not unpacked"):
        runtime.activate()


# --- resolve -----------------------------------------------------------------


def test_resolve_by_id_ref_alias_and_torchvision_enum(isolated, monkeypatch):
    bundle = make_bundle(isolated / "b", "b", [
        hf_art("vit-tiny", "org/vit-tiny", VIT_FILES),
        hf_art("mvit", "timm/mobilevit_xxs.cvnets_in1k", VIT_FILES, source="timm",
               ref="mobilevit_xxs.cvnets_in1k", aliases=["timm/mobilevit_xxs.cvnets_in1k"]),
        torch_art("mnv3", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "mnv3-abc.pth", b"w"),
    ])
    use(monkeypatch, bundle)
    snapshot = next(bundle.glob("hf/models--org--vit-tiny/snapshots/*"))

    # Works before activate(): it reads what locate() finds.
    assert runtime.resolve("vit-tiny") == snapshot
    runtime.activate()
    assert runtime.resolve("org/vit-tiny") == snapshot
    assert runtime.resolve("hf-hub:timm/mobilevit_xxs.cvnets_in1k") == \
        runtime.resolve("mobilevit_xxs.cvnets_in1k")
    checkpoint = bundle / "torch/hub/checkpoints/mnv3-abc.pth"
    assert runtime.resolve("MobileNet_V3_Small_Weights.IMAGENET1K_V1") == checkpoint
    assert runtime.resolve("mnv3-abc.pth") == checkpoint

    class FakeEnumMember:  # what str() of a torchvision WeightsEnum member gives
        def __str__(self) -> str:
            return "MobileNet_V3_Small_Weights.IMAGENET1K_V1"

    assert runtime.resolve(FakeEnumMember()) == checkpoint


def test_resolve_missing_artifact_lists_contents_and_the_spec_to_add(isolated, monkeypatch):
    use(monkeypatch, vit_bundle(isolated / "b"))
    runtime.activate()

    with pytest.raises(runtime.ArtifactNotFoundError) as err:
        runtime.resolve("google/vit-base-patch16-224")
    text = str(err.value)
    assert "vit-tiny" in text and "org/vit-tiny" in text  # what is attached
    assert 'source = "hf"' in text and 'repo = "google/vit-base-patch16-224"' in text
    assert "bundle build" in text
    with pytest.raises(runtime.ArtifactNotFoundError, match='weights = "ViT_B_16_Weights.IMAGENET1K_V1"'):
        runtime.resolve("ViT_B_16_Weights.IMAGENET1K_V1")


def test_resolve_follows_a_declared_fallback_loudly(isolated, monkeypatch):
    bundle = make_bundle(isolated / "b", "b", [
        hf_art("vit-large", "org/vit-large", VIT_FILES, fallbacks=["vit-tiny"]),
        hf_art("vit-tiny", "org/vit-tiny", VIT_FILES),
    ])
    next(bundle.glob("hf/models--org--vit-large/snapshots/*/model.safetensors")).unlink()
    use(monkeypatch, bundle)
    with pytest.warns(runtime.BundleIntegrityWarning):
        runtime.activate()

    with pytest.warns(runtime.FallbackWarning, match="'vit-large'.*'vit-tiny'"):
        path = runtime.resolve("vit-large")
    assert path == next(bundle.glob("hf/models--org--vit-tiny/snapshots/*"))


def test_resolve_refuses_an_incomplete_artifact_without_fallback(isolated, monkeypatch):
    bundle = vit_bundle(isolated / "b")
    next(bundle.glob("hf/*/snapshots/*/model.safetensors")).unlink()
    use(monkeypatch, bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runtime.activate()

    with pytest.raises(runtime.ArtifactNotFoundError, match="incomplete.*model.safetensors"):
        runtime.resolve("vit-tiny")


# --- verify ------------------------------------------------------------------


def test_verify_quick_checks_sizes_and_full_checks_sha256(isolated, monkeypatch):
    bundle = vit_bundle(isolated / "b")
    weights = next(bundle.glob("hf/*/snapshots/*/model.safetensors"))
    weights.write_bytes(b"\x07" * 64)  # same size, other bytes
    use(monkeypatch, bundle)

    assert runtime.verify(quick=True).ok
    report = runtime.verify(quick=False, progress=False)
    assert not report.ok
    assert [(p.kind, p.artifact) for p in report.problems] == [("sha256", "vit-tiny")]
    assert report.to_json()["problems"][0]["path"].endswith("model.safetensors")


# --- import cost and speed ---------------------------------------------------


def test_import_runtime_loads_no_heavy_library():
    heavy = ["torch", "transformers", "huggingface_hub", "timm", "docker", "kaggle",
             "librosa", "numpy", "diffusers", "requests"]
    code = f"import runtime, runtime.cli, sys; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_and_activate_load_only_what_a_clean_start_needs(tmp_path):
    # `import runtime; runtime.activate()` opens every notebook: logging, html and
    # OpenSSL's hashlib are loaded only when there is something to log, show or hash.
    bundle = vit_bundle(tmp_path / "b")
    code = (
        "import sys, runtime\n"
        "act = runtime.activate()\n"
        "assert len(act.bundles) == 1 and act.ok, act\n"
        "print(sorted(m for m in ('logging', 'html', '_hashlib', 'runtime.integrity')"
        " if m in sys.modules))\n"
        "assert callable(runtime.verify) and runtime.verify(quick=True).ok\n"
    )
    env = {**os.environ, constants.ENV_BUNDLE_PATH: str(bundle), constants.ENV_SEARCH_ROOTS: ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture
def fast_dir(isolated):
    """A folder on tmpfs when there is one: 1000 small files in seconds, not tens."""
    import shutil
    import tempfile

    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(isolated)
    folder = Path(tempfile.mkdtemp(prefix="runtime-test-", dir=parent))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_activate_with_200_mounted_datasets_reads_only_their_manifests(
        isolated, fast_dir, monkeypatch):
    for i in range(200):
        make_bundle(fast_dir / f"input/ds{i:03d}", f"ds{i}", [
            hf_art(f"m{i}", f"org/m{i}", {"config.json": b"{}", "model.safetensors": b"0" * 8}),
            torch_art(f"t{i}", f"T{i}_Weights.V1", f"t{i}.pth", b"w")])
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, str(fast_dir / "input/*"))
    monkeypatch.delenv(constants.ENV_VIEW_DIR)  # the default (tmpfs) view, as in a notebook
    opened: list[str] = []
    listed: list[str] = []
    recording = [True]

    def spy(event, args):  # audit hooks cannot be removed: switch it off afterwards
        if recording[0] and event == "open" and isinstance(args[0], str):
            opened.append(args[0])
        elif recording[0] and event == "os.scandir":
            listed.append(str(args[0]))

    sys.addaudithook(spy)
    start = time.perf_counter()
    act = runtime.activate()
    elapsed = time.perf_counter() - start
    recording[0] = False

    assert len(act.bundles) == 200 and act.problems == []
    # No hashing, no walking: the only bundle files read are the manifests, the only
    # folder listed is the search root (the view's own marker file is written, not read).
    assert sorted(opened) == sorted(
        [str(b.path / "bundle.json") for b in act.bundles] + [str(act.view / "hf/version.txt")])
    assert listed == [str(fast_dir / "input")]
    # Bench target: 50 ms (about 30 ms on an idle 2-core machine). The bound here only
    # catches gross regressions on a CPU shared with other test runs.
    assert elapsed < 2, f"activate() took {elapsed * 1000:.0f} ms for 200 bundles"
    start = time.perf_counter()
    assert runtime.activate() is act
    assert time.perf_counter() - start < 1


def test_a_repo_bundled_at_a_tag_still_loads_for_code_that_names_no_revision(isolated, monkeypatch):
    art = hf_art("vit", "org/vit-tiny", VIT_FILES)
    art.files = {(p.replace("refs/main", "refs/v1.0")): d for p, d in art.files.items()}
    use(monkeypatch, make_bundle(isolated / "b", "b", [art]))

    act = runtime.activate()
    from huggingface_hub import hf_hub_download

    assert Path(hf_hub_download("org/vit-tiny", "config.json")).read_bytes() == VIT_FILES["config.json"]
    assert Path(hf_hub_download("org/vit-tiny", "config.json", revision="v1.0")).exists()
    assert any("no refs/main" in n for n in act.notes)


def test_deactivate_also_resets_libraries_imported_while_activated(isolated, monkeypatch):
    use(monkeypatch, vit_bundle(isolated / "b"))
    monkeypatch.setenv("HF_HOME", str(isolated / "hf_home"))
    code = (
        "import runtime; runtime.activate()\n"
        "import huggingface_hub.constants as c\n"
        "assert c.HF_HUB_OFFLINE is True\n"
        "runtime.deactivate()\n"
        "print(c.HF_HUB_OFFLINE, c.HF_HUB_CACHE)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", str(isolated / "hf_home/hub")]


def test_a_bundle_holding_a_symlink_is_refused_not_served(isolated, monkeypatch):
    secret = isolated / "secret.txt"
    secret.write_bytes(b"\x00" * 64)  # same size as the listed weights
    bundle = vit_bundle(isolated / "b")
    weights = next(bundle.glob("hf/*/snapshots/*/model.safetensors"))
    weights.unlink()
    weights.symlink_to(secret)
    use(monkeypatch, bundle)

    with pytest.warns(runtime.BundleIntegrityWarning, match="symlinks"):
        act = runtime.activate()
    assert act.bundles == [] and [p.kind for p in act.problems] == ["symlink"]
    assert not (act.view / "hf/models--org--vit-tiny").exists()


def test_a_bundle_holding_a_symlinked_folder_is_refused_not_served(isolated, monkeypatch):
    bundle = vit_bundle(isolated / "b")
    snapshot = next(bundle.glob("hf/*/snapshots/*"))
    elsewhere = isolated / "elsewhere"
    snapshot.rename(elsewhere)  # the same files, sizes and all, now outside the bundle
    snapshot.symlink_to(elsewhere, target_is_directory=True)
    use(monkeypatch, bundle)

    with pytest.warns(runtime.BundleIntegrityWarning, match="symlinks") as caught:
        act = runtime.activate()
    assert act.bundles == [] and [p.kind for p in act.problems] == ["symlink"]
    assert str(snapshot.relative_to(bundle)) in str(caught[0].message)
    assert not (act.view / "hf/models--org--vit-tiny").exists()
