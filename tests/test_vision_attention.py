"""Attention maps of torchvision ViTs: hooks that change nothing, rollout, the attention command."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fixtures.bundles import activated
from tests.test_vision_data import VIT_B_16_URL, noisy_tile
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_vit(layers: int = 3, heads: int = 4):
    import torch
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=layers, num_heads=heads, hidden_dim=32, mlp_dim=64
    )


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_hooks_leave_outputs_unchanged_and_record_every_layer_and_head(mode):
    import torch

    from runtime.vision.attention import AttentionRecorder

    model = small_vit()
    getattr(model, mode)()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(images)
        with AttentionRecorder(model) as recorder:
            hooked = model(images)
        after = model(images)

    torch.testing.assert_close(hooked, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, plain)
    maps = recorder.maps()
    # (layers, batch, heads, tokens, tokens); tokens = 1 class token + (32/8)**2 patches
    assert tuple(maps.shape) == (3, 2, 4, 17, 17)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 2, 4, 17))
    assert all(not block.self_attention._forward_pre_hooks for block in model.encoder.layers)
    assert all(not block.self_attention._forward_hooks for block in model.encoder.layers)


def test_recorded_maps_are_the_attention_the_block_computes():
    import torch

    from runtime.vision.attention import AttentionRecorder

    model = small_vit().eval()
    first = model.encoder.layers[0]
    seen = {}
    handle = first.ln_1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.no_grad(), AttentionRecorder(model) as recorder:
        model(torch.randn(1, 3, 32, 32))
    handle.remove()
    x = seen["x"]
    _, expected = first.self_attention(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(recorder.maps()[0], expected)


def test_positional_need_weights_false_is_overridden():
    import torch

    from runtime.vision.attention import AttentionRecorder

    model = small_vit(layers=1)
    mha = model.encoder.layers[0].self_attention
    x = torch.randn(1, 17, 32)
    with torch.no_grad(), AttentionRecorder(model) as recorder:
        out, weights = mha(x, x, x, None, False)  # need_weights passed by position
    assert weights is not None and tuple(weights.shape) == (1, 4, 17, 17)
    assert tuple(recorder.maps().shape) == (1, 1, 4, 17, 17)


def test_rollout_follows_the_class_token_to_the_patch_it_attends():
    import torch

    from runtime.vision.attention import attention_rollout

    tokens, target = 17, 6  # patch 6 (0-based among patches) = grid row 1, column 1
    attn = torch.eye(tokens).repeat(4, 1, 3, 1, 1)  # (layers=4, batch=1, heads=3, t, t)
    attn[:, :, :, 0, :] = 0
    attn[:, :, :, 0, 1 + target] = 1.0  # the class token looks at one patch only
    heat = attention_rollout(attn)
    assert tuple(heat.shape) == (1, 4, 4)
    assert heat[0].argmax().item() == target
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    sharp = attention_rollout(attn, head_fusion="max", discard_ratio=0.5)
    assert sharp[0].argmax().item() == target


def vit_b_16_random_weights() -> bytes:
    """A full-size vit_b_16 state dict (346 MB) with the shapes of the real file.

    Random where it shapes attention (patch projection, position embeddings,
    q/k/v projections), zeros in the MLPs that hold most of the 86M parameters:
    drawing those at random would only make the test slower.
    """
    import torch
    from torchvision.models import vit_b_16

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in vit_b_16().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if ".ln" in key or key.startswith("encoder.ln"):
            state[key] = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        elif key.startswith(("conv_proj", "encoder.pos_embedding", "class_token")) or (
            "in_proj_weight" in key
        ):
            state[key] = torch.randn(shape, generator=generator) * 0.02
        else:
            state[key] = torch.zeros(shape)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_attention_command_runs_the_bundled_vit_b_16_at_a_small_input(bundle_factory, tmp_path):
    """The real weights= path: vit_b_16-c867db91.pth from a read-only bundle, strict offline."""
    import torch

    from runtime.stacks.landcover import cli
    from runtime.vision.architectures import build_classifier

    data = vit_b_16_random_weights()
    bundle = bundle_factory(
        f"""
        [bundle]
        name = "vit-attention"
        version = "1.0.0"

        [[artifact]]
        id = "vit"
        source = "torchvision"
        weights = "ViT_B_16_Weights.IMAGENET1K_V1"
        sha256 = "{hashlib.sha256(data).hexdigest()}"
        """,
        urls={VIT_B_16_URL: data},
    )
    served = torch.load(io.BytesIO(data), weights_only=True)
    del data
    rng = np.random.default_rng(0)
    image_path = tmp_path / "tile.png"
    noisy_tile((40, 200, 40), rng, size=48).save(image_path)

    with activated(bundle, strict=True):
        model = build_classifier("vit_b_16", num_outputs=10, image_size=32, pretrained=True)
        torch.testing.assert_close(model.conv_proj.weight, served["conv_proj.weight"])
        # 224 -> 32: 196 patch embeddings interpolated to 4, class token kept
        assert tuple(model.encoder.pos_embedding.shape) == (1, 5, 768)
        torch.testing.assert_close(
            model.encoder.pos_embedding[0, 0], served["encoder.pos_embedding"][0, 0]
        )
        del model
        result = CliRunner().invoke(
            cli,
            ["attention", str(image_path), "--out", str(tmp_path / "attn"), "--image-size", "32",
             "--save-maps", "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["map_shape"] == [12, 12, 5, 5]  # layers, heads, tokens, tokens
    rollout = tmp_path / "attn" / "tile_rollout.png"
    assert str(rollout) in record["files"]
    assert Image.open(rollout).size == (48, 48)  # overlay at the image's own size
    assert (tmp_path / "attn" / "tile_layers.png").stat().st_size > 0
    maps = torch.load(tmp_path / "attn" / "tile_attention.pt", weights_only=True)
    assert tuple(maps.shape) == (12, 12, 5, 5)

    # Inputs that share a file name (flood/tile_000.png, no_flood/tile_000.png) each get
    # their own maps, in sub-folders named after their folders: none overwrites another.
    tiles = tmp_path / "tiles"
    for k, folder in enumerate(("flood", "no_flood")):
        (tiles / folder).mkdir(parents=True)
        noisy_tile((40, 60 + 100 * k, 200), rng, size=32).save(tiles / folder / "tile_000.png")
        noisy_tile((40, 60 + 100 * k, 200), rng, size=32).save(tiles / folder / "tile_001.png")
    with activated(bundle, strict=True):
        result = CliRunner().invoke(
            cli, ["attention", str(tiles), "--out", str(tmp_path / "attn2"), "--image-size", "32",
                  "--no-layers", "--json"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "attn2").as_posix()
                     for p in (tmp_path / "attn2").rglob("*.png"))
    assert written == ["flood/tile_000_rollout.png", "flood/tile_001_rollout.png",
                       "no_flood/tile_000_rollout.png", "no_flood/tile_001_rollout.png"]
    overlays = [(tmp_path / "attn2" / w).read_bytes() for w in written]
    assert len(set(overlays)) == 4  # four different images, four different overlays
