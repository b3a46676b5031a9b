"""The state-dict keys and tensor shapes of the published guided-diffusion checkpoints.

Written from the published architecture (guided-diffusion's ``unet.py`` /
``script_util.py`` and the model flags of its README), independently of our
modules: plain Python arithmetic, no torch. Tests build our networks on the
``meta`` device and compare their ``state_dict()`` with these tables, so a
mismatch with the real files shows up without downloading 2 GB.

Cross-checks (see tests/test_ddrm_keys.py): the unconditional 256×256 model sums
to 552.8 M parameters, the figure reported for it in the literature (e.g. DDNM's
comparison tables); the class-conditional one adds exactly the 1000×1024 label
embedding; the classifier's count is stated in the README section.

Usage::

    python -m runtime.ddrm.key_manifest 256x256_diffusion_uncond.pt   # prints JSON
"""

from __future__ import annotations

import json
import sys

Shape = tuple[int, ...]

# Flags as published in guided-diffusion's README for the 256×256 ImageNet files.
PUBLISHED_MODEL_FLAGS: dict[str, dict[str, object]] = {
    "256x256_diffusion_uncond.pt": {
        "image_size": 256, "num_channels": 256, "num_res_blocks": 2,
        "attention_resolutions": "32,16,8", "num_head_channels": 64, "learn_sigma": True,
        "class_cond": False, "resblock_updown": True, "use_scale_shift_norm": True,
    },
    "256x256_diffusion.pt": {
        "image_size": 256, "num_channels": 256, "num_res_blocks": 2,
        "attention_resolutions": "32,16,8", "num_head_channels": 64, "learn_sigma": True,
        "class_cond": True, "resblock_updown": True, "use_scale_shift_norm": True,
    },
}
PUBLISHED_CLASSIFIER_FLAGS: dict[str, dict[str, object]] = {
    "256x256_classifier.pt": {
        "image_size": 256, "classifier_width": 128, "classifier_depth": 2,
        "classifier_attention_resolutions": "32,16,8", "classifier_pool": "attention",
        "classifier_resblock_updown": True, "classifier_use_scale_shift_norm": True,
    },
}

# script_util.create_model: default channel multipliers by image size.
_DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


class _Table:
    """Collects key → shape with the parameter shapes of torch's layers."""

    def __init__(self) -> None:
        self.shapes: dict[str, Shape] = {}

    def conv2d(self, key: str, cin: int, cout: int, k: int) -> None:
        self.shapes[f"{key}.weight"] = (cout, cin, k, k)
        self.shapes[f"{key}.bias"] = (cout,)

    def conv1x1_1d(self, key: str, cin: int, cout: int) -> None:
        self.shapes[f"{key}.weight"] = (cout, cin, 1)
        self.shapes[f"{key}.bias"] = (cout,)

    def linear(self, key: str, cin: int, cout: int) -> None:
        self.shapes[f"{key}.weight"] = (cout, cin)
        self.shapes[f"{key}.bias"] = (cout,)

    def groupnorm(self, key: str, c: int) -> None:
        self.shapes[f"{key}.weight"] = (c,)
        self.shapes[f"{key}.bias"] = (c,)

    # guided-diffusion blocks ------------------------------------------------
    def resblock(self, key: str, cin: int, cout: int, emb: int, scale_shift: bool) -> None:
        # in_layers = [GroupNorm, SiLU, Conv3x3]; emb_layers = [SiLU, Linear];
        # out_layers = [GroupNorm, SiLU, Dropout, Conv3x3]; skip only when cin != cout.
        self.groupnorm(f"{key}.in_layers.0", cin)
        self.conv2d(f"{key}.in_layers.2", cin, cout, 3)
        self.linear(f"{key}.emb_layers.1", emb, 2 * cout if scale_shift else cout)
        self.groupnorm(f"{key}.out_layers.0", cout)
        self.conv2d(f"{key}.out_layers.3", cout, cout, 3)
        if cin != cout:
            self.conv2d(f"{key}.skip_connection", cin, cout, 1)

    def attention(self, key: str, c: int) -> None:
        self.groupnorm(f"{key}.norm", c)
        self.conv1x1_1d(f"{key}.qkv", c, 3 * c)
        self.conv1x1_1d(f"{key}.proj_out", c, c)


def _mult(flags: dict[str, object]) -> tuple[float, ...]:
    raw = flags.get("channel_mult", "")
    if raw in ("", None):
        return _DEFAULT_MULT[int(flags["image_size"])]
    if isinstance(raw, str):
        return tuple(float(m) if "." in m else int(m) for m in raw.split(","))
    return tuple(raw)  # type: ignore[arg-type]


def _attn_rates(image_size: int, resolutions: str) -> set[int]:
    return {image_size // int(r) for r in str(resolutions).split(",")}


def _encoder(t: _Table, *, base: int, mult: tuple[float, ...], depth: int, rates: set[int],
             scale_shift: bool, updown: bool) -> tuple[list[int], int, int]:
    """time_embed, input_blocks and middle_block; returns (skip channels, channels, rate)."""
    emb = 4 * base
    t.linear("time_embed.0", base, emb)
    t.linear("time_embed.2", emb, emb)
    ch = int(mult[0] * base)
    t.conv2d("input_blocks.0.0", 3, ch, 3)
    skips, idx, rate = [ch], 1, 1
    for level, m in enumerate(mult):
        for _ in range(depth):
            out = int(m * base)
            t.resblock(f"input_blocks.{idx}.0", ch, out, emb, scale_shift)
            ch = out
            if rate in rates:
                t.attention(f"input_blocks.{idx}.1", ch)
            skips.append(ch)
            idx += 1
        if level < len(mult) - 1:
            if updown:
                t.resblock(f"input_blocks.{idx}.0", ch, ch, emb, scale_shift)
            else:
                t.conv2d(f"input_blocks.{idx}.0.op", ch, ch, 3)
            skips.append(ch)
            idx += 1
            rate *= 2
    t.resblock("middle_block.0", ch, ch, emb, scale_shift)
    t.attention("middle_block.1", ch)
    t.resblock("middle_block.2", ch, ch, emb, scale_shift)
    return skips, ch, rate


def adm_unet_key_shapes(flags: dict[str, object]) -> dict[str, Shape]:
    """Key → shape of ``create_model(**flags)`` (guided-diffusion flag names).

    Recognised flags: image_size, num_channels, num_res_blocks, channel_mult,
    attention_resolutions, learn_sigma, class_cond, use_scale_shift_norm,
    resblock_updown (attention head settings do not change any shape).
    """
    t = _Table()
    base = int(flags["num_channels"])
    mult = _mult(flags)
    depth = int(flags["num_res_blocks"])
    scale_shift = bool(flags.get("use_scale_shift_norm", True))
    updown = bool(flags.get("resblock_updown", False))
    rates = _attn_rates(int(flags["image_size"]), str(flags.get("attention_resolutions", "16,8")))
    skips, ch, rate = _encoder(t, base=base, mult=mult, depth=depth, rates=rates,
                               scale_shift=scale_shift, updown=updown)
    if flags.get("class_cond"):
        t.shapes["label_emb.weight"] = (1000, 4 * base)
    emb = 4 * base
    idx = 0
    for level in range(len(mult) - 1, -1, -1):
        for i in range(depth + 1):
            out = int(mult[level] * base)
            t.resblock(f"output_blocks.{idx}.0", ch + skips.pop(), out, emb, scale_shift)
            ch = out
            sub = 1
            if rate in rates:
                t.attention(f"output_blocks.{idx}.1", ch)
                sub = 2
            if level > 0 and i == depth:
                if updown:
                    t.resblock(f"output_blocks.{idx}.{sub}", ch, ch, emb, scale_shift)
                else:
                    t.conv2d(f"output_blocks.{idx}.{sub}.conv", ch, ch, 3)
                rate //= 2
            idx += 1
    t.groupnorm("out.0", ch)
    t.conv2d("out.2", int(mult[0] * base), 6 if flags.get("learn_sigma") else 3, 3)
    return t.shapes


def adm_classifier_key_shapes(flags: dict[str, object]) -> dict[str, Shape]:
    """Key → shape of ``create_classifier(**flags)`` with ``classifier_pool="attention"``."""
    if flags.get("classifier_pool", "attention") != "attention":
        raise ValueError("only the attention pool of the published classifier is described")
    t = _Table()
    size = int(flags["image_size"])
    base = int(flags["classifier_width"])
    mult = _DEFAULT_MULT[size] if flags.get("channel_mult", "") in ("", None) else _mult(flags)
    rates = _attn_rates(size, str(flags["classifier_attention_resolutions"]))
    _, ch, rate = _encoder(t, base=base, mult=mult, depth=int(flags["classifier_depth"]), rates=rates,
                           scale_shift=bool(flags.get("classifier_use_scale_shift_norm", True)),
                           updown=bool(flags.get("classifier_resblock_updown", True)))
    t.groupnorm("out.0", ch)
    side = size // rate
    t.shapes["out.2.positional_embedding"] = (ch, side * side + 1)
    t.conv1x1_1d("out.2.qkv_proj", ch, 3 * ch)
    t.conv1x1_1d("out.2.c_proj", ch, int(flags.get("num_classes", 1000)))
    return t.shapes


def published_key_shapes(file_name: str) -> dict[str, Shape]:
    """Key → shape of one of the published files, by its name (e.g. ``256x256_classifier.pt``)."""
    if file_name in PUBLISHED_MODEL_FLAGS:
        return adm_unet_key_shapes(PUBLISHED_MODEL_FLAGS[file_name])
    if file_name in PUBLISHED_CLASSIFIER_FLAGS:
        return adm_classifier_key_shapes(PUBLISHED_CLASSIFIER_FLAGS[file_name])
    known = ", ".join(sorted({**PUBLISHED_MODEL_FLAGS, **PUBLISHED_CLASSIFIER_FLAGS}))
    raise KeyError(f"no manifest for {file_name!r}; known files: {known}")


def parameter_count(shapes: dict[str, Shape]) -> int:
    """Total number of elements over all tensors of a key table."""
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


if __name__ == "__main__":  # pragma: no cover - a convenience for humans
    table = published_key_shapes(sys.argv[1])
    print(json.dumps({"parameters": parameter_count(table), "keys": {k: list(v) for k, v in table.items()}}, indent=1))
