"""bundle build end to end against the local Hub stand-in and file server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.manifest import read_manifest


@pytest.fixture(scope="session")
def tiny_vit_folder(tmp_path_factory) -> Path:
    """A random-initialised ViT saved with save_pretrained (config.json + model.safetensors)."""
    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )
    ViTModel(config).save_pretrained(folder)
    return folder


def test_hf_artifact_is_snapshotted_into_the_hub_cache_layout(bundle_factory, tiny_vit_folder, hub):
    bundle = bundle_factory(
        """
        [bundle]
        name = "tiny-hf"
        version = "1.0.0"

        [[artifact]]
        id = "vit"
        source = "hf"
        repo = "org/tiny-vit"
        """,
        hf={"org/tiny-vit": tiny_vit_folder},
    )
    manifest = read_manifest(bundle)
    art = manifest.artifact("vit")
    commit = art.revision
    assert len(commit) == 40
    snap = bundle / "hf/models--org--tiny-vit/snapshots" / commit
    assert art.path == snap.relative_to(bundle).as_posix()
    assert (bundle / "hf/models--org--tiny-vit/refs/main").read_bytes() == commit.encode()
    for name in ("config.json", "model.safetensors"):
        assert (snap / name).read_bytes() == (tiny_vit_folder / name).read_bytes()
    assert not any(p.is_symlink() for p in bundle.rglob("*"))
    meta = json.loads((bundle / "dataset-metadata.json").read_text())
    assert meta["id"] == "tiny-hf"
    from transformers import ViTModel

    model = ViTModel.from_pretrained(snap)
    assert model.config.hidden_size == 32
