"""The catalogue as a newcomer meets it: spec file, bundle folder and stack share one name,
each spec declares what its stacks load, and Kaggle's rules are met or warned about."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.kaggle_rules import publish_warnings
from builder.spec import load_spec
from runtime.stacks import get_stack, list_stacks

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "bundles").glob("*.toml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_each_catalogue_spec_builds_the_folder_and_serves_the_stack_of_its_name(path):
    spec = load_spec(path)
    assert spec.name == path.stem  # bundles/flood.toml -> bundles-dist/flood/ -> bundle run flood
    assert path.stem in spec.stacks and get_stack(path.stem).spec == f"bundles/{path.name}"
    assert publish_warnings(name=spec.name, kaggle=spec.kaggle, title=spec.title) == []
    declared = {a.get("repo") or a.get("weights") or a.get("model") or a.get("url") for a in spec.artifacts}
    for stack in spec.stacks:
        required, _optional = get_stack(stack).roles()
        for role, names in required.items():
            assert set(names) & declared, f"{path.name}: stack {stack} role {role} needs {names}"


def test_every_stack_has_a_catalogue_spec():
    assert {p.stem for p in SPECS} >= set(list_stacks()) - {"masked-ssl"}  # it loads nothing
    assert "masked-ssl" in load_spec(ROOT / "bundles" / "landcover.toml").stacks


def test_a_short_name_builds_with_a_warning_that_publish_would_refuse_it(file_server, tmp_path):
    from builder.cli import main

    data = b"weights"
    url = file_server.add("/demo/w.bin", data)
    spec = tmp_path / "demo.toml"
    spec.write_text(f'[bundle]\nname = "demo"\nversion = "1.0.0"\n\n[[artifact]]\nid = "w"\n'
                    f'source = "url"\nurl = "{url}"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                       "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "demo" / "bundle.json").is_file()
    assert "the bundle name 'demo' has 4 characters" in result.stderr
    assert 'Add kaggle = "demo-bundle"' in result.stderr
    # With a slug of its own, the same bundle folder and no warning.
    spec.write_text(spec.read_text().replace('version = "1.0.0"', 'version = "1.0.0"\nkaggle = "demo-bundle"'))
    again = CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                      "--store", str(tmp_path / "store")])
    assert again.exit_code == 0 and "would refuse" not in again.stderr
