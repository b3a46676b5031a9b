"""A checkpoint in guided-diffusion's layout loads into our networks and gives its outputs.

The reference is written here, functionally, from guided-diffusion's block maths
(``unet.py``: GroupNorm32, ResBlock with scale/shift, legacy QKVAttention with
the 1/√√C scaling on q and k, AttentionPool2d): it reads the *state dict* by key
names and never touches our modules. Weights are random and non-zero (no
zero-initialised shortcut), so every block contributes to the output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from runtime.ddrm.checkpoints import CheckpointError, build_and_load, load_state_dict
from runtime.ddrm.classifier import EncoderUNetModel
from runtime.ddrm.configs import adm_config_from_flags, classifier_config_from_flags
from runtime.ddrm.key_manifest import adm_classifier_key_shapes, adm_unet_key_shapes
from runtime.ddrm.unet import UNetModel
from tests.torch_helpers import one_thread  # noqa: F401  (a fixture)

TINY_COND = {
    "image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
    "attention_resolutions": "32,16", "num_head_channels": 16, "learn_sigma": True,
    "class_cond": True, "resblock_updown": True, "use_scale_shift_norm": True,
}
# The other branches: no scale/shift, conv resampling, heads by count, two res blocks.
TINY_PLAIN = {
    "image_size": 32, "num_channels": 32, "num_res_blocks": 2, "channel_mult": "1,1,2",
    "attention_resolutions": "16", "num_heads": 2, "learn_sigma": False,
    "class_cond": False, "resblock_updown": False, "use_scale_shift_norm": False,
}
TINY_CLASSIFIER = {
    "image_size": 32, "classifier_width": 32, "classifier_depth": 1, "channel_mult": "1,2",
    "classifier_attention_resolutions": "16", "num_head_channels": 16, "num_classes": 10,
    "classifier_resblock_updown": True, "classifier_use_scale_shift_norm": True,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def random_checkpoint(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * (0.2 if len(shape) > 1 else 0.1) for k, shape in shapes.items()}


# --- reference: guided-diffusion's maths, on the state dict -------------------------------


def _norm(sd, key, x):
    return F.group_norm(x.float(), 32, sd[f"{key}.weight"], sd[f"{key}.bias"], eps=1e-5)


def _conv(sd, key, x, **kw):
    w = sd[f"{key}.weight"]
    if w.dim() == 3:
        return F.conv1d(x, w, sd[f"{key}.bias"])
    return F.conv2d(x, w, sd[f"{key}.bias"], padding=w.shape[-1] // 2, **kw)


def _timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _resblock(sd, key, x, emb, *, scale_shift, up=False, down=False):
    h = F.silu(_norm(sd, f"{key}.in_layers.0", x))
    if up:
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    h = _conv(sd, f"{key}.in_layers.2", h)
    e = F.linear(F.silu(emb), sd[f"{key}.emb_layers.1.weight"], sd[f"{key}.emb_layers.1.bias"])[..., None, None]
    if scale_shift:
        scale, shift = torch.chunk(e, 2, dim=1)
        h = _norm(sd, f"{key}.out_layers.0", h) * (1 + scale) + shift
    else:
        h = _norm(sd, f"{key}.out_layers.0", h + e)
    h = _conv(sd, f"{key}.out_layers.3", F.silu(h))
    skip = _conv(sd, f"{key}.skip_connection", x) if f"{key}.skip_connection.weight" in sd else x
    return skip + h


def _legacy_attention(qkv, heads):
    # QKVAttentionLegacy: split heads first, then q, k, v; scale both q and k by 1/sqrt(sqrt(ch)).
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


def _new_order_attention(qkv, heads):
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.chunk(3, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", (q * scale).reshape(bs * heads, ch, length),
                          (k * scale).reshape(bs * heads, ch, length))
    weight = torch.softmax(weight, dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v.reshape(bs * heads, ch, length)).reshape(bs, -1, length)


def _attention(sd, key, x, heads):
    b, c, hh, ww = x.shape
    flat = x.reshape(b, c, -1)
    qkv = _conv(sd, f"{key}.qkv", _norm(sd, f"{key}.norm", flat))
    return (flat + _conv(sd, f"{key}.proj_out", _legacy_attention(qkv, heads))).reshape(b, c, hh, ww)


def _heads(flags, channels):
    hc = int(flags.get("num_head_channels", -1))
    return channels // hc if hc > 0 else int(flags.get("num_heads", 1))


def _encoder(sd, flags, x, emb, *, width, depth, mult, rates, scale_shift, updown):
    h = _conv(sd, "input_blocks.0.0", x)
    hs, idx, rate = [h], 1, 1
    for level in range(len(mult)):
        for _ in range(depth):
            h = _resblock(sd, f"input_blocks.{idx}.0", h, emb, scale_shift=scale_shift)
            if rate in rates:
                h = _attention(sd, f"input_blocks.{idx}.1", h, _heads(flags, h.shape[1]))
            hs.append(h)
            idx += 1
        if level < len(mult) - 1:
            if updown:
                h = _resblock(sd, f"input_blocks.{idx}.0", h, emb, scale_shift=scale_shift, down=True)
            else:
                h = _conv(sd, f"input_blocks.{idx}.0.op", h, stride=2)
            hs.append(h)
            idx += 1
            rate *= 2
    h = _resblock(sd, "middle_block.0", h, emb, scale_shift=scale_shift)
    h = _attention(sd, "middle_block.1", h, _heads(flags, h.shape[1]))
    h = _resblock(sd, "middle_block.2", h, emb, scale_shift=scale_shift)
    return h, hs, rate


def reference_unet(sd, flags, x, t, y=None):
    width, depth = flags["num_channels"], flags["num_res_blocks"]
    mult = [int(m) for m in flags["channel_mult"].split(",")]
    rates = {flags["image_size"] // int(r) for r in flags["attention_resolutions"].split(",")}
    ss, updown = flags["use_scale_shift_norm"], flags["resblock_updown"]
    emb = F.linear(_timestep_embedding(t, width), sd["time_embed.0.weight"], sd["time_embed.0.bias"])
    emb = F.linear(F.silu(emb), sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    if y is not None:
        emb = emb + sd["label_emb.weight"][y]
    h, hs, rate = _encoder(sd, flags, x, emb, width=width, depth=depth, mult=mult, rates=rates,
                           scale_shift=ss, updown=updown)
    idx = 0
    for level in reversed(range(len(mult))):
        for i in range(depth + 1):
            h = _resblock(sd, f"output_blocks.{idx}.0", torch.cat([h, hs.pop()], 1), emb, scale_shift=ss)
            sub = 1
            if rate in rates:
                h = _attention(sd, f"output_blocks.{idx}.1", h, _heads(flags, h.shape[1]))
                sub = 2
            if level and i == depth:
                if updown:
                    h = _resblock(sd, f"output_blocks.{idx}.{sub}", h, emb, scale_shift=ss, up=True)
                else:
                    h = _conv(sd, f"output_blocks.{idx}.{sub}.conv", F.interpolate(h, scale_factor=2, mode="nearest"))
                rate //= 2
            idx += 1
    return _conv(sd, "out.2", F.silu(_norm(sd, "out.0", h)))


def reference_classifier(sd, flags, x, t):
    width = flags["classifier_width"]
    mult = [int(m) for m in flags["channel_mult"].split(",")]
    rates = {flags["image_size"] // int(r) for r in flags["classifier_attention_resolutions"].split(",")}
    emb = F.linear(_timestep_embedding(t, width), sd["time_embed.0.weight"], sd["time_embed.0.bias"])
    emb = F.linear(F.silu(emb), sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    h, _, _ = _encoder(sd, flags, x, emb, width=width, depth=flags["classifier_depth"], mult=mult,
                       rates=rates, scale_shift=True, updown=True)
    h = F.silu(_norm(sd, "out.0", h))
    b, c = h.shape[:2]
    h = h.reshape(b, c, -1)
    h = torch.cat([h.mean(dim=-1, keepdim=True), h], dim=-1) + sd["out.2.positional_embedding"][None]
    h = _new_order_attention(_conv(sd, "out.2.qkv_proj", h), c // flags["num_head_channels"])
    return _conv(sd, "out.2.c_proj", h)[:, :, 0]


# --- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [TINY_COND, TINY_PLAIN], ids=["cond-updown-scaleshift", "plain-conv-resample"])
def test_tiny_adm_checkpoint_in_original_layout_loads_and_matches_reference(flags, tmp_path) -> None:
    state = random_checkpoint(adm_unet_key_shapes(flags), seed=1)
    path = tmp_path / "tiny_adm.pt"
    torch.save(state, path)  # the layout guided-diffusion's training writes: a flat state dict

    model = build_and_load(lambda: UNetModel(adm_config_from_flags(flags)), load_state_dict(path, artifact="t"),
                           artifact="t", path=path)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([3.0, 917.0])
    y = torch.tensor([5, 998]) if flags["class_cond"] else None
    with torch.no_grad():
        ours = model(x, t, y)
        ref = reference_unet(state, flags, x, t, y)
    assert ours.shape == (2, 6 if flags["learn_sigma"] else 3, 32, 32)
    assert ref.abs().mean() > 0.1  # a real signal, not zeros
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_tiny_classifier_checkpoint_loads_and_matches_reference(tmp_path) -> None:
    state = random_checkpoint(adm_classifier_key_shapes(TINY_CLASSIFIER), seed=3)
    path = tmp_path / "tiny_classifier.pt"
    torch.save(state, path)
    model = build_and_load(lambda: EncoderUNetModel(classifier_config_from_flags(TINY_CLASSIFIER)),
                           load_state_dict(path), artifact="c", path=path)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.0, 400.0, 999.0])
    with torch.no_grad():
        ours, ref = model(x, t), reference_classifier(state, TINY_CLASSIFIER, x, t)
    assert ours.shape == (3, 10)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_checkpoint_of_another_architecture_is_refused_with_the_differences_named(tmp_path) -> None:
    state = random_checkpoint(adm_unet_key_shapes({**TINY_COND, "num_channels": 64}), seed=5)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"artifact 'adm'.*shape mismatches: time_embed\.0\.weight.*--model-flags"):
        build_and_load(lambda: UNetModel(adm_config_from_flags(TINY_COND)), load_state_dict(path),
                       artifact="adm", path=path, hint="describe it with --model-flags")


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors") as err:
        load_state_dict(path, artifact="adm-256-uncond")
    assert "a PyTorch checkpoint (torch.save) of" in str(err.value)
    assert "weights_only=False" not in str(err.value)  # never the advice to run the pickle


class _Payload:
    """Any custom class: loading it would need arbitrary unpickling."""


def test_safetensors_copy_next_to_the_pt_file_is_preferred(tmp_path) -> None:
    from runtime.ddrm.checkpoints import convert_to_safetensors

    state = random_checkpoint(adm_unet_key_shapes(TINY_PLAIN), seed=6)
    pt = tmp_path / "m.pt"
    torch.save(state, pt)
    st = convert_to_safetensors(pt)
    assert st == tmp_path / "m.safetensors"
    pt.write_bytes(b"not a checkpoint any more")  # only the safetensors copy can be read now
    loaded = load_state_dict(pt)
    assert set(loaded) == set(state)
    torch.testing.assert_close(loaded["out.2.weight"], state["out.2.weight"])


def test_a_safetensors_file_that_is_not_one_is_named_in_one_line(tmp_path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("<html>Not Found</html>")
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path, artifact="ddpm-celebahq-256")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"artifact 'ddpm-celebahq-256' file {path} is not a safetensors file "
                              "of tensors: it is text of 22 bytes")
