"""`source = "local"`: your own files and folders in a bundle, pinned, copied, served offline.

Real files (a torch checkpoint, a save_pretrained folder made by transformers) are
built into a bundle by the real builder and loaded back by unmodified library code
under `activate(strict=True)`, from a read-only bundle, as an unprivileged user
where this machine can switch to one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from runtime.manifest import read_manifest
from tests.test_runtime_support import nobody_skip_reason, run_as_nobody


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write_spec(folder: Path, body: str) -> Path:
    spec = folder / "spec.toml"
    spec.write_text('[bundle]\nname = "my-weights"\nversion = "1.0.0"\n\n'
                    + textwrap.dedent(body).strip() + "\n")
    return spec


@pytest.fixture
def own_files(tmp_path) -> Path:
    """What a user holds: a checkpoint, a save_pretrained folder and a torch.hub file."""
    import torch
    from transformers import ViTConfig, ViTModel

    work = tmp_path / "work"
    (work / "checkpoints").mkdir(parents=True)
    torch.save({"layer.weight": torch.arange(6.0).reshape(2, 3)}, work / "checkpoints" / "celeba_hq.ckpt")
    torch.save({"fc.weight": torch.ones(2, 2)}, work / "checkpoints" / "net-1a2b3c4d.pth")
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, image_size=32, patch_size=8)
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(work / "runs" / "vit" / "hf")
    return work


def pinned_spec(work: Path) -> Path:
    hf = work / "runs" / "vit" / "hf"
    pins = ", ".join(f'"{p.name}" = "{sha(p)}"' for p in sorted(hf.iterdir()))
    return write_spec(work, f"""
        [[artifact]]
        id = "celeba-hq"
        source = "local"
        path = "checkpoints/celeba_hq.ckpt"
        sha256 = "{sha(work / 'checkpoints' / 'celeba_hq.ckpt')}"

        [[artifact]]
        id = "net"
        source = "local"
        path = "checkpoints/net-1a2b3c4d.pth"
        sha256 = "{sha(work / 'checkpoints' / 'net-1a2b3c4d.pth')}"
        torch_hub = true

        [[artifact]]
        id = "my-vit"
        source = "local"
        path = "runs/vit/hf"
        repo = "me/my-finetuned-vit"
        files = {{ {pins} }}

        [[artifact]]
        id = "plain-folder"
        source = "local"
        path = "runs/vit/hf"
        include = ["*.json"]
        files = {{ "config.json" = "{sha(hf / 'config.json')}" }}
    """)


LOADER = textwrap.dedent("""
    import json, sys
    import runtime
    runtime.activate(strict=True)
    import torch
    from transformers import ViTModel
    model = ViTModel.from_pretrained("me/my-finetuned-vit")          # unmodified, by repo id
    ckpt = torch.load(runtime.resolve("celeba-hq"), weights_only=True)  # by artifact id
    hub = torch.hub.load_state_dict_from_url("https://example.invalid/w/net-1a2b3c4d.pth")
    config = json.loads((runtime.resolve("plain-folder") / "config.json").read_text())
    print(json.dumps({"hidden": model.config.hidden_size,
                      "ckpt": ckpt["layer.weight"].tolist(), "hub": hub["fc.weight"].tolist(),
                      "config_hidden": config["hidden_size"],
                      "sum": float(sum(p.sum() for p in model.parameters()))}))
""")


def test_own_file_folder_and_hub_folder_are_built_verified_and_loaded_offline_read_only(
    own_files, tmp_path
):
    import torch
    from transformers import ViTModel

    spec = pinned_spec(own_files)
    result = cli("build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["copied_files"] == 5 and report["fetched_files"] == 0
    bundle = tmp_path / "dist" / "my-weights"
    assert cli("verify", bundle).exit_code == 0

    manifest = read_manifest(bundle)
    arts = {a.id: a for a in manifest.artifacts}
    assert arts["celeba-hq"].path == "files/celeba-hq/celeba_hq.ckpt"
    assert arts["net"].path == "torch/hub/checkpoints/net-1a2b3c4d.pth"
    assert arts["my-vit"].ref == "me/my-finetuned-vit"
    assert arts["my-vit"].path.startswith("hf/models--me--my-finetuned-vit/snapshots/")
    assert [f.path.rsplit("/", 1)[-1] for f in arts["plain-folder"].files] == ["config.json"]
    # Nothing of the build machine's paths in what travels.
    assert str(own_files) not in (bundle / "bundle.json").read_text()
    assert str(own_files) not in (bundle / "README.md").read_text()

    for path in sorted(bundle.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    bundle.chmod(0o555)
    env = {"BUNDLE_PATH": "{base}/bundle", "OFFLINE_BUNDLE_SEARCH_ROOTS": "", "HOME": "/nonexistent"}
    if nobody_skip_reason() is None:
        proc = run_as_nobody(LOADER, [], binds={"bundle": bundle}, env=env)
    else:  # the same loads as this user (the bundle is read-only all the same)
        import subprocess

        proc = subprocess.run([sys.executable, "-c", LOADER], capture_output=True, text=True,
                              env={**os.environ, "BUNDLE_PATH": str(bundle),
                                   "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
                                   "HF_HOME": str(tmp_path / "empty-hf"),
                                   "TORCH_HOME": str(tmp_path / "empty-torch")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    original = ViTModel.from_pretrained(own_files / "runs" / "vit" / "hf")
    assert loaded["hidden"] == 32 and loaded["config_hidden"] == 32
    assert loaded["sum"] == pytest.approx(float(sum(p.detach().sum() for p in original.parameters())))
    assert loaded["ckpt"] == torch.arange(6.0).reshape(2, 3).tolist()
    assert loaded["hub"] == [[1.0, 1.0], [1.0, 1.0]]


def test_unpinned_files_stop_the_build_with_the_lines_to_add(own_files, tmp_path):
    ckpt = own_files / "checkpoints" / "celeba_hq.ckpt"
    hf = own_files / "runs" / "vit" / "hf"
    spec = write_spec(own_files, """
        [[artifact]]
        id = "celeba-hq"
        source = "local"
        path = "checkpoints/celeba_hq.ckpt"

        [[artifact]]
        id = "my-vit"
        source = "local"
        path = "runs/vit/hf"
        repo = "me/my-finetuned-vit"
    """)
    result = cli("build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store")
    assert result.exit_code == 1
    assert f'add sha256 = "{sha(ckpt)}"' in result.stderr
    assert f'"config.json" = "{sha(hf / "config.json")}"' in result.stderr
    assert not (tmp_path / "dist" / "my-weights").exists()

    # Pasting what the error said builds.
    text = spec.read_text().replace(
        'path = "checkpoints/celeba_hq.ckpt"\n', f'path = "checkpoints/celeba_hq.ckpt"\nsha256 = "{sha(ckpt)}"\n'
    )
    pins = result.stderr.split("add files = ", 1)[1].split(", or build", 1)[0]
    text = text.replace('repo = "me/my-finetuned-vit"\n', f'repo = "me/my-finetuned-vit"\nfiles = {pins}\n')
    spec.write_text(text)
    result = cli("build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store")
    assert result.exit_code == 0, result.output


def test_trust_on_first_use_records_what_is_there_and_a_rebuild_sees_a_changed_file(
    own_files, tmp_path
):
    ckpt = own_files / "checkpoints" / "celeba_hq.ckpt"
    spec = write_spec(own_files, """
        [[artifact]]
        id = "celeba-hq"
        source = "local"
        path = "checkpoints/celeba_hq.ckpt"
    """)
    args = ["build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store",
            "--trust-on-first-use"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("TRUSTING FIRST USE") == 1
    bundle = tmp_path / "dist" / "my-weights"
    assert read_manifest(bundle).artifacts[0].files[0].sha256 == sha(ckpt)

    ckpt.write_bytes(ckpt.read_bytes() + b"retrained")
    assert cli(*args).exit_code == 0
    assert read_manifest(bundle).artifacts[0].files[0].sha256 == sha(ckpt)


def test_a_file_changed_after_it_was_pinned_is_refused(own_files, tmp_path):
    ckpt = own_files / "checkpoints" / "celeba_hq.ckpt"
    spec = write_spec(own_files, f"""
        [[artifact]]
        id = "celeba-hq"
        source = "local"
        path = "checkpoints/celeba_hq.ckpt"
        sha256 = "{sha(ckpt)}"
    """)
    ckpt.write_bytes(b"not the pinned bytes")
    result = cli("build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store")
    assert result.exit_code == 1
    assert "changed since it was pinned" in result.stderr and f"pin sha256 {sha(ckpt)}" in result.stderr
    assert not (tmp_path / "dist" / "my-weights").exists()


def _refusal(work: Path, tmp_path: Path, body: str) -> str:
    spec = write_spec(work, body)
    result = cli("build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store",
                 "--trust-on-first-use")
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "dist" / "my-weights").exists()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return "\n".join(lines)


def test_paths_that_are_not_plain_files_of_the_folder_are_refused_in_one_line(tmp_path):
    work = tmp_path / "work"
    folder = work / "run"
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"weights")
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the bundle")

    def local(path: str, extra: str = "") -> str:
        return f'[[artifact]]\nid = "x"\nsource = "local"\npath = "{path}"\n{extra}'

    assert "does not exist" in _refusal(work, tmp_path, local("nowhere/model.bin"))

    os.mkfifo(work / "fifo")
    assert "is a FIFO, not a file or folder" in _refusal(work, tmp_path, local("fifo"))

    (folder / "escape").symlink_to(outside)
    message = _refusal(work, tmp_path, local("run"))
    assert "symlink out of the folder" in message and str(folder / "escape") in message
    (folder / "escape").unlink()

    (folder / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert "looks like a credential file (kaggle.json)" in _refusal(work, tmp_path, local("run"))
    (folder / "kaggle.json").unlink()

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sock"))
        assert "is a socket" in _refusal(work, tmp_path, local("run"))
    (folder / "sock").unlink()

    assert "field 'sha256' is for a file" in _refusal(
        work, tmp_path, local("run", f'sha256 = "{"0" * 64}"'))
    assert "field 'files' is for a folder" in _refusal(
        work, tmp_path, local("run/model.bin", 'files = { "a" = "' + "0" * 64 + '" }'))
    message = _refusal(work, tmp_path, local("run", 'files = { "other.bin" = "' + "0" * 64 + '" }'))
    assert "pins other.bin, not in" in message
    (folder / "extra.bin").write_bytes(b"more")
    message = _refusal(work, tmp_path, local("run", f'files = {{ "model.bin" = "{sha(folder / "model.bin")}" }}'))
    assert "extra.bin that field 'files' does not pin" in message


def test_spec_checks_of_the_local_source(tmp_path):
    def load(body: str) -> str:
        spec = write_spec(tmp_path, body)
        result = cli("build", spec, "--out", tmp_path / "dist", "--store", tmp_path / "store")
        assert result.exit_code == 1
        return result.stderr

    assert "field 'path' is required" in load('[[artifact]]\nid = "x"\nsource = "local"\n')
    assert "exclude each other" in load(
        '[[artifact]]\nid = "x"\nsource = "local"\npath = "a"\nsha256 = "' + "0" * 64
        + '"\nfiles = { "a" = "' + "0" * 64 + '" }\n')
    assert "field 'repo' must be ORG/NAME" in load(
        '[[artifact]]\nid = "x"\nsource = "local"\npath = "a"\nrepo = "not a repo"\n')
    # A url artifact cannot name a local file: only the local source copies files.
    assert "must be an http(s) URL" in load(
        '[[artifact]]\nid = "x"\nsource = "url"\nurl = "file:///etc/passwd"\nsha256 = "'
        + "0" * 64 + '"\n')
