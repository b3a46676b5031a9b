"""What a newcomer types in the first hour, through the real `bundle` command: listing what
is there, packing with progress and --json, and the same words for every error."""

from __future__ import annotations

import json

from click.testing import CliRunner

from builder.cli import main
from runtime import constants
from tests.test_runtime_support import hf_art, make_bundle

VIT = hf_art("vit-tiny", "org/vit-tiny", {"config.json": b"{}", "model.safetensors": b"w" * 5000})


def test_ls_with_no_target_lists_the_bundles_found_where_activate_looks(tmp_path, monkeypatch):
    a = make_bundle(tmp_path / "a", "alpha", [VIT])
    b = make_bundle(tmp_path / "b", "beta", [VIT], version="2.0.0")
    monkeypatch.setenv(constants.ENV_BUNDLE_PATH, f"{a}:{b}")
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, "")
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "ARTIFACTS", "SIZE", "PATH"]
    assert lines[1].split()[:3] == ["alpha", "1.0.0", "1"] and lines[1].endswith(str(a))
    assert lines[2].split()[:2] == ["beta", "2.0.0"]
    rows = json.loads(CliRunner().invoke(main, ["ls", "--json"]).output)
    assert [(r["name"], r["path"]) for r in rows] == [("alpha", str(a)), ("beta", str(b))]
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH)
    empty = CliRunner().invoke(main, ["ls"])
    assert empty.exit_code == 0 and empty.output.startswith("no bundle found (looked in $BUNDLE_PATH (unset)")


def test_pack_and_unpack_speak_json_and_the_old_zip_flag_still_works(tmp_path):
    bundle = make_bundle(tmp_path / "b", "alpha", [VIT])
    packed = CliRunner().invoke(main, ["pack", str(bundle), "--out", str(tmp_path / "a.zip"), "--json"])
    assert packed.exit_code == 0, packed.output
    info = json.loads(packed.stdout)
    assert info["archive"] == str(tmp_path / "a.zip") and info["name"] == "alpha" and info["files"] >= 2
    again = CliRunner().invoke(main, ["pack", str(bundle), "--zip", "--out", str(tmp_path / "b.zip")])
    assert again.exit_code == 0, again.output
    assert again.stdout.rstrip().endswith("unpack into /content/drive/MyDrive/bundles/ for Colab")
    assert " kB); " in again.stdout  # runtime.sizes.human_size, as every command shows sizes
    assert "--zip" not in CliRunner().invoke(main, ["pack", "--help"]).output  # no option that does nothing
    unpacked = CliRunner().invoke(main, ["unpack", str(tmp_path / "a.zip"), "--dest", str(tmp_path / "u"),
                                         "--json"])
    assert unpacked.exit_code == 0, unpacked.output
    assert json.loads(unpacked.stdout) == {"bundle_dir": str(tmp_path / "u" / "alpha"), "verified": "sha256"}


def test_a_bundle_command_and_a_runtime_command_start_their_errors_alike(tmp_path, monkeypatch):
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, "")
    missing_spec = CliRunner().invoke(main, ["build", str(tmp_path / "nope.toml")])
    unknown_stack = CliRunner().invoke(main, ["run", "no-such-stack", "train"])
    bad_bundle = CliRunner().invoke(main, ["verify", str(tmp_path)])
    for result in (missing_spec, unknown_stack, bad_bundle):
        assert result.exit_code != 0
        assert result.stderr.strip().splitlines()[-1].startswith("Error: "), result.stderr


def test_init_writes_a_spec_that_builds_what_the_stack_loads(tmp_path, monkeypatch):
    from builder.spec import load_spec
    from runtime.stacks import get_stack

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init", "--stack", "emotion-vit", "--offline"])
    assert result.exit_code == 0, result.output
    spec = load_spec(tmp_path / "bundles" / "emotion-vit.toml")
    assert spec.name == "emotion-vit" and spec.stacks == ["emotion-vit"]
    assert {a.get("repo") for a in spec.artifacts} >= set(get_stack("emotion-vit").artifacts)
    again = CliRunner().invoke(main, ["init", "--stack", "emotion-vit", "--offline"])
    assert again.exit_code == 1 and "--force" in again.stderr
    nothing = CliRunner().invoke(main, ["init", "--stack", "masked-ssl", "--offline"])
    assert nothing.exit_code == 1 and "loads nothing from a bundle" in nothing.stderr
    assert "Traceback" not in nothing.output


def test_add_appends_a_checked_block_for_each_kind_of_ref(tmp_path, hub):
    from builder.spec import load_spec

    spec = tmp_path / "my.toml"
    spec.write_text('[bundle]\nname = "my-bundle"\nversion = "1.0.0"\n')
    commit = hub.add_repo_files("org/added", {"config.json": b"{}"})
    for ref in ("org/added", "mobilevit_s.cvnets_in1k", "ResNet18_Weights.IMAGENET1K_V1",
                "https://example.org/models/w.pt"):
        result = CliRunner().invoke(main, ["add", ref, "--spec", str(spec)])
        assert result.exit_code == 0, result.output
    arts = {a.source: a for a in load_spec(spec).artifacts}
    assert arts["hf"].get("revision") == commit  # pinned to what main points at
    assert arts["timm"].get("model") == "mobilevit_s.cvnets_in1k"
    assert arts["torchvision"].get("weights") == "ResNet18_Weights.IMAGENET1K_V1"
    assert arts["url"].get("url") == "https://example.org/models/w.pt"
    before = spec.read_text()
    clash = CliRunner().invoke(main, ["add", "org/added", "--spec", str(spec)])
    assert clash.exit_code == 1 and "duplicate id" in clash.stderr and "--id NAME" in clash.stderr
    assert spec.read_text() == before  # nothing half-written


def test_the_readme_completion_line_gives_a_script_and_stack_help_reads_plainly():
    import os
    import subprocess
    import sys

    script = subprocess.run([sys.executable, "-m", "builder"], capture_output=True, text=True,
                            env={**os.environ, "_BUNDLE_COMPLETE": "bash_source"}, timeout=60)
    assert script.returncode == 0 and "complete " in script.stdout and "_bundle_completion" in script.stdout
    for stack in ("flood", "ddrm", "emotion-vit"):
        shown = CliRunner().invoke(main, ["run", stack, "--help"]).output
        assert "``" not in shown and ":class:" not in shown, stack
