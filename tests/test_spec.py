"""Spec loading and validation: every mistake gives one line naming file, artifact and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.errors import SpecError
from builder.spec import load_spec

GOOD = """
[bundle]
name = "emotion-vit"
version = "1.0.0"
title = "Emotion ViT offline bundle"
kaggle = "someone/emotion-vit"
license = "apache-2.0"
stacks = ["emotion-vit"]

[[artifact]]
id = "vit-in21k"
source = "hf"
repo = "google/vit-base-patch16-224-in21k"
revision = "main"
include = ["*.json", "*.safetensors"]
fallbacks = ["vit-b16"]

[[artifact]]
id = "vit-b16"
source = "torchvision"
weights = "ViT_B_16_Weights.IMAGENET1K_V1"

[[artifact]]
id = "mobilevit-s"
source = "timm"
model = "mobilevit_s.cvnets_in1k"

[[artifact]]
id = "adm-256-uncond"
source = "url"
url = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
sha256 = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"
size = 100
mirrors = ["https://mirror.example.com/256x256_diffusion_uncond.pt"]
alternatives = ["s3://dead-bucket/celeba.ckpt"]

[wheels]
requirements = ["timm==1.0.31"]
python = "3.11"
platform = "manylinux2014_x86_64"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(textwrap.dedent(text).strip() + "\n")
    return path


def test_a_good_spec_loads_with_every_field(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert (spec.name, spec.version, spec.kaggle, spec.license) == (
        "emotion-vit", "1.0.0", "someone/emotion-vit", "apache-2.0")
    assert spec.kaggle_slug == "emotion-vit" and spec.stacks == ["emotion-vit"]
    assert [a.id for a in spec.artifacts] == ["vit-in21k", "vit-b16", "mobilevit-s", "adm-256-uncond"]
    vit = spec.artifacts[0]
    assert vit.get("repo") == "google/vit-base-patch16-224-in21k"
    assert vit.include == ["*.json", "*.safetensors"] and vit.fallbacks == ["vit-b16"]
    adm = spec.artifact("adm-256-uncond")
    assert adm.sha256 == "abcdef0123456789" * 4  # normalised to lower case
    assert adm.size == 100 and adm.mirrors[0].startswith("https://mirror")
    assert spec.wheels == {"requirements": ["timm==1.0.31"], "python": "3.11",
                           "platform": "manylinux2014_x86_64"}


def test_title_defaults_from_the_name(tmp_path):
    spec = load_spec(write(tmp_path, '[bundle]\nname = "abc"\nversion = "1"\n[wheels]\n'))
    assert spec.title == "abc offline bundle" and spec.artifacts == []


HEAD = '[bundle]\nname = "x"\nversion = "1.0.0"\n'
VIT = '[[artifact]]\nid = "vit"\nsource = "hf"\nrepo = "org/vit"\n'

# (spec text, words the one-line message must contain)
BAD_SPECS = {
    "unknown source": (HEAD + '[[artifact]]\nid = "vit"\nsource = "hff"\n',
                       ["artifact 'vit'", "field 'source'", "did you mean 'hf'", "torchvision, url"]),
    "missing required field": (HEAD + '[[artifact]]\nid = "vit"\nsource = "hf"\n',
                               ["artifact 'vit'", "field 'repo' is required for source 'hf'"]),
    "wrong type": (HEAD + VIT + "revision = 3\n",
                   ["artifact 'vit'", "field 'revision' must be a string"]),
    "typo in a field": (HEAD + VIT + 'revsion = "main"\n',
                        ["artifact 'vit'", "unknown field 'revsion'", "did you mean 'revision'"]),
    "field of another source": (HEAD + VIT + 'weights = "A.B"\n',
                                ["artifact 'vit'", "unknown field 'weights'", "source 'hf'"]),
    "duplicate ids": (HEAD + VIT + VIT, ["artifact 'vit'", "field 'id'", "duplicate"]),
    "bad bundle name": ('[bundle]\nname = "My_Bundle"\nversion = "1.0.0"\n',
                        ["[bundle]", "field 'name'", "My_Bundle"]),
    "bad id characters": (HEAD + '[[artifact]]\nid = "vit b/16"\nsource = "hf"\nrepo = "o/n"\n',
                          ["artifact 'vit b/16'", "field 'id'"]),
    "title too short": ('[bundle]\nname = "x"\nversion = "1.0.0"\ntitle = "tiny"\n',
                        ["[bundle]", "field 'title'", "6-50"]),
    "bad version": ('[bundle]\nname = "x"\nversion = "one"\n', ["[bundle]", "field 'version'"]),
    "missing version": ('[bundle]\nname = "x"\n', ["[bundle]", "field 'version' is required"]),
    "fallback to nowhere": (HEAD + VIT + 'fallbacks = ["vit-base"]\n',
                            ["artifact 'vit'", "field 'fallbacks'", "'vit-base'"]),
    "fallback to itself": (HEAD + VIT + 'fallbacks = ["vit"]\n',
                           ["artifact 'vit'", "field 'fallbacks'", "itself"]),
    "bad sha256": (HEAD + '[[artifact]]\nid = "ckpt"\nsource = "url"\nurl = "https://e.com/a.pt"\n'
                   'sha256 = "abc"\n', ["artifact 'ckpt'", "field 'sha256'", "64 hex"]),
    "bad kaggle id": ('[bundle]\nname = "x"\nversion = "1.0.0"\nkaggle = "Alice/My_Slug"\n',
                      ["[bundle]", "field 'kaggle'", "OWNER/SLUG or SLUG"]),
    "bad repo": (HEAD + '[[artifact]]\nid = "vit"\nsource = "hf"\nrepo = "a/b/c"\n',
                 ["artifact 'vit'", "field 'repo'", "ORG/NAME"]),
    "bad weights name": (HEAD + '[[artifact]]\nid = "w"\nsource = "torchvision"\nweights = "vit_b_16"\n',
                         ["artifact 'w'", "field 'weights'"]),
    "url that is not a URL": (HEAD + '[[artifact]]\nid = "c"\nsource = "url"\nurl = "ftp://e.com/x"\n',
                              ["artifact 'c'", "field 'url'"]),
    "not TOML": ('[bundle\nname = "x"\n', ["not valid TOML"]),
    "no [bundle]": (VIT, ["[bundle]"]),
    "nothing asked for": (HEAD, ["asks for nothing", "[[artifact]]", "[wheels]"]),
    "unknown table": (HEAD + '[wheel]\npython = "3.11"\n', ["[wheel]", "did you mean 'wheels'"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_SPECS))
def test_bad_spec_gives_one_line_naming_file_artifact_and_field(kind, tmp_path):
    text, words = BAD_SPECS[kind]
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for word in words:
        assert word in message, (kind, message)

    result = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {message}"
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "x").exists()


@pytest.mark.parametrize(
    "artifact, words",
    [
        ('id = "ckpt"\nsource = "url"\nurl = "https://e.com/a.pt"\n',
         ["artifact 'ckpt'", "field 'sha256' is required", "--trust-on-first-use"]),
        ('id = "ckpt"\nsource = "url"\nurl = "http://example.com/a.pt"\nsha256 = "' + "0" * 64 + '"\n',
         ["artifact 'ckpt'", "field 'url'", "refusing plain http", "--allow-http"]),
    ],
    ids=["url without sha256", "plain http"],
)
def test_build_time_spec_checks_fail_before_any_download(artifact, words, tmp_path):
    path = write(tmp_path, HEAD + "[[artifact]]\n" + artifact)
    result = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "out"),
                                       "--store", str(tmp_path / "store"), "--no-progress"])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and str(path) in line
    for word in words:
        assert word in line, line
