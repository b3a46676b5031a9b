"""bundle.json contract (runtime/manifest.py): what the builder writes, the runtime trusts."""

from __future__ import annotations

import json

import pytest

from runtime.manifest import (
    ArtifactEntry,
    FileEntry,
    Manifest,
    ManifestError,
    check_relative_path,
    compute_digest,
    is_generated,
    manifest_from_json,
    read_manifest,
    write_manifest,
)

SHA = "a" * 64


def _manifest() -> Manifest:
    return Manifest(
        name="demo", version="1.0.0", title="Demo bundle", stacks=["emotion-vit"],
        created="2026-11-21T00:00:00Z",
        artifacts=[ArtifactEntry(
            id="vit", source="hf", ref="org/vit", revision="c" * 40,
            path="hf/models--org--vit/snapshots/" + "c" * 40,
            files=[FileEntry("hf/models--org--vit/snapshots/" + "c" * 40 + "/config.json", 2, SHA)],
            aliases=["vit-alias"], fallbacks=["other"])],
        extra_files=[FileEntry("wheels/x-1.0-py3-none-any.whl", 10, "b" * 64)],
    )


def test_write_then_read_round_trips_every_field(tmp_path):
    written = _manifest()
    write_manifest(tmp_path, written)
    read = read_manifest(tmp_path)
    assert read == written
    assert read.artifact("vit").names() == ["vit", "org/vit", "vit-alias"]
    assert read.size == 12
    assert not list(tmp_path.glob(".bundle.json.tmp-*"))  # atomic write leaves no temp file


def test_manifest_text_is_deterministic(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_manifest(tmp_path / name, _manifest())
    assert (tmp_path / "a/bundle.json").read_bytes() == (tmp_path / "b/bundle.json").read_bytes()


def test_digest_covers_path_size_and_hash_of_every_file():
    files = [FileEntry("a", 1, SHA), FileEntry("b", 2, SHA)]
    base = compute_digest(files)
    assert compute_digest(list(reversed(files))) == base  # order-independent
    assert compute_digest([FileEntry("a", 1, SHA), FileEntry("b", 3, SHA)]) != base
    assert compute_digest([FileEntry("a", 1, SHA), FileEntry("c", 2, SHA)]) != base
    assert compute_digest([FileEntry("a", 1, SHA), FileEntry("b", 2, "b" * 64)]) != base


def test_a_hand_edited_size_breaks_the_digest(tmp_path):
    write_manifest(tmp_path, _manifest())
    data = json.loads((tmp_path / "bundle.json").read_text())
    data["artifacts"][0]["files"][0]["size"] = 3
    (tmp_path / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="'digest' does not match"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../outside", "hf/../../x", "a//b", "./a", "C:/x", "a\\b", "", "a/\0b",
])
def test_unsafe_paths_are_refused(path):
    with pytest.raises(ManifestError, match="where"):
        check_relative_path(path, "where")


def test_safe_relative_paths_pass():
    assert check_relative_path("hf/models--a--b/snapshots/c/x.json", "w") == \
        "hf/models--a--b/snapshots/c/x.json"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("name"), "missing field 'name'"),
    (lambda d: d.update(format=99), "newer than this runtime"),
    (lambda d: d["artifacts"][0]["files"][0].update(size=True), "'size' must be int"),
    (lambda d: d["artifacts"][0]["files"][0].update(sha256="XYZ"), "64 lowercase hex"),
    (lambda d: d["artifacts"][0].update(path="../x"), "path traversal"),
    (lambda d: d["artifacts"].append(dict(d["artifacts"][0])), "duplicate id"),
    (lambda d: d["artifacts"][0].update(aliases=[1]), "list of strings"),
])
def test_malformed_manifests_name_the_field(mutate, message):
    data = _manifest().to_json()
    mutate(data)
    with pytest.raises(ManifestError, match=message):
        manifest_from_json(data, "x/bundle.json")


def test_a_file_listed_twice_is_refused():
    data = _manifest().to_json()
    data["extra_files"].append(dict(data["artifacts"][0]["files"][0]))
    with pytest.raises(ManifestError, match="listed twice"):
        manifest_from_json(data)


def test_missing_or_broken_bundle_json_says_which_file(tmp_path):
    with pytest.raises(ManifestError, match="not found; is this a bundle folder"):
        read_manifest(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"bundle\.json: not valid JSON"):
        read_manifest(tmp_path)


def test_generated_top_level_files_are_recognised():
    assert is_generated("bundle.json") and is_generated("README.md")
    assert not is_generated("hf/README.md") and not is_generated("notes.md")


def test_revision_is_what_was_asked_and_commit_what_it_resolved_to_old_bundles_included():
    commit = "c" * 40
    data = _manifest().to_json()
    data["artifacts"][0]["revision"] = "main"
    data["artifacts"][0]["commit"] = commit
    (art,) = manifest_from_json(data).artifacts
    assert art.revision == "main" and art.commit == commit
    assert art.to_json()["revision"] == "main" and art.to_json()["commit"] == commit
    # A bundle made before `commit` existed kept the commit in `revision`.
    del data["artifacts"][0]["commit"]
    data["artifacts"][0]["revision"] = commit
    assert manifest_from_json(data).artifacts[0].commit == commit
