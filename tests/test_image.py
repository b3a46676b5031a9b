"""`bundle image`: the bundle and the runtime baked into a Docker image that runs offline.

Real engine (DOCKER_HOST; .ci/run starts one), real builds from a local Debian
base made with debootstrap (tests/fixtures/docker_engine.py); no registry, no
network in any build step or container. One image is built per module and
shared; its build runs with fake credentials in the environment and in HOME so
that the layer scan can prove none of them got in.
"""

# The fixtures are imported from tests/fixtures/docker_engine.py (conftest does not list
# it), so their names are both imported and used as parameters.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.credentials import credential_reason
from builder.extras.runtime_wheels import repack_installed_distribution
from builder.image.build import build_image
from builder.image.command import image_command
from builder.image.context import (
    CTX_ARTIFACTS,
    CTX_META,
    ContextError,
    assemble_context,
    dockerfile_path,
)
from builder.image.docker import run_build
from runtime.manifest import ArtifactEntry, FileEntry, Manifest, read_manifest, write_manifest
from tests.fixtures.docker_engine import (  # noqa: F401  (pytest fixtures)
    docker_base_image,
    docker_base_image_without_python,
    docker_engine,
)
from tests.fixtures.registry import docker_registry  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.docker

COMMIT = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"
# Fake secrets: each must appear in no layer and no image config.
SECRETS = {
    "KAGGLE_KEY": "kgl-env-5e1f0c3a9d7b",
    "HF_TOKEN": "hf_envtoken9c8b7a6f5e4d",
    "kaggle.json in HOME": "kgl-home-2b4d6f8a0c1e",
    "HF token file in HOME": "hf_hometoken1a2b3c4d5e",
    "docker config proxy": "proxypass7f6e5d4c3b2a",
    "kaggle.json in bundle folder": "kgl-stray-0a9b8c7d6e5f",
    ".git in bundle folder": "gitsecret4e3d2c1b0a9f",
}


def _entry(root: Path, rel: str, data: bytes, *, mode: int = 0o644) -> FileEntry:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return FileEntry(rel, len(data), hashlib.sha256(data).hexdigest())


def make_tiny_bundle(
    parent: Path,
    *,
    name: str = "tiny-image",
    version: str = "1.0.0",
    extra_wheels: tuple[str, ...] = (),
) -> Path:
    """A bundle laid out with runtime.manifest: one hf, one torchvision, one url artifact,
    a wheelhouse with one pure-Python wheel, and stray files that must stay out of images."""
    root = parent / name
    root.mkdir(parents=True)
    snap = f"hf/models--org--tiny-bert/snapshots/{COMMIT}"
    hf_files = [
        _entry(root, "hf/models--org--tiny-bert/refs/main", COMMIT.encode()),
        _entry(root, f"{snap}/config.json", b'{"model_type": "bert", "hidden_size": 32}'),
        # save_pretrained writes 0600: the image's non-root user must still read it.
        _entry(root, f"{snap}/model.safetensors", os.urandom(4096), mode=0o600),
    ]
    ckpt = "torch/hub/checkpoints/tinynet-0123abcd.pth"
    url_file = "files/tiny-ckpt/weights.pt"
    artifacts = [
        ArtifactEntry("tiny-bert", "hf", "org/tiny-bert", COMMIT, snap, hf_files),
        ArtifactEntry("tinynet", "torchvision", "TinyNet_Weights.IMAGENET1K_V1", None, ckpt,
                      [_entry(root, ckpt, os.urandom(2048))], aliases=["tinynet-0123abcd.pth"]),
        ArtifactEntry("tiny-ckpt", "url", "https://example.org/tiny/weights.pt", None, url_file,
                      [_entry(root, url_file, os.urandom(1024))]),
    ]  # fmt: skip
    # The wheelhouse: a pure-Python package the base image lacks (six).
    wheel = repack_installed_distribution("six", root / "wheels")
    extra = [_entry(root, f"wheels/{wheel.name}", wheel.read_bytes())]
    extra += [
        _entry(root, f"wheels/{w}", b"not opened: pip skips wheels whose tags do not fit")
        for w in extra_wheels
    ]
    manifest = Manifest(name=name, version=version, artifacts=artifacts, extra_files=extra,
                        title="Tiny image test bundle", created="2026-11-21T10:00:00Z")  # fmt: skip
    write_manifest(root, manifest)
    (root / "README.md").write_text("# tiny\n")
    (root / "dataset-metadata.json").write_text(
        json.dumps({"id": "someone/tiny-image", "title": "Tiny", "licenses": [{"name": "other"}]})
    )
    # Not listed in bundle.json: must never reach a context or a layer.
    (root / "kaggle.json").write_text(
        json.dumps({"username": "someone", "key": SECRETS["kaggle.json in bundle folder"]})
    )
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text(
        f"[credential]\n\thelper = store {SECRETS['.git in bundle folder']}\n"
    )
    return root


def _fake_credentials(home: Path) -> dict[str, str]:
    """Credentials a user would have around when building: in HOME and in the environment."""
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(
        json.dumps({"username": "someone", "key": SECRETS["kaggle.json in HOME"]})
    )
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(SECRETS["HF token file in HOME"])
    (home / ".docker").mkdir()
    proxy = f"http://user:{SECRETS['docker config proxy']}@127.0.0.1:9"
    (home / ".docker" / "config.json").write_text(
        json.dumps({"proxies": {"default": {"httpProxy": proxy, "httpsProxy": proxy}}})
    )
    return {
        "HOME": str(home),
        "KAGGLE_USERNAME": "someone",
        "KAGGLE_KEY": SECRETS["KAGGLE_KEY"],
        "HF_TOKEN": SECRETS["HF_TOKEN"],
    }


def _run(
    client, image: str, command: list[str], *, user: str | None = None,
    environment: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run `command` in `image` with no network; (exit code, stdout, stderr)."""
    kwargs = {"user": user} if user else {}
    container = client.containers.create(
        image, command=command, network_mode="none", environment=environment, **kwargs
    )
    try:
        container.start()
        code = container.wait(timeout=120)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    return code, out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory, docker_engine, docker_base_image):
    """`bundle image` (the CLI) on the tiny bundle, with fake credentials around; shared."""
    work = tmp_path_factory.mktemp("image")
    bundle = make_tiny_bundle(work)
    env = _fake_credentials(work / "home")
    tag = "offline-bundle-test/tiny-image:1.0.0"
    result = CliRunner().invoke(
        image_command,
        [str(bundle), "--base-image", docker_base_image, "--tag", tag, "--json", "--quiet"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    yield {"bundle": bundle, "tag": tag, "report": report, "manifest": read_manifest(bundle)}
    docker_engine.client.images.remove(tag, force=True)


def test_image_report_names_image_size_labels_and_passing_smoke_check(built, docker_engine):
    report, manifest = built["report"], built["manifest"]
    image = docker_engine.client.images.get(built["tag"])
    assert report["image_id"] == image.id
    assert built["tag"] in report["tags"]
    assert report["size"] == image.attrs["Size"] > 0
    smoke = report["smoke"]
    assert smoke["bundle_found"] and smoke["missing"] == []
    assert sorted(smoke["artifacts_present"]) == sorted(a.id for a in manifest.artifacts)
    assert smoke["bundle_path"] == f"/opt/bundles/{manifest.name}"


def test_doctor_in_container_without_network_reports_every_artifact(built, docker_engine):
    code, out, err = _run(docker_engine.client, built["tag"], ["bundle", "doctor", "--json"])
    doctor = json.loads(out)
    (bundle,) = [b for b in doctor["bundles"] if b["name"] == "tiny-image"]
    assert bundle["path"] == "/opt/bundles/tiny-image"
    assert sorted(bundle["artifacts"]) == sorted(a.id for a in built["manifest"].artifacts)
    assert doctor["problems"] == [], doctor["problems"]
    assert code == 0, err


def test_strict_activate_in_container_resolves_each_artifact_to_its_bytes(built, docker_engine):
    manifest = built["manifest"]
    script = (
        "import hashlib, json, os, runtime; from pathlib import Path; runtime.activate(strict=True)\n"
        "out = {}\n"
        "for name in json.loads(os.environ['NAMES']):\n"
        "    p = Path(runtime.resolve(name))\n"
        "    files = sorted(f for f in p.rglob('*') if f.is_file()) if p.is_dir() else [p]\n"
        "    out[name] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}\n"
        "print(json.dumps(out))\n"
    )
    names = [a.id for a in manifest.artifacts] + ["org/tiny-bert", "tinynet-0123abcd.pth"]
    code, out, err = _run(
        docker_engine.client, built["tag"], ["python", "-c", script],
        environment={"NAMES": json.dumps(names)},
    )
    assert code == 0, err
    resolved = json.loads(out)
    for art in manifest.artifacts:
        # Each resolved path holds exactly the artifact's snapshot / file, byte for byte.
        expected = {Path(f.path).name: f.sha256 for f in art.files if f.path.startswith(art.path)}
        assert resolved[art.id] == expected, art.id
    assert resolved["org/tiny-bert"] == resolved["tiny-bert"]
    assert resolved["tinynet-0123abcd.pth"] == resolved["tinynet"]


def test_labels_carry_bundle_digest_name_version_and_oci_metadata(built, docker_engine):
    manifest = built["manifest"]
    labels = docker_engine.client.images.get(built["tag"]).labels
    assert labels["offline-bundle.bundle.digest"] == manifest.digest == manifest.compute_digest()
    assert labels["offline-bundle.bundle.name"] == "tiny-image"
    assert labels["offline-bundle.bundle.version"] == "1.0.0"
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert labels["org.opencontainers.image.title"] == "tiny-image"
    assert labels["org.opencontainers.image.licenses"] == "other"
    assert labels["org.opencontainers.image.base.name"].startswith("offline-bundle-test-base:")
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert built["report"]["labels"] == labels


def test_image_runs_as_non_root_and_reads_files_saved_0600(built, docker_engine):
    client = docker_engine.client
    assert client.images.get(built["tag"]).attrs["Config"]["User"] == "10001:10001"
    snap = f"/opt/bundles/tiny-image/hf/models--org--tiny-bert/snapshots/{COMMIT}"
    code, out, err = _run(
        client, built["tag"], ["sh", "-c", f"id -u; wc -c < {snap}/model.safetensors"]
    )
    assert code == 0, err
    uid, size = out.split()
    assert uid == "10001" and size == "4096"
    # Read-only bundle: the non-root user cannot alter the weights.
    code, _, _ = _run(client, built["tag"], ["sh", "-c", f"echo x >> {snap}/config.json"])
    assert code != 0


def test_entrypoint_runs_bundle_for_subcommands_and_programs_as_given(built, docker_engine):
    client = docker_engine.client
    code, out, _ = _run(client, built["tag"], ["--help"])
    assert code == 0 and "doctor" in out
    code, out, _ = _run(client, built["tag"], [])  # CMD: bundle doctor
    assert code == 0 and "tiny-image 1.0.0" in out
    # The wheelhouse package was installed offline into the venv; the offline env is set.
    code, out, err = _run(client, built["tag"], ["python", "-c",
                          "import six, os; print(six.__name__, os.environ['HF_HUB_OFFLINE'], os.environ['BUNDLE_PATH'])"])  # fmt: skip
    assert code == 0, err
    assert out.split() == ["six", "1", "/opt/bundles/tiny-image"]


def test_no_credential_from_environment_home_or_bundle_folder_reaches_any_layer(
    built, docker_engine
):
    image = docker_engine.client.images.get(built["tag"])
    needles = {label: value.encode() for label, value in SECRETS.items()}
    longest = max(len(v) for v in needles.values())
    found: set[str] = set()
    carry = b""
    total = 0
    names: list[str] = []
    # `docker save`: every layer tar and the image config, uncompressed, as one stream.
    for chunk in image.save(named=False):
        window = carry + chunk
        total += len(chunk)
        for label, value in needles.items():
            if value in window:
                found.add(label)
        carry = window[-longest:]
    assert total > 10_000_000  # the scan saw the layers (the base alone is > 100 MB)
    assert found == set(), f"credentials in the image: {sorted(found)}"
    # And no credential-looking file name in any layer.
    fh = _save_to_file(image, built["bundle"].parent / "saved.tar")
    with tarfile.open(fh) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                    names += [
                        n
                        for n in layer.getnames()
                        if n.startswith(("opt/bundles", "opt/offline-bundle"))
                    ]
    assert any(n.startswith("opt/bundles/tiny-image/hf/") for n in names)
    assert not [n for n in names if credential_reason(n)], [
        n for n in names if credential_reason(n)
    ]


def _save_to_file(image, path: Path) -> Path:
    with open(path, "wb") as fh:
        for chunk in image.save(named=False):
            fh.write(chunk)
    return path


def test_failing_run_step_surfaces_daemon_error_and_exits_non_zero(
    tmp_path,
    docker_engine,
    docker_base_image_without_python,
):
    bundle = make_tiny_bundle(tmp_path)
    result = CliRunner().invoke(
        image_command,
        [
            str(bundle),
            "--base-image",
            docker_base_image_without_python,
            "--tag",
            "offline-bundle-test/broken:1",
            "-q",
        ],
    )
    assert result.exit_code == 1
    message = result.output.strip()
    assert len(message.splitlines()) == 1, message  # one line, no traceback
    assert "failed at Step" in message and "venv" in message  # the step that failed
    assert "returned a non-zero code: 127" in message  # the daemon's message
    assert "python3: not found" in message  # the step's own error text
    assert message.endswith("(choose it with --base-image)")  # what to do next
    from docker.errors import ImageNotFound

    with pytest.raises(ImageNotFound):
        docker_engine.client.images.get("offline-bundle-test/broken:1")


def test_wheelhouse_that_does_not_fit_the_base_fails_at_pip_with_a_way_out(
    tmp_path, docker_engine, docker_base_image
):
    # A wheelhouse made for another interpreter and platform (e.g. for Windows by mistake).
    bundle = make_tiny_bundle(tmp_path, extra_wheels=("winonly-1.0-cp39-cp39-win_amd64.whl",))
    args = [
        str(bundle),
        "--base-image",
        docker_base_image,
        "--tag",
        "offline-bundle-test/winonly:1",
        "-q",
    ]
    result = CliRunner().invoke(image_command, args)
    assert result.exit_code == 1
    message = result.output.strip()
    assert "pip install" in message and "winonly" in message  # the step and pip's own words
    assert "No matching distribution found for winonly" in message
    assert message.endswith("or pass --no-wheelhouse")
    # The way out: the context then asks pip for the runtime only.
    result = CliRunner().invoke(
        image_command, [*args[:1], "--no-wheelhouse", "--context-only", str(tmp_path / "ctx")]
    )
    assert result.exit_code == 0, result.output
    requirements = (tmp_path / "ctx/runtime/requirements.txt").read_text().split()
    assert "winonly" not in requirements and "six" not in requirements


def test_weights_layer_is_reused_when_only_bundle_json_changes(
    built, tmp_path, docker_engine, docker_base_image
):
    client = docker_engine.client
    v2 = tmp_path / "v2"
    shutil.copytree(built["bundle"], v2 / "tiny-image")
    manifest = read_manifest(v2 / "tiny-image")
    manifest.version = "1.0.1"
    write_manifest(v2 / "tiny-image", manifest)
    report = build_image(
        v2 / "tiny-image", base_image=docker_base_image, tag="offline-bundle-test/tiny-image:1.0.1",
        smoke=False, progress=False, client=client,
    )  # fmt: skip
    try:
        old = client.images.get(built["tag"]).attrs["RootFS"]["Layers"]
        new = client.images.get(report.image_id).attrs["RootFS"]["Layers"]
        history = [h["CreatedBy"] for h in reversed(client.images.get(report.image_id).history())]
        weights = next(
            i for i, h in enumerate(history) if "COPY" in h and "/opt/bundles/tiny-image/" in h
        )
        runtime_install = next(i for i, h in enumerate(history) if "pip install" in h)
        assert (
            weights < runtime_install
        )  # weights below the runtime: code changes never re-copy them
        # Base, user, venv and the weights layer are shared; bundle.json and above are not.
        shared = 0
        while shared < min(len(old), len(new)) and old[shared] == new[shared]:
            shared += 1
        base_layers = len(client.images.get(docker_base_image).attrs["RootFS"]["Layers"])
        assert shared >= base_layers + 3, (shared, base_layers)
        assert old != new
    finally:
        client.images.remove(report.image_id, force=True)


def test_smoke_check_fails_when_the_image_lacks_the_bundle_files(
    built, tmp_path, docker_engine, docker_base_image
):
    # Same context, but a Dockerfile that forgets to copy the weights layer.
    dockerfile = tmp_path / "Dockerfile.broken"
    text = dockerfile_path().read_text()
    assert "COPY bundle/artifacts/" in text
    dockerfile.write_text(
        "\n".join(ln for ln in text.splitlines() if not ln.startswith("COPY bundle/artifacts/"))
    )
    tag = "offline-bundle-test/no-weights:1"
    result = CliRunner().invoke(
        image_command,
        [str(built["bundle"]), "--base-image", docker_base_image, "--tag", tag, "-q",
         "--dockerfile", str(dockerfile)],
    )  # fmt: skip
    try:
        assert result.exit_code == 1
        message = result.output.strip()
        assert "bundle 'tiny-image' inside the image" in message
        assert "missing artifact(s) tiny-bert, tinynet, tiny-ckpt" in message
    finally:
        docker_engine.client.images.remove(tag, force=True)


def test_push_sends_every_layer_and_the_labels_to_the_registry(
    built, docker_engine, docker_registry, docker_base_image
):
    tag = f"{docker_registry.host}/offline-bundle-test/tiny-image:1.0.0"
    result = CliRunner().invoke(
        image_command,
        [str(built["bundle"]), "--base-image", docker_base_image, "--tag", tag,
         "--push", "--no-smoke", "--json", "-q"],
    )  # fmt: skip
    try:
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["pushed"] == [tag]
        _media, body = docker_registry.manifests[("offline-bundle-test/tiny-image", "1.0.0")]
        pushed = json.loads(body)
        config = json.loads(docker_registry.blobs[pushed["config"]["digest"]])
        labels = config["config"]["Labels"]
        assert labels["offline-bundle.bundle.digest"] == built["manifest"].digest
        local_layers = docker_engine.client.images.get(tag).attrs["RootFS"]["Layers"]
        assert config["rootfs"]["diff_ids"] == local_layers
        # Every layer arrived whole (the stand-in checked each blob against its digest).
        assert all(layer["digest"] in docker_registry.blobs for layer in pushed["layers"])
        assert len(pushed["layers"]) == len(local_layers)
    finally:
        docker_engine.client.images.remove(tag, force=True)


def test_push_to_an_unreachable_registry_fails_with_the_daemons_message(
    built, docker_engine, docker_base_image
):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tag = f"127.0.0.1:{port}/offline-bundle-test/tiny-image:1.0.0"
    result = CliRunner().invoke(
        image_command,
        [str(built["bundle"]), "--base-image", docker_base_image, "--tag", tag, "--push",
         "--no-smoke", "-q"],
    )  # fmt: skip
    try:
        assert result.exit_code == 1
        message = result.output.strip()
        assert message.startswith(f"Error: pushing {tag} failed:"), message
        assert "connection refused" in message.lower()
    finally:
        docker_engine.client.images.remove(tag, force=True)


def test_bundle_from_the_real_builder_bakes_and_resolves_offline(
    bundle_factory, tmp_path, docker_engine, docker_base_image
):
    """The builder's own output (read-only, store hard links) goes through unchanged."""
    repo = tmp_path / "tiny-repo"
    repo.mkdir()
    (repo / "config.json").write_text('{"model_type": "vit", "hidden_size": 32}')
    (repo / "model.safetensors").write_bytes(os.urandom(3000))
    ckpt = os.urandom(1500)
    bundle = bundle_factory(
        f"""
        [bundle]
        name = "built-image"
        version = "0.3.0"
        title = "Built by bundle build"

        [[artifact]]
        id = "tiny-vit"
        source = "hf"
        repo = "org/tiny-vit-image"

        [[artifact]]
        id = "ckpt"
        source = "url"
        url = "https://example.org/models/ckpt.pt"
        sha256 = "{hashlib.sha256(ckpt).hexdigest()}"
        """,
        hf={"org/tiny-vit-image": repo},
        urls={"https://example.org/models/ckpt.pt": ckpt},
    )
    client = docker_engine.client
    report = build_image(
        bundle, base_image=docker_base_image, progress=False, client=client
    )
    try:
        assert report.tags == ["built-image:0.3.0"]
        assert report.smoke["artifacts_present"] == ["tiny-vit", "ckpt"]
        script = (
            "import runtime; runtime.activate(strict=True); "
            "p = runtime.resolve('org/tiny-vit-image'); "
            "print((p / 'config.json').read_text()); print(runtime.resolve('ckpt').stat().st_size)"
        )
        code, out, err = _run(client, report.image_id, ["python", "-c", script])
        assert code == 0, err
        assert out.splitlines() == ['{"model_type": "vit", "hidden_size": 32}', "1500"]
    finally:
        client.images.remove(report.image_id, force=True)


def test_bundle_file_shrinking_during_the_upload_fails_with_the_cause_not_a_broken_tar(
    tmp_path, docker_engine, docker_base_image
):
    bundle = make_tiny_bundle(tmp_path)
    context = assemble_context(bundle, work_dir=tmp_path / "work", base_image=docker_base_image)
    # Between the check and the upload, a weights file is replaced by a shorter one.
    (bundle / "files/tiny-ckpt/weights.pt").write_bytes(b"short")
    with pytest.raises(ContextError, match=r"files/tiny-ckpt/weights.pt: changed or vanished"):
        run_build(
            docker_engine.client, context, tag="offline-bundle-test/shrunk:1", platform=None,
            progress=False, emit=lambda text: None,
        )  # fmt: skip


# --- No engine needed ----------------------------------------------------------


def test_context_holds_only_listed_files_and_runtime_wheels(tmp_path):
    bundle = make_tiny_bundle(tmp_path)
    result = CliRunner().invoke(
        image_command, [str(bundle), "--context-only", str(tmp_path / "ctx"), "--json"]
    )
    assert result.exit_code == 0, result.output
    ctx = tmp_path / "ctx"
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    manifest = read_manifest(bundle)
    expected_bundle = {f"{CTX_ARTIFACTS}/{f.path}" for a in manifest.artifacts for f in a.files}
    expected_bundle |= {f"{CTX_META}/{f.path}" for f in manifest.extra_files}
    expected_bundle |= {
        f"{CTX_META}/{n}" for n in ("bundle.json", "README.md", "dataset-metadata.json")
    }
    assert {f for f in files if f.startswith("bundle/")} == expected_bundle
    others = {f for f in files if not f.startswith("bundle/")}
    assert {
        "Dockerfile",
        "docker-entrypoint.sh",
        "buildargs.json",
        "runtime/requirements.txt",
    } <= others
    wheels = {Path(f).name.split("-")[0] for f in others if f.startswith("runtime/wheels/")}
    assert wheels == {"offline_bundle", "click"}
    assert not any("kaggle" in f or ".git" in f for f in files)
    # Files saved 0600 become world-readable in the context (the image user is not root).
    snap = ctx / CTX_ARTIFACTS / f"hf/models--org--tiny-bert/snapshots/{COMMIT}/model.safetensors"
    assert snap.stat().st_mode & 0o004
    assert (
        bundle / f"hf/models--org--tiny-bert/snapshots/{COMMIT}/model.safetensors"
    ).stat().st_mode & 0o777 == 0o600
    out = json.loads(result.stdout)
    assert out["buildargs"]["BUNDLE_DIGEST"] == manifest.digest
    assert "six" in (ctx / "runtime/requirements.txt").read_text().split()


def test_context_refuses_a_listed_file_named_like_a_credential(tmp_path):
    bundle = make_tiny_bundle(tmp_path)
    manifest = read_manifest(bundle)
    manifest.extra_files.append(_entry(bundle, "files/leak/kaggle.json", b'{"key": "x"}'))
    write_manifest(bundle, manifest)
    with pytest.raises(ContextError, match=r"files/leak/kaggle.json.*credential"):
        assemble_context(bundle, work_dir=tmp_path / "work")


def test_context_refuses_an_incomplete_bundle_naming_each_bad_file(tmp_path):
    bundle = make_tiny_bundle(tmp_path)
    (bundle / "files/tiny-ckpt/weights.pt").unlink()
    (bundle / "torch/hub/checkpoints/tinynet-0123abcd.pth").write_bytes(b"short")
    result = CliRunner().invoke(
        image_command, [str(bundle), "--context-only", str(tmp_path / "ctx")]
    )
    assert result.exit_code == 1
    assert "files/tiny-ckpt/weights.pt: missing" in result.output
    assert "tinynet-0123abcd.pth: size 5, bundle.json says 2048" in result.output
    assert not (tmp_path / "ctx").exists()


@pytest.mark.parametrize(
    "path, flagged",
    [
        ("files/x/kaggle.json", True),
        ("home/.kaggle/anything", True),
        ("x/.git/config", True),
        ("x/id_ed25519", True),
        ("x/server.pem", True),
        ("hf/.cache/huggingface/token", True),
        ("hf/models--o--n/snapshots/c/config.json", False),
        ("hf/models--o--n/snapshots/c/tokenizer.json", False),
        ("files/id/weights.pt", False),
    ],
)
def test_credential_names_are_recognised(path, flagged):
    assert bool(credential_reason(path)) is flagged


def test_repacked_wheel_installs_and_imports(tmp_path):
    import subprocess
    import sys
    import zipfile

    wheel = repack_installed_distribution("click", tmp_path / "w")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
    assert "click/__init__.py" in names and any(n.endswith(".dist-info/RECORD") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q",
                    "--target", str(target), str(wheel)], check=True)  # fmt: skip
    code = "import click, sys; print(click.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith(str(target))
