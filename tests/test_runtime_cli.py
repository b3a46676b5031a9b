"""`bundle doctor` and `bundle run`, through the real `bundle` command group."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

import runtime
from builder.cli import main
from runtime import constants
from runtime.stacks import Need, Stack
from runtime.stacks.record import registered
from tests.test_runtime_support import hf_art, make_bundle

# This module doubles as a stack, "demo-stack": `hello` loads vit-tiny from a bundle,
# `offline-hello` loads nothing.


@click.group()
def cli() -> None:
    """Demo stack."""


@cli.command()
@click.option("--name", default="world", help="Who to greet.")
def hello(name: str) -> None:
    """Say hello and show what the runtime resolved."""
    act = runtime.current()
    click.echo(f"hello {name}; activated={act is not None}; vit={runtime.resolve('vit-tiny').name}")


@cli.command("offline-hello")
def offline_hello() -> None:
    """Say hello; load nothing."""
    click.echo(f"hello; activated={runtime.current() is not None}")


DEMO = Stack("demo-stack", cli, "a demo", needs=(Need("vit-tiny", ("vit-tiny",), ("hello",)),))


@pytest.fixture
def attached(tmp_path, monkeypatch):
    monkeypatch.setitem(registered(), "demo-stack", DEMO)
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, "")
    monkeypatch.setenv(constants.ENV_VIEW_DIR, str(tmp_path / "views"))

    def attach(arts, stacks):
        bundle = make_bundle(tmp_path / "b", "demo", arts, stacks=stacks)
        monkeypatch.setenv(constants.ENV_BUNDLE_PATH, str(bundle))
        return bundle

    yield attach
    runtime.deactivate()


VIT = hf_art("vit-tiny", "org/vit-tiny", {"config.json": b"{}"})


def test_doctor_reports_bundles_stacks_gpu_and_versions(attached):
    bundle = attached([VIT], ["demo-stack", "not-yet-written"])
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"demo 1.0.0  {bundle}" in result.output
    assert "demo-stack: ok" in result.output
    assert "    vit-tiny: vit-tiny = org/vit-tiny@" in result.output  # the role, what a run loads
    assert "not-yet-written: unknown stack" in result.output
    assert "GPU: " in result.output and "Libraries: " in result.output


def test_doctor_exits_1_naming_the_artifact_a_stack_misses(attached):
    attached([hf_art("other", "org/other", {"config.json": b"{}"})], ["demo-stack"])
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "demo-stack: MISSING vit-tiny" in result.output


def test_doctor_json_is_machine_readable(attached):
    attached([VIT], ["demo-stack"])
    result = CliRunner().invoke(main, ["doctor", "--json"])
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["bundles"][0]["artifacts"] == ["vit-tiny"]
    (stack,) = report["stacks"]
    assert {k: stack[k] for k in ("name", "status", "needs", "missing")} == {
        "name": "demo-stack", "status": "ok", "needs": ["vit-tiny"], "missing": []}
    (role,) = stack["roles"]
    assert role["status"] == "ok" and role["used"].startswith("vit-tiny = org/vit-tiny@")
    assert set(report["gpu"]) >= {"available", "bf16", "fp16", "capability"}
    assert report["libraries"]["offline-bundle"]


def test_doctor_without_any_bundle_exits_1(attached, monkeypatch):
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH, raising=False)
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, "/nowhere/input/*:/nowhere/opt/*")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1 and "BUNDLE_PATH" in result.output
    # With nothing found, every place looked in is listed (bundle doctor -v lists them always).
    assert "looked in $BUNDLE_PATH (unset), then:\n    /nowhere/input/*\n    /nowhere/opt/*" in result.output


def test_run_activates_then_hands_the_arguments_to_the_stack(attached):
    attached([VIT], ["demo-stack"])
    result = CliRunner().invoke(main, ["run", "demo-stack", "hello", "--name", "kaggle"])
    assert result.exit_code == 0, result.output
    assert "hello kaggle; activated=True; vit=" in result.output


def test_run_passes_help_through_to_the_stack_command(attached):
    attached([VIT], ["demo-stack"])
    result = CliRunner().invoke(main, ["run", "demo-stack", "hello", "--help"])
    assert result.exit_code == 0
    assert "Who to greet." in result.output


@pytest.mark.parametrize("args", [["--help"], ["hello", "--help"], ["helo"]])
def test_run_help_and_typos_need_no_bundle_and_warn_about_none(attached, monkeypatch, args):
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH, raising=False)
    result = CliRunner().invoke(main, ["run", "demo-stack", *args])
    assert "no bundle found" not in result.output + result.stderr
    assert runtime.current() is None
    if args[-1] == "--help":
        assert result.exit_code == 0 and "Usage: bundle run demo-stack" in result.output
    else:
        assert result.exit_code == 2 and "No such command 'helo'" in result.stderr


def test_run_lists_known_stacks_and_refuses_unknown_ones(attached):
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0 and "emotion-vit" in result.output and "ddrm" in result.output
    result = CliRunner().invoke(main, ["run", "no-such-stack", "train"])
    assert result.exit_code == 2
    assert "unknown stack 'no-such-stack'" in result.output and "landcover" in result.output


def test_run_says_how_to_fix_a_stack_that_cannot_be_imported(attached, monkeypatch, tmp_path):
    import runtime.stacks

    # A stack module whose library is not installed, found where stack modules are.
    extra = tmp_path / "more_stacks"
    extra.mkdir()
    (extra / "half_installed.py").write_text("import no_such_library_for_offline_bundle\n")
    monkeypatch.setattr(runtime.stacks, "__path__", [*runtime.stacks.__path__, str(extra)])
    result = CliRunner().invoke(main, ["run", "half-installed", "train"])
    assert result.exit_code == 1
    assert "stack 'half-installed' cannot be loaded" in result.output
    assert "offline-bundle[stacks]" in result.output
    assert "Traceback" not in result.output


def test_doctor_accepts_any_one_of_a_group_of_alternatives(attached, monkeypatch):
    group = Stack("demo-stack", cli, "a demo", needs=(
        Need("vit-large | vit-tiny", ("vit-large", "vit-tiny"), ("hello",)),
        Need("x | y", ("x", "y"), ("hello",))))
    monkeypatch.setitem(registered(), "demo-stack", group)
    attached([VIT], ["demo-stack"])
    result = CliRunner().invoke(main, ["doctor", "--json"])
    stack = json.loads(result.output)["stacks"][0]
    assert stack["needs"] == ["vit-large | vit-tiny", "x | y"]
    assert stack["missing"] == ["x | y"] and result.exit_code == 1


def test_doctor_agrees_with_run_when_a_declared_fallback_stands_in(attached):
    """The primary's weights are gone and its fallback is complete: `bundle run` would succeed
    on the fallback, so doctor warns (exit 0) and names it; --no-fallbacks makes it fail."""
    primary = hf_art("vit-tiny", "org/vit-tiny", {"model.safetensors": b"v" * 64},
                     fallbacks=["vit-backup"])
    backup = hf_art("vit-backup", "org/vit-backup", {"model.safetensors": b"b" * 64})
    bundle = attached([primary, backup], ["demo-stack"])
    next(bundle.rglob("models--org--vit-tiny/snapshots/*/model.safetensors")).unlink()

    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "demo-stack: ok, on a FALLBACK (WARNING)" in result.output
    line = next(ln for ln in result.output.splitlines() if "WARNING: fallback" in ln)
    assert "vit-backup = org/vit-backup@" in line and "'vit-tiny'" in line and "missing" in line
    strict = CliRunner().invoke(main, ["doctor", "--no-fallbacks", "--json"])
    assert strict.exit_code == 1
    (role,) = json.loads(strict.output)["stacks"][0]["roles"]
    assert role["status"] == "fallback" and role["replaces"] == "vit-tiny"
    # And the run does go ahead on the fallback.
    run = CliRunner().invoke(main, ["run", "demo-stack", "hello", "--name", "x"])
    import hashlib

    assert run.exit_code == 0  # the stack resolved the fallback's snapshot (hf_art's commit)
    assert f"vit={hashlib.sha1(b'org/vit-backup').hexdigest()}" in run.output


def test_doctor_fails_where_a_run_would_fail_a_damaged_artifact_without_fallback(attached):
    bundle = attached([VIT], ["demo-stack"])
    next(bundle.rglob("config.json")).write_bytes(b"{")  # truncated, no fallback declared
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "MISSING" in result.output and "incomplete and no declared fallback" in result.output


def test_run_strict_without_a_bundle_is_fine_for_a_command_that_loads_nothing(attached, monkeypatch):
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH, raising=False)
    result = CliRunner().invoke(main, ["run", "--strict", "demo-stack", "offline-hello"])
    assert result.exit_code == 0, result.output
    assert "hello; activated=True" in result.output
    assert runtime.current().strict
    assert "no bundle" not in result.stderr  # nothing to warn about: nothing is loaded


def test_run_without_a_bundle_names_what_the_command_loads_the_spec_and_where_it_looked(
        attached, monkeypatch):
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH, raising=False)
    result = CliRunner().invoke(main, ["run", "--strict", "demo-stack", "hello"])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.count("\n") == 0, message  # one line
    assert ": bundle run demo-stack hello loads vit-tiny (vit-tiny) from a bundle" in message
    assert "bundle build bundles/demo-stack.toml" in message
    assert "$BUNDLE_PATH (unset)" in message
    assert len(message) < 500


def test_run_names_an_artifact_the_attached_bundles_lack_before_the_command_starts(attached):
    attached([hf_art("other", "org/other", {"config.json": b"{}"})], ["demo-stack"])
    result = CliRunner().invoke(main, ["run", "demo-stack", "hello"])
    assert result.exit_code == 1
    assert "loads vit-tiny (vit-tiny), which none of the attached bundles holds (demo 1.0.0" in result.stderr
    assert "activated=" not in result.output  # the command never ran


def test_run_checks_the_stack_options_before_activating(attached, monkeypatch):
    monkeypatch.delenv(constants.ENV_BUNDLE_PATH, raising=False)
    result = CliRunner().invoke(main, ["run", "--strict", "demo-stack", "hello", "--nmae", "x"])
    assert result.exit_code == 2 and "--nmae" in result.stderr
    assert "Usage: bundle run demo-stack hello" in result.stderr
    assert runtime.current() is None  # nothing was activated
