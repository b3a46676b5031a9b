"""The published guided-diffusion checkpoints fit our networks key for key.

The real files (2.2 GB each) cannot be downloaded here, so the full-size networks
are built on the ``meta`` device (no memory, no init) and compared with the key
manifest, which is derived from guided-diffusion's published architecture by
separate code (runtime/ddrm/key_manifest.py, plain arithmetic, no torch modules).
The manifest itself is anchored to a number published independently: the
unconditional 256×256 model has 552.8 M parameters.
"""

from __future__ import annotations

import pytest
import torch

from runtime.ddrm.classifier import EncoderUNetModel
from runtime.ddrm.configs import CONFIGS, adm_config_from_flags, classifier_config_from_flags
from runtime.ddrm.key_manifest import (
    PUBLISHED_CLASSIFIER_FLAGS,
    PUBLISHED_MODEL_FLAGS,
    parameter_count,
    published_key_shapes,
)
from runtime.ddrm.unet import UNetModel


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster, and immune to a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _meta_shapes(module_factory) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = module_factory()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("file_name", sorted(PUBLISHED_MODEL_FLAGS))
def test_full_size_adm_unet_has_exactly_the_checkpoint_keys_and_shapes(file_name: str) -> None:
    arch = adm_config_from_flags(PUBLISHED_MODEL_FLAGS[file_name])
    ours = _meta_shapes(lambda: UNetModel(arch))
    manifest = published_key_shapes(file_name)
    assert set(ours) == set(manifest), (set(ours) ^ set(manifest))
    assert {k: v for k, v in ours.items() if manifest[k] != v} == {}


def test_full_size_classifier_has_exactly_the_checkpoint_keys_and_shapes() -> None:
    arch = classifier_config_from_flags(PUBLISHED_CLASSIFIER_FLAGS["256x256_classifier.pt"])
    ours = _meta_shapes(lambda: EncoderUNetModel(arch))
    manifest = published_key_shapes("256x256_classifier.pt")
    assert set(ours) == set(manifest), (set(ours) ^ set(manifest))
    assert {k: v for k, v in ours.items() if manifest[k] != v} == {}
    assert manifest["out.2.positional_embedding"] == (512, 8 * 8 + 1)  # width 128×4; 8×8 tokens + mean
    assert manifest["out.2.c_proj.weight"] == (1000, 512, 1)


def test_manifest_parameter_counts_match_the_published_model_sizes() -> None:
    uncond = parameter_count(published_key_shapes("256x256_diffusion_uncond.pt"))
    cond = parameter_count(published_key_shapes("256x256_diffusion.pt"))
    classifier = parameter_count(published_key_shapes("256x256_classifier.pt"))
    assert round(uncond / 1e6, 1) == 552.8  # the figure reported for ADM-256 uncond
    assert cond - uncond == 1000 * 1024  # only the label embedding differs
    assert 50e6 < classifier < 60e6  # 54.1 M: a ~216 MB fp32 file
    # 18 input blocks (1 stem + 6 levels × 2 res + 5 downsamplers), 18 output blocks
    keys = published_key_shapes("256x256_diffusion_uncond.pt")
    assert max(int(k.split(".")[1]) for k in keys if k.startswith("input_blocks.")) == 17
    assert max(int(k.split(".")[1]) for k in keys if k.startswith("output_blocks.")) == 17
    assert keys["out.2.weight"] == (6, 256, 3, 3)  # learn_sigma: ε and the variance interpolation


def test_stack_configs_use_the_published_architectures() -> None:
    assert CONFIGS["imagenet-uncond"].model_flags == PUBLISHED_MODEL_FLAGS["256x256_diffusion_uncond.pt"]
    assert CONFIGS["imagenet-cond"].model_flags == PUBLISHED_MODEL_FLAGS["256x256_diffusion.pt"]
    assert CONFIGS["imagenet-cond"].classifier_flags == PUBLISHED_CLASSIFIER_FLAGS["256x256_classifier.pt"]
    assert CONFIGS["imagenet-cond"].class_cond and not CONFIGS["imagenet-uncond"].class_cond
