"""`bundle store ls` / `bundle store prune`: a store that many builds share stays within
what they reference, and never loses a blob a bundle, a lock or a running build needs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest
from click.testing import CliRunner

from builder.cli import main


def _spec(tmp_path, file_server, name: str, files: dict[str, bytes]):
    lines = [f'[bundle]\nname = "{name}"\nversion = "1.0.0"\nkaggle = "{name}-bundle"\n']
    for i, (fname, data) in enumerate(files.items()):
        url = file_server.add(f"/{name}/{fname}", data)
        lines.append(f'[[artifact]]\nid = "a{i}"\nsource = "url"\nurl = "{url}"\n'
                     f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines))
    return path


def _bundle(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def two_bundles(tmp_path, file_server, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./bundles-dist of this test only
    monkeypatch.delenv("BUNDLE_PATH", raising=False)
    shared, only_a, only_b = os.urandom(3000), os.urandom(5000), os.urandom(7000)
    store, out = tmp_path / "store", tmp_path / "out"
    a = _spec(tmp_path, file_server, "alpha", {"shared.bin": shared, "a.bin": only_a})
    b = _spec(tmp_path, file_server, "bravo", {"shared.bin": shared, "b.bin": only_b})
    for spec in (a, b):
        _bundle("build", spec, "--out", out, "--store", store, "--no-progress")
    return store, out, {"shared": shared, "a": only_a, "b": only_b}


def _blobs(store):
    return {p.name for p in (store / "blobs" / "sha256").iterdir()}


def test_ls_counts_blobs_and_the_bundles_that_reference_them(two_bundles):
    store, out, data = two_bundles
    inv = json.loads(_bundle("store", "ls", "--store", store, "--json").output)
    assert inv["blobs"] == 3 and inv["referenced"] == 3 and inv["unreferenced"] == []
    assert sorted(r["bundle"] for r in inv["roots"]) == [str(out / "alpha"), str(out / "bravo")]
    assert {r["referenced"] for r in inv["roots"]} == {2}
    text = _bundle("store", "ls", "--store", store).output
    assert "3 blobs" in text and "unreferenced: 0" in text


def test_prune_frees_what_a_removed_bundle_alone_used_and_keeps_the_rest(two_bundles):
    store, out, data = two_bundles
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in data.items()}
    shutil.rmtree(out / "alpha")
    (out / ".alpha.resolved.json").unlink()
    dry = json.loads(_bundle("store", "prune", "--store", store, "--dry-run", "--json").output)
    assert dry["blobs"] == 1 and dry["blob_bytes"] == 5000 and dry["roots"] == 1
    assert _blobs(store) == set(sha.values())  # a dry run removes nothing
    done = _bundle("store", "prune", "--store", store).output
    assert "removed 1 unreferenced blob(s) (5.0 kB)" in done
    assert _blobs(store) == {sha["shared"], sha["b"]}
    # bravo rebuilds from the store alone: nothing it needs was removed.
    rebuilt = CliRunner().invoke(main, ["build", str(out.parent / "bravo.toml"), "--out", str(out),
                                        "--store", str(store), "--no-progress", "--json"])
    assert json.loads(rebuilt.stdout)["fetched_files"] == 0


def test_a_blob_with_another_hard_link_or_a_lock_naming_it_is_kept(two_bundles):
    store, out, data = two_bundles
    sha_a = hashlib.sha256(data["a"]).hexdigest()
    # The lock still names alpha's files though the folder is gone: kept.
    shutil.rmtree(out / "alpha")
    assert json.loads(_bundle("store", "prune", "--store", store, "--json").output)["blobs"] == 0
    # A hard link elsewhere (a bundle folder no root names): kept as well.
    os.link(store / "blobs" / "sha256" / sha_a, out.parent / "elsewhere.bin")
    (out / ".alpha.resolved.json").unlink()
    report = json.loads(_bundle("store", "prune", "--store", store, "--json").output)
    assert report["blobs"] == 0 and sha_a in _blobs(store)


def test_stale_partials_go_fresh_ones_stay(two_bundles):
    store, _out, _data = two_bundles
    old, fresh = store / "partial" / "old.part", store / "partial" / "fresh.part"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 10)
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    report = json.loads(_bundle("store", "prune", "--store", store, "--json").output)
    assert report["partials"] == 1 and report["partial_bytes"] == 100
    assert not old.exists() and fresh.exists()


def test_prune_refuses_while_a_build_uses_the_store(two_bundles):
    from builder.store.gc import building

    store, _out, _data = two_bundles
    with building(store):
        result = CliRunner().invoke(main, ["store", "prune", "--store", str(store)])
    assert result.exit_code == 1
    assert "a build is using this store right now" in result.stderr
