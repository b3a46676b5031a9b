"""`bundle publish` against a local Kaggle API stand-in, through the real kaggle client."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.errors import BundleCheckError, KaggleMetadataError
from builder.publish.kaggle import publish, publish_command
from builder.publish.kaggle_plan import plan_publish
from runtime.manifest import ArtifactEntry, FileEntry, Manifest, read_manifest, write_manifest
from tests.fixtures.kaggleserver import KEY, TOKEN, USERNAME

DATASET = f"{USERNAME}/tiny-bundle-test"


def make_bundle(
    root: Path,
    files: dict[str, bytes],
    *,
    name: str = "tiny-bundle-test",
    version: str = "1.0.0",
    title: str = "Tiny bundle for tests",
    kaggle_id: str | None = DATASET,
) -> Path:
    """Lay out a bundle folder as `bundle build` does: files, bundle.json, metadata, README."""
    bundle = root / name
    entries = []
    for rel, data in files.items():
        path = bundle / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
    hf = [e for e in entries if e.path.startswith("hf/")]
    extra = [e for e in entries if not e.path.startswith("hf/")]
    artifacts = [ArtifactEntry(id="tiny", source="hf", ref="org/tiny", revision="c" * 40,
                               path="hf/models--org--tiny/snapshots/" + "c" * 40, files=hf)] if hf else []
    write_manifest(bundle, Manifest(name=name, version=version, title=title, artifacts=artifacts,
                                    extra_files=extra, created="2026-11-21T10:00:00Z"))
    meta = {"title": title, "licenses": [{"name": "other"}]}
    if kaggle_id:
        meta["id"] = kaggle_id
    (bundle / "dataset-metadata.json").write_text(json.dumps(meta))
    (bundle / "README.md").write_text("# tiny\n")
    return bundle


SNAP = "hf/models--org--tiny/snapshots/" + "c" * 40


def files_v1() -> dict[str, bytes]:
    return {
        f"{SNAP}/config.json": b'{"hidden_size": 32}',
        f"{SNAP}/model.safetensors": os.urandom(4096),
        "hf/models--org--tiny/refs/main": b"c" * 40,
        "wheels/offline_bundle-0.1.0-py3-none-any.whl": b"PK fake wheel bytes",
        "notebooks/tiny.ipynb": b"{}",
    }


def assert_mounted_bundle_is_complete(mounted: Path, bundle: Path) -> None:
    """What Kaggle unpacks holds every file of bundle.json with its bytes, at its path."""
    manifest = read_manifest(mounted)
    assert manifest.digest == read_manifest(bundle).digest
    for entry in manifest.all_files():
        data = (mounted / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256, entry.path


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(publish_command, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_first_publish_creates_dataset_with_metadata_and_every_file(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path / "v1", files_v1())
    os.chmod(bundle, 0o555)  # bundles are read-only after build; publish must not write there

    code, out, err = run_cli(str(bundle), "--json")

    assert code == 0, err
    report = json.loads(out)
    assert report["action"] == "create" and report["dataset"] == DATASET
    create = [c for c in kaggle_env.calls if c.method == "CreateDataset"]
    assert len(create) == 1
    body = create[0].body
    assert body["ownerSlug"] == USERNAME and body["slug"] == "tiny-bundle-test"
    assert body["title"] == "Tiny bundle for tests" and body["licenseName"] == "other"
    assert body["isPrivate"] is True  # private unless --public
    assert read_manifest(bundle).digest in body["description"]
    assert body["description"].startswith("# tiny")  # the bundle's README is the dataset page
    ds = kaggle_env.dataset(DATASET)
    # Top-level files as they are, each top-level folder as one zip.
    assert sorted(ds.versions[0].files) == ["README.md", "bundle.json", "hf.zip", "notebooks.zip", "wheels.zip"]
    assert_mounted_bundle_is_complete(kaggle_env.mount(DATASET, tmp_path / "input" / "tiny"), bundle)
    assert "dataset-metadata.json" not in ds.versions[0].files
    os.chmod(bundle, 0o755)


def test_changed_bundle_makes_version_with_digest_and_same_bundle_uploads_nothing(kaggle_env, tmp_path):
    first = make_bundle(tmp_path / "v1", files_v1())
    assert publish(first, quiet=True).action == "create"

    # Unchanged right after create: version 1 has no notes, the description holds the digest.
    again = publish(first, quiet=True)
    assert again.action == "unchanged"

    changed_files = files_v1()
    changed_files[f"{SNAP}/model.safetensors"] = os.urandom(4096)
    second = make_bundle(tmp_path / "v2", changed_files, version="1.1.0")
    code, out, err = run_cli(str(second), "--message", "retrained")
    assert code == 0, err
    assert "added a version" in out
    version = [c for c in kaggle_env.calls if c.method == "CreateDatasetVersion"]
    assert len(version) == 1
    notes = version[0].body["body"]["versionNotes"]
    digest = read_manifest(second).digest
    assert notes.startswith("retrained") and digest in notes and "1.1.0" in notes
    assert_mounted_bundle_is_complete(kaggle_env.mount(DATASET, tmp_path / "input" / "v2"), second)

    kaggle_env.calls.clear()
    uploads_before = len(kaggle_env.uploads)
    code, out, err = run_cli(str(second))
    assert code == 0, err
    assert "already holds digest" in out and "nothing uploaded" in out
    assert len(kaggle_env.uploads) == uploads_before
    assert not {"StartBlobUpload", "PUT", "CreateDataset", "CreateDatasetVersion"} & set(kaggle_env.methods())
    assert len(kaggle_env.dataset(DATASET).versions) == 2


@pytest.mark.parametrize(
    ("method", "kind", "message"),
    [
        ("CreateDataset", "500", "Internal error: dataset service unavailable"),
        ("CreateDataset", "error", "The requested title is already in use by a dataset"),
        ("GetDatasetStatus", "500", "Backend timeout while reading dataset"),
    ],
)
def test_server_errors_end_nonzero_with_server_message(kaggle_env, tmp_path, method, kind, message):
    bundle = make_bundle(tmp_path, files_v1())
    kaggle_env.fault(method, kind, message, times=2)  # the client asks the status twice

    code, out, err = run_cli(str(bundle))

    assert code != 0
    assert message in err
    assert "Traceback" not in err + out
    assert DATASET not in {f"{d.owner}/{d.slug}" for d in kaggle_env.datasets.values()}


def test_refused_file_upload_fails_instead_of_publishing_without_it(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path, files_v1())
    kaggle_env.fault("PUT", "500", "blob store down", times=1)

    code, out, err = run_cli(str(bundle))

    # Our own message, naming the file; whatever the client version says about it.
    assert code != 0 and "refused the bytes of" in err and "nothing was published" in err
    assert "Traceback" not in err
    assert "CreateDataset" not in kaggle_env.methods()
    assert not kaggle_env.datasets


def test_version_error_status_in_200_reply_is_an_error(kaggle_env, tmp_path):
    publish(make_bundle(tmp_path / "v1", files_v1()), quiet=True)
    changed = files_v1()
    changed["notebooks/tiny.ipynb"] = b'{"cells": []}'
    kaggle_env.fault("CreateDatasetVersion", "error", "Version quota exceeded for this dataset")

    code, out, err = run_cli(str(make_bundle(tmp_path / "v2", changed)))

    assert code == 1 and "Version quota exceeded for this dataset" in err
    assert len(kaggle_env.dataset(DATASET).versions) == 1


def test_credentials_never_reach_bundle_upload_or_output(kaggle_env, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    secrets = [KEY, TOKEN, base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()]
    bundle = make_bundle(tmp_path / "v1", files_v1())
    outputs = []
    code, out, err = run_cli(str(bundle))
    outputs += [out, err]
    assert code == 0, err
    # Same again with a token instead of user + key (read from KAGGLE_API_TOKEN).
    changed = files_v1()
    changed["notebooks/tiny.ipynb"] = b'{"cells": [1]}'
    os.environ.pop("KAGGLE_KEY")
    os.environ["KAGGLE_API_TOKEN"] = TOKEN
    try:
        code, out, err = run_cli(str(make_bundle(tmp_path / "v2", changed)), "--json")
    finally:
        os.environ.pop("KAGGLE_API_TOKEN")
    outputs += [out, err]
    assert code == 0, err
    assert json.loads(out)["action"] == "version"
    assert any(c.auth == f"Bearer {TOKEN}" for c in kaggle_env.calls)  # the token was really used

    captured = capfd.readouterr()
    haystacks = [*outputs, captured.out, captured.err, caplog.text]
    # Every request body except the login itself (IntrospectToken carries the token by design).
    haystacks += [json.dumps(c.body) for c in kaggle_env.calls if c.method != "IntrospectToken"]
    uploaded = b"".join(kaggle_env.uploads)
    for path in tmp_path.rglob("*"):
        if path.is_file() and "home" not in path.parts:
            haystacks.append(path.read_bytes().decode("latin-1"))
    for secret in secrets:
        assert secret.encode() not in uploaded
        leaks = [h[:200] for h in haystacks if secret in h]
        assert not leaks, f"credential leaked into {leaks}"


def test_credentials_from_kaggle_json(kaggle_env, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = Path(os.environ["KAGGLE_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "kaggle.json").write_text(json.dumps({"username": USERNAME, "key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    # No owner in the id (what `bundle build` writes without `kaggle = ...`): YOU/SLUG.
    bundle = make_bundle(tmp_path / "a", files_v1(), kaggle_id="tiny-bundle-test")
    result = publish(bundle, quiet=True)
    assert result.action == "create" and result.dataset == DATASET
    # No id at all: the bundle name is the slug.
    other = make_bundle(tmp_path / "b", files_v1(), name="other-bundle", kaggle_id=None)
    assert publish(other, quiet=True).dataset == f"{USERNAME}/other-bundle"


def test_dry_run_lists_files_without_credentials_or_server_calls(kaggle_env, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    bundle = make_bundle(tmp_path, files_v1())

    code, out, err = run_cli(str(bundle), "--dry-run")

    assert code == 0, err
    assert kaggle_env.calls == []
    assert "would create or version" in out
    for name in ("bundle.json", "hf.zip", "wheels.zip", "notebooks.zip"):
        assert name in out
    total = sum(len(b) for b in files_v1().values())
    plan = plan_publish(bundle)
    assert plan.total_size == total + (bundle / "bundle.json").stat().st_size + len(b"# tiny\n")


def test_dry_run_with_credentials_says_create_then_unchanged(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path, files_v1())
    assert publish(bundle, dry_run=True).action == "create"
    assert "CreateDataset" not in kaggle_env.methods()
    publish(bundle, quiet=True)
    assert publish(bundle, dry_run=True).action == "unchanged"


def test_bundle_failing_verification_is_refused_before_any_call(kaggle_env, tmp_path):
    bundle = make_bundle(tmp_path / "a", files_v1())
    (bundle / SNAP / "model.safetensors").write_bytes(b"truncated")
    code, out, err = run_cli(str(bundle))
    assert code != 0 and "model.safetensors" in err and "fails verification" in err
    assert kaggle_env.calls == []

    same_size = make_bundle(tmp_path / "c", files_v1())
    path = same_size / SNAP / "model.safetensors"
    path.write_bytes(bytes(path.stat().st_size))  # same size, other bytes: only sha256 tells
    code, out, err = run_cli(str(same_size), "--full-verify")
    assert code != 0 and "sha256 differs" in err
    assert kaggle_env.calls == []

    stray = make_bundle(tmp_path / "b", files_v1())
    (stray / ".env").write_text("SECRET=1")
    with pytest.raises(BundleCheckError, match=r"\.env: not listed"):
        publish(stray)


@pytest.mark.parametrize(
    ("dataset", "title", "match"),
    [
        ("alice/tiny", "Tiny bundle for tests", "6-50"),
        ("alice/Bad_Slug", "Tiny bundle for tests", "lowercase"),
        ("no-slash", "Tiny bundle for tests", "OWNER/SLUG"),
        (None, "Tiny", "title"),
        (None, "T" * 51, "title"),
    ],
)
def test_kaggle_naming_rules_checked_before_upload(kaggle_env, tmp_path, dataset, title, match):
    bundle = make_bundle(tmp_path, files_v1(), title=title)
    with pytest.raises(KaggleMetadataError, match=match):
        publish(bundle, dataset=dataset)
    assert kaggle_env.calls == []


def test_published_bundle_as_kaggle_mounts_it_is_found_and_resolved_by_the_runtime(
    kaggle_env, bundle_factory, tmp_path, monkeypatch
):
    import runtime
    from runtime.constants import DEFAULT_SEARCH_ROOTS
    from tests.fixtures.bundles import activated, make_read_only

    weights = b"tiny mobilenet weights published to kaggle"
    bundle = bundle_factory(f'''
        [bundle]
        name = "tiny-flood"
        version = "1.0.0"
        title = "Tiny flood bundle"
        kaggle = "{USERNAME}/tiny-flood-bundle"

        [[artifact]]
        id = "mnv3"
        source = "torchvision"
        weights = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        sha256 = "{hashlib.sha256(weights).hexdigest()}"
    ''', urls={"https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth": weights})
    assert publish(bundle, quiet=True).action == "create"

    # Both Kaggle mount styles, under tmp_path instead of /.
    older = kaggle_env.mount(f"{USERNAME}/tiny-flood-bundle", tmp_path / "kaggle/input/tiny-flood-bundle")
    newer = kaggle_env.mount(f"{USERNAME}/tiny-flood-bundle",
                             tmp_path / f"kaggle/input/datasets/{USERNAME}/tiny-flood-bundle")
    make_read_only(tmp_path / "kaggle")
    roots = [f"{tmp_path}{p}" for p in DEFAULT_SEARCH_ROOTS if p.startswith("/kaggle/input")]
    monkeypatch.delenv("BUNDLE_PATH", raising=False)
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", os.pathsep.join(roots))
    assert {p.resolve() for p in map(Path, runtime.locate())} == {older.resolve(), newer.resolve()}
    for mounted in (older, newer):
        with activated(mounted):
            path = runtime.resolve("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
            assert path.read_bytes() == weights


def test_wrong_key_is_refused_with_a_hint(kaggle_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "not-the-key")
    code, out, err = run_cli(str(make_bundle(tmp_path, files_v1())))
    assert code == 1 and "HTTP 401" in err and "Unauthenticated" in err and "KAGGLE_KEY" in err
    assert "not-the-key" not in err + out
