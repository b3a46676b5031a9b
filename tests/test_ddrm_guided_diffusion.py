"""Our ADM networks against guided-diffusion's own code (vendored, MIT, tests/reference).

``tests/test_ddrm_unet_reference.py`` checks the block maths by a functional
re-statement; here the reference is guided-diffusion itself: its ``create_model`` /
``create_classifier`` turn the published flags into its ``UNetModel`` /
``EncoderUNetModel``, and ours, built from the same flags, must have the same keys
and shapes at full size and give the same outputs with the same random weights.
"""

from __future__ import annotations

import pytest
import torch

from runtime.ddrm.classifier import EncoderUNetModel
from runtime.ddrm.configs import adm_config_from_flags, classifier_config_from_flags
from runtime.ddrm.key_manifest import PUBLISHED_CLASSIFIER_FLAGS, PUBLISHED_MODEL_FLAGS
from runtime.ddrm.unet import UNetModel
from tests.reference.guided_diffusion import unet as gd_unet
from tests.reference.guided_diffusion.script_util import create_classifier, create_model
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL_ARGS = ("image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma", "class_cond",
              "attention_resolutions", "num_heads", "num_head_channels", "num_heads_upsample",
              "use_scale_shift_norm", "dropout", "resblock_updown", "use_new_attention_order")
CLASSIFIER_ARGS = ("image_size", "classifier_width", "classifier_depth", "classifier_attention_resolutions",
                   "classifier_use_scale_shift_norm", "classifier_resblock_updown", "classifier_pool")


def reference_model(flags: dict) -> torch.nn.Module:
    return create_model(**{k: v for k, v in flags.items() if k in MODEL_ARGS})


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(PUBLISHED_MODEL_FLAGS))
def test_published_unets_have_guided_diffusions_keys_and_shapes(name: str) -> None:
    flags = PUBLISHED_MODEL_FLAGS[name]
    with torch.device("meta"):
        ours, theirs = UNetModel(adm_config_from_flags(flags)), reference_model(flags)
    assert shapes(ours) == shapes(theirs)


@pytest.mark.parametrize("name", sorted(PUBLISHED_CLASSIFIER_FLAGS))
def test_published_classifier_has_guided_diffusions_keys_and_shapes(name: str) -> None:
    flags = {"classifier_pool": "attention", "classifier_use_fp16": False, **PUBLISHED_CLASSIFIER_FLAGS[name]}
    with torch.device("meta"):
        ours = EncoderUNetModel(classifier_config_from_flags(flags))
        theirs = create_classifier(**{k: v for k, v in flags.items() if k in (*CLASSIFIER_ARGS, "classifier_use_fp16")})
    assert shapes(ours) == shapes(theirs)


TINY = [
    {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
     "attention_resolutions": "32,16", "num_head_channels": 16, "learn_sigma": True, "class_cond": True,
     "resblock_updown": True, "use_scale_shift_norm": True},
    {"image_size": 32, "num_channels": 32, "num_res_blocks": 2, "channel_mult": "1,1,2",
     "attention_resolutions": "16", "num_heads": 2, "learn_sigma": False, "class_cond": False,
     "resblock_updown": False, "use_scale_shift_norm": False},
    {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
     "attention_resolutions": "16", "num_heads": 4, "learn_sigma": True, "class_cond": False,
     "resblock_updown": True, "use_scale_shift_norm": True, "use_new_attention_order": True},
]


def random_weights(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Non-zero everywhere (guided-diffusion zero-initialises its output convolutions)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * (0.2 if v.dim() > 1 else 0.1)
            for k, v in module.state_dict().items()}


@pytest.mark.parametrize("flags", TINY, ids=["cond-updown-scaleshift", "plain-conv-resample", "new-attention"])
def test_tiny_unets_give_guided_diffusions_outputs(flags: dict) -> None:
    theirs = reference_model(flags).eval()
    state = random_weights(theirs, seed=1)
    theirs.load_state_dict(state)
    ours = UNetModel(adm_config_from_flags(flags)).eval()
    ours.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([3, 917])
    y = torch.tensor([5, 998]) if flags["class_cond"] else None
    with torch.no_grad():
        want, got = theirs(x, t, y), ours(x, t.float(), y)
    assert want.abs().mean() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_tiny_classifier_gives_guided_diffusions_logits() -> None:
    flags = {"image_size": 32, "classifier_width": 32, "classifier_depth": 1, "channel_mult": "1,2",
             "classifier_attention_resolutions": "16", "num_head_channels": 16, "num_classes": 10,
             "classifier_resblock_updown": True, "classifier_use_scale_shift_norm": True}
    # create_classifier fixes channel_mult by image size (256: 1,1,2,2,4,4); at 32 px its
    # EncoderUNetModel is called directly with the arguments create_classifier passes.
    theirs = gd_unet.EncoderUNetModel(
        image_size=32, in_channels=3, model_channels=32, out_channels=10, num_res_blocks=1,
        attention_resolutions=(2,), channel_mult=(1, 2), use_fp16=False, num_head_channels=16,
        use_scale_shift_norm=True, resblock_updown=True, pool="attention",
    ).eval()
    state = random_weights(theirs, seed=3)
    theirs.load_state_dict(state)
    ours = EncoderUNetModel(classifier_config_from_flags(flags)).eval()
    ours.load_state_dict(state, strict=True)
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([10, 600])
    with torch.no_grad():
        want, got = theirs(x, t), ours(x, t.float())
    assert want.abs().mean() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
