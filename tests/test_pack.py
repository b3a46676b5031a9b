"""`bundle pack` / `bundle unpack`: one deterministic zip that the runtime finds on Drive."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.publish.pack import (
    PackError,
    UnsafeArchiveError,
    pack_bundle,
    pack_command,
    unpack_bundle,
    unpack_command,
)
from runtime.constants import DEFAULT_SEARCH_ROOTS
from tests.test_kaggle import files_v1, make_bundle


def test_pack_is_deterministic_and_holds_one_top_folder(tmp_path):
    bundle = make_bundle(tmp_path / "src", files_v1())
    first = pack_bundle(bundle, tmp_path / "a.zip")
    for path in bundle.rglob("*"):  # new mtimes and a different umask change nothing
        os.utime(path, (1_800_000_000, 1_800_000_000))
    second = pack_bundle(bundle, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert first.files == len(files_v1()) + 3  # + bundle.json, dataset-metadata.json, README.md
    with zipfile.ZipFile(second.archive) as zf:
        names = zf.namelist()
    assert names == sorted(names)
    assert all(n.startswith("tiny-bundle-test/") for n in names)
    assert "tiny-bundle-test/bundle.json" in names


def test_unpacked_on_drive_the_runtime_finds_it(tmp_path, monkeypatch):
    import runtime

    assert "/content/drive/MyDrive/bundles/*" in DEFAULT_SEARCH_ROOTS
    files = files_v1()
    bundle = make_bundle(tmp_path / "src", files)
    code = CliRunner().invoke(pack_command, [str(bundle), "--zip", "--out", str(tmp_path / "b.zip")])
    assert code.exit_code == 0, code.output
    drive = tmp_path / "content" / "drive" / "MyDrive" / "bundles"
    result = CliRunner().invoke(unpack_command, [str(tmp_path / "b.zip"), "--dest", str(drive)])
    assert result.exit_code == 0, result.output
    unpacked = drive / "tiny-bundle-test"
    for rel, data in files.items():
        assert (unpacked / rel).read_bytes() == data
    # The Drive root pattern, re-rooted under tmp_path.
    monkeypatch.delenv("BUNDLE_PATH", raising=False)
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", str(tmp_path) + "/content/drive/MyDrive/bundles/*")
    assert [Path(p).resolve() for p in runtime.locate()] == [unpacked.resolve()]


def _evil_zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("members", "symlink"),
    [
        ({"b/bundle.json": b"{}", "b/../../escape.txt": b"x"}, None),
        ({"b/bundle.json": b"{}", "/tmp/abs-escape.txt": b"x"}, None),
        ({"b/bundle.json": b"{}", "b\\..\\..\\escape.txt": b"x"}, None),
        ({"b/bundle.json": b"{}"}, "b/hf/link"),
    ],
)
def test_unpack_refuses_paths_outside_target_and_writes_nothing(tmp_path, members, symlink):
    archive = _evil_zip(tmp_path / "evil.zip", members, symlink=symlink)
    dest = tmp_path / "root" / "dest"
    with pytest.raises(UnsafeArchiveError):
        unpack_bundle(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "root" / "escape.txt").exists()


def test_unpack_rejects_tampered_bytes_and_leaves_no_folder(tmp_path):
    bundle = make_bundle(tmp_path / "src", files_v1())
    packed = pack_bundle(bundle, tmp_path / "b.zip").archive
    # Rewrite one member with other bytes of the same size (CRC recomputed): only sha256 can tell.
    tampered = tmp_path / "t.zip"
    with zipfile.ZipFile(packed) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model.safetensors"):
                data = bytes(len(data))
            dst.writestr(info, data)
    dest = tmp_path / "dest"
    with pytest.raises(PackError, match="sha256"):
        unpack_bundle(tampered, dest)
    assert list(dest.iterdir()) == []
    assert unpack_bundle(packed, dest).name == "tiny-bundle-test"
    with pytest.raises(PackError, match="already exists"):
        unpack_bundle(packed, dest)


def test_pack_refuses_a_bundle_that_fails_its_check(tmp_path):
    bundle = make_bundle(tmp_path / "src", files_v1())
    (bundle / "notebooks" / "tiny.ipynb").write_bytes(b"changed size")
    result = CliRunner().invoke(pack_command, [str(bundle), "--out", str(tmp_path / "x.zip")])
    assert result.exit_code == 1 and "nothing packed" in result.output
    assert not (tmp_path / "x.zip").exists()


def test_bundle_cli_reaches_pack_and_publish(tmp_path):
    # Through the real `bundle` group: the names the CLI registers lead to these commands.
    from builder.cli import main

    bundle = make_bundle(tmp_path / "src", files_v1())
    packed = CliRunner().invoke(main, ["pack", str(bundle), "--zip", "--out", str(tmp_path / "x.zip")])
    assert packed.exit_code == 0, packed.output
    assert zipfile.is_zipfile(tmp_path / "x.zip")
    helped = CliRunner().invoke(main, ["publish", "--help"])
    assert helped.exit_code == 0 and "--dry-run" in helped.output
