"""The `bundle` command group: fast start, lazy commands, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from builder.cli import COMMANDS, LazyGroup, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "huggingface_hub", "timm", "requests", "docker", "kaggle",
         "builder.pipeline", "builder.fetch")


def test_help_lists_every_command_without_importing_heavy_modules():
    code = (
        "import sys\n"
        "from builder.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "LOADED []" in out


def test_python_dash_m_builder_is_the_bundle_command():
    out = subprocess.run([sys.executable, "-m", "builder", "build", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "Usage: bundle build" in out and "Examples:" in out and "--mirror FROM=TO" in out


def test_a_command_whose_module_is_missing_fails_alone_with_a_clear_message():
    @click.command()
    def hello() -> None:
        click.echo("hello works")

    import types

    module = types.ModuleType("tests._cli_fake")
    module.hello = hello
    sys.modules["tests._cli_fake"] = module
    try:
        group = LazyGroup(name="bundle", lazy={
            "ghost": ("builder.no_such_module:ghost_command", "A command not written yet."),
            "hello": ("tests._cli_fake:hello", "Says hello."),
        })
        runner = CliRunner()
        listing = runner.invoke(group, ["--help"])
        assert listing.exit_code == 0 and "A command not written yet." in listing.output
        assert runner.invoke(group, ["hello"]).output == "hello works\n"
        ghost = runner.invoke(group, ["ghost", "--help"])
        assert ghost.exit_code != 0
        assert "bundle ghost" in ghost.output and "builder.no_such_module" in ghost.output
        assert "Traceback" not in ghost.output
    finally:
        del sys.modules["tests._cli_fake"]


def test_bad_mirror_option_is_a_one_line_error(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[bundle]\nname = "s"\nversion = "1"\n')
    result = CliRunner().invoke(main, ["build", str(spec), "--mirror", "no-equals-sign"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "FROM=TO" in result.stderr


def test_verify_of_a_folder_without_bundle_json_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 1
    assert "bundle.json" in result.stderr and result.stderr.count("\n") == 1


def test_a_spec_that_asks_for_nothing_is_an_error_not_an_empty_bundle(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[bundle]\nname = "empty"\nversion = "0.1"\n')
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                       "--store", str(tmp_path / "store")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {spec}: the spec asks for nothing")
    assert "[[artifact]]" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
