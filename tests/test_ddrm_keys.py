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
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_guided_diffusion_flag_strings_parse_into_the_architecture_they_name() -> None:
    from runtime.ddrm.configs import FlagError, parse_flags

    flags = parse_flags("--attention_resolutions 32,16,8 --class_cond True --image_size 256 "
                        "--learn_sigma True --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
                        "--resblock_updown True --use_fp16 True --use_scale_shift_norm True --dropout 0.0")
    assert flags["class_cond"] is True and flags["num_channels"] == 256 and flags["dropout"] == 0.0
    arch = adm_config_from_flags(flags)
    assert arch.attention_resolutions == (8, 16, 32)  # 256/32, 256/16, 256/8: downsample rates
    assert arch.channel_mult == (1, 1, 2, 2, 4, 4) and arch.out_channels == 6 and arch.num_classes == 1000
    with pytest.raises(FlagError, match="pairs"):
        parse_flags("--image_size")
    with pytest.raises(FlagError, match="starting with '--'"):
        parse_flags("image_size 64")
